"""The aliases file: static aliases for use without Kubernetes, reloaded on change.

```yaml
aliases:
  my-fruits.internal:
    addresses: [10.96.0.10, "fd00::10"]
    ttl: 30
    ports: [{name: http, protocol: TCP, port: 80}]
  legacy-db:
    cname: db.example.com.
  orders-db.internal:              # ordered failover with health checks
    healthCheck: {protocol: TCP, port: 5432}
    targets:
      - {address: 10.0.0.5}
      - {address: 192.0.2.10, priority: 1}
```
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from aliasd.model import (
    DEFAULT_TTL,
    AliasClaim,
    ConfigError,
    Owner,
    Port,
    parse_ip,
    parse_ttl,
    parse_weight,
)
from aliasd.resolver import qualify
from aliasd.sources.aliases import parse_check
from aliasd.zoneconfig import ZoneConfig

log = logging.getLogger(__name__)

_KEYS = {"addresses", "cname", "targets", "healthCheck", "ttl", "ports"}
_TARGET_KEYS = {"address", "cname", "weight", "priority", "healthCheck"}
_PROTOCOLS = {"TCP", "UDP", "SCTP"}


def parse_aliases(text: str, *, path: str, config: ZoneConfig) -> list[AliasClaim]:
    """Claims from the file's text; ``ConfigError`` naming the file, the alias and
    the problem for anything that is not exactly the documented format."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(e, 'problem', e)}") from e
    if doc is None:
        doc = {"aliases": {}}
    if not isinstance(doc, dict) or set(doc) - {"aliases"}:
        raise ConfigError(f"{path}: expected a mapping with the single key 'aliases'")
    aliases = doc.get("aliases") or {}
    if not isinstance(aliases, dict):
        raise ConfigError(f"{path}: 'aliases' must be a mapping of name to record")
    owner = Owner(created=0.0, namespace="", name=path, kind="File")
    claims = []
    seen: dict[str, str] = {}
    for raw_name, spec in aliases.items():
        name = str(raw_name)
        try:
            fqdn, _ = qualify(name, config)
            claims += _claims(name, spec, owner)
        except ValueError as e:
            raise ConfigError(f"{path}: alias {name!r}: {e}") from None
        if fqdn in seen:
            raise ConfigError(f"{path}: alias {name!r} is the same name as {seen[fqdn]!r}")
        seen[fqdn] = name
    return claims


def _claims(name: str, spec: Any, owner: Owner) -> list[AliasClaim]:
    if not isinstance(spec, dict):
        raise ValueError("expected a mapping with 'addresses', 'cname' or 'targets'")
    _known(spec, _KEYS)
    if sum(k in spec for k in ("addresses", "cname", "targets")) != 1:
        raise ValueError("needs exactly one of 'addresses', 'cname' or 'targets'")
    if "healthCheck" in spec and "targets" not in spec:
        raise ValueError("'healthCheck' applies to 'targets'")
    ttl = parse_ttl(spec["ttl"]) if "ttl" in spec else DEFAULT_TTL
    ports = _ports(spec)
    if "targets" in spec:
        return _targets(name, spec, owner, ttl, tuple(ports))
    if "cname" in spec:
        if not isinstance(spec["cname"], str) or not spec["cname"].strip():
            raise ValueError("'cname' must be a host name")
        if ports:
            raise ValueError("'ports' (SRV) need addresses; a cname's target has its own")
        return [AliasClaim(name, owner, cname=spec["cname"].strip(), ttl=ttl)]
    addrs = spec["addresses"]
    if isinstance(addrs, str):
        addrs = [addrs]
    if not isinstance(addrs, list) or not addrs:
        raise ValueError("'addresses' must be a non-empty list of IP addresses")
    return [AliasClaim(name, owner, addresses=tuple(str(parse_ip(str(a))) for a in addrs),
                       ttl=ttl, ports=tuple(ports))]


def _known(spec: dict[Any, Any], keys: set[str], what: str = "") -> None:
    unknown = set(spec) - keys
    if unknown:
        raise ValueError(f"{what}unknown key(s) {', '.join(sorted(map(str, unknown)))}; "
                         f"allowed: {', '.join(sorted(keys))}")


def _targets(name: str, spec: dict[Any, Any], owner: Owner, ttl: int,
             ports: tuple[Port, ...]) -> list[AliasClaim]:
    """One claim per target, as an Alias's ``targets`` (weights, priorities,
    health checks: the resolver fails over among them)."""
    targets = spec["targets"]
    if not isinstance(targets, list) or not targets:
        raise ValueError("'targets' must be a non-empty list")
    weighted = any(isinstance(t, dict) and "weight" in t for t in targets)
    out: list[AliasClaim] = []
    for i, t in enumerate(targets):
        where = f"targets[{i}]: "
        if not isinstance(t, dict) or ("address" in t) == ("cname" in t):
            raise ValueError(f"{where}needs exactly one of 'address' or 'cname'")
        _known(t, _TARGET_KEYS, where)
        try:
            weight = parse_weight(t.get("weight", 1)) if weighted else None
            priority = t.get("priority", 0)
            if isinstance(priority, bool) or not isinstance(priority, int) \
                    or not 0 <= priority <= 100:
                raise ValueError(f"priority {priority!r} is not 0..100")
            if "cname" in t:
                if "healthCheck" in t:
                    raise ValueError("only an address target has a health check")
                out.append(AliasClaim(name, owner, cname=str(t["cname"]).strip(), ttl=ttl,
                                      weight=weight, priority=priority))
                continue
            ip = str(parse_ip(str(t["address"])))
            check_spec = t.get("healthCheck", spec.get("healthCheck"))
            check = parse_check(check_spec, ip) if check_spec else None
        except ValueError as e:
            raise ValueError(f"{where}{e}") from None
        out.append(AliasClaim(name, owner, addresses=(ip,),
                              ttl=ttl if check is None else check.cap(ttl), ports=ports,
                              weight=weight, priority=priority, check=check))
    return out


def _ports(spec: dict[Any, Any]) -> list[Port]:
    ports: list[Port] = []
    for p in spec.get("ports") or []:
        if not isinstance(p, dict) or not {"name", "port"} <= set(p):
            raise ValueError(f"port {p!r}: needs 'name' and 'port'")
        proto = str(p.get("protocol", "TCP")).upper()
        if proto not in _PROTOCOLS:
            raise ValueError(f"port {p['name']!r}: protocol {proto!r} is not TCP, UDP or SCTP")
        port = p["port"]
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ValueError(f"port {p['name']!r}: {port!r} is not a port number 1..65535")
        ports.append(Port(str(p["name"]).lower(), proto, port))
    return ports


class FileSource:
    """Polls the file (size, mtime, inode: also catches ConfigMap symlink swaps)
    and hands the parsed claims to ``on_change``; a bad file keeps the last good
    claims and logs why once per change."""

    name = "file"

    def __init__(self, path: Path, *, config: ZoneConfig,
                 on_change: Callable[[], None], interval: float = 1.0) -> None:
        self.path = path
        self.config = config
        self.on_change = on_change
        self.interval = interval
        self.claims: list[AliasClaim] = []
        self.synced = False
        self.error: str | None = None
        self._sig: tuple[int, int, int] | None = None

    def load(self) -> None:
        """Read the file now; raises ``ConfigError`` if it is bad."""
        try:
            st = os.stat(self.path)
            text = self.path.read_text()
        except OSError as e:
            raise ConfigError(f"{self.path}: cannot read: {e.strerror}") from None
        self._sig = (st.st_size, st.st_mtime_ns, st.st_ino)
        self.claims = parse_aliases(text, path=str(self.path), config=self.config)
        self.error = None
        self.synced = True
        self.on_change()

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_size, st.st_mtime_ns, st.st_ino)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            sig = self._signature()
            if sig == self._sig:
                continue
            try:
                self.load()
                log.info("reloaded %s: %d aliases", self.path, len(self.claims))
            except ConfigError as e:
                self._sig = sig
                self.error = str(e)
                log.error("%s; still serving the last good aliases", e)
