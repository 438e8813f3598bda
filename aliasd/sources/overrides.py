"""HTTP overrides: a name answered with exactly these addresses or
this CNAME, beating every other claim for it.

``parse`` is pure (it also validates what comes back from storage). Two
stores keep overrides across restarts and replicas:

* ``ConfigMapOverrides``: the ConfigMap ``aliasd-system/aliasd-overrides``, one
  data key per name; every replica watches it, a write patches one key;
* ``FileOverrides`` (standalone): the state file, written before the PUT returns.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio.client import ApiClient, CoreV1Api

from aliasd.kubeapi import call, message
from aliasd.model import (
    DEFAULT_TTL,
    OVERRIDE_KIND,
    AliasClaim,
    ApplyError,
    Owner,
    parse_ip,
    parse_ttl,
)
from aliasd.names import validate_fqdn
from aliasd.resolver import absolute_name, qualify
from aliasd.sources.watch import Informer, Obj
from aliasd.state import StateFile
from aliasd.zoneconfig import ZoneConfig

log = logging.getLogger(__name__)

MAX_ADDRESSES = 64
FIELDS = {"addresses", "cname", "ttl"}


@dataclass(frozen=True)
class Override:
    name: str  # normalized, trailing dot
    addresses: tuple[str, ...] = ()
    cname: str | None = None
    ttl: int = DEFAULT_TTL
    updated: str = ""  # RFC 3339, when it was set
    by: str = ""  # the caller's address

    @property
    def key(self) -> str:
        """The ConfigMap data key (keys may not end in a dot)."""
        return self.name.rstrip(".")

    def claim(self) -> AliasClaim:
        return AliasClaim(self.name, Owner(0.0, "", self.key, OVERRIDE_KIND),
                          addresses=self.addresses, cname=self.cname, ttl=self.ttl)

    def document(self) -> dict[str, Any]:
        return {"name": self.name, "addresses": list(self.addresses), "cname": self.cname,
                "ttl": self.ttl, "updated": self.updated, "by": self.by}

    def stored(self) -> dict[str, Any]:
        """What storage keeps (what ``parse`` reads back): only the fields set."""
        doc: dict[str, Any] = {"name": self.name, "ttl": self.ttl, "updated": self.updated,
                               "by": self.by}
        if self.cname is not None:
            doc["cname"] = self.cname
        else:
            doc["addresses"] = list(self.addresses)
        return doc


def _strict(text: str, what: str) -> str:
    """The API takes names and addresses exactly: no whitespace to strip."""
    if not text or any(c.isspace() for c in text):
        raise ValueError(f"{what} {text!r} is empty or contains whitespace")
    if len(text) > 253:
        raise ValueError(f"{what} is {len(text)} characters long (max 253)")
    return text


def parse_name(name: str, zones: ZoneConfig) -> str:
    """An override's name: inside a served zone (``ValueError`` otherwise)."""
    return qualify(_strict(name, "name"), zones)[0]


def parse(name: str, body: object, *, zones: ZoneConfig, updated: str = "",
          by: str = "") -> Override:
    """Validate an override; ``ValueError`` with a message for the caller."""
    qname = parse_name(name, zones)
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object such as "
                         '{"addresses": ["10.0.0.7"], "ttl": 5}')
    unknown = sorted(set(body) - FIELDS - {"name", "updated", "by"})
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(unknown)}; "
                         f"allowed: {', '.join(sorted(FIELDS))}")
    if ("addresses" in body) == ("cname" in body):
        raise ValueError('give exactly one of "addresses" (a list of IPs) and "cname"')
    addresses_raw, cname_raw = body.get("addresses"), body.get("cname")
    ttl = DEFAULT_TTL
    if "ttl" in body:  # null is not "the default": say what you mean
        if not isinstance(body["ttl"], int) or isinstance(body["ttl"], bool):
            raise ValueError(f"ttl {body['ttl']!r} must be a whole number of seconds")
        ttl = parse_ttl(body["ttl"])
    if "cname" in body:
        if not isinstance(cname_raw, str):
            raise ValueError("cname must be a host name")
        target = absolute_name(_strict(cname_raw, "cname"), zones)
        err = validate_fqdn(target)
        if err:
            raise ValueError(f"cname {cname_raw!r}: {err}")
        if target == qname:
            raise ValueError(f"{qname} cannot be a cname to itself")
        return Override(qname, cname=target, ttl=ttl, updated=updated, by=by)
    if not isinstance(addresses_raw, list) or not addresses_raw:
        raise ValueError("addresses must be a non-empty list of IP addresses")
    if len(addresses_raw) > MAX_ADDRESSES:
        raise ValueError(f"{len(addresses_raw)} addresses; at most {MAX_ADDRESSES}")
    addresses: list[str] = []
    for a in addresses_raw:
        if not isinstance(a, str):
            raise ValueError(f"address {a!r} is not a string")
        ip = str(parse_ip(_strict(a, "address")))
        if ip not in addresses:
            addresses.append(ip)
    return Override(qname, addresses=tuple(addresses), ttl=ttl, updated=updated, by=by)


class OverridesSource:
    """The current overrides as claims; subclasses store them."""

    name = "overrides"

    def __init__(self, zones: ZoneConfig, on_change: Callable[[], None]) -> None:
        self.zones = zones
        self.items: dict[str, Override] = {}
        self._notify = on_change
        self._synced = False
        self.error: str | None = None

    @property
    def claims(self) -> list[AliasClaim]:
        return [o.claim() for o in self.items.values()]

    @property
    def synced(self) -> bool:
        return self._synced

    def get(self, name: str) -> Override | None:
        return self.items.get(name)

    async def put(self, o: Override) -> None:
        raise NotImplementedError

    async def delete(self, o: Override) -> None:
        raise NotImplementedError

    async def run(self) -> None:
        raise NotImplementedError


class FileOverrides(OverridesSource):
    """Standalone: kept in the state file."""

    def __init__(self, zones: ZoneConfig, on_change: Callable[[], None], *,
                 state: StateFile, clock: Callable[[], float]) -> None:
        super().__init__(zones, on_change)
        self.state = state
        self.clock = clock

    def load(self, stored: tuple[dict[str, Any], ...]) -> None:
        for doc in stored:
            try:
                o = parse(str(doc.get("name", "")), doc, zones=self.zones,
                          updated=str(doc.get("updated", "")), by=str(doc.get("by", "")))
            except ValueError as e:
                log.warning("state file %s: override %s skipped: %s", self.state.path,
                            doc.get("name"), e)
                continue
            self.items[o.name] = o
        self._synced = True

    async def put(self, o: Override) -> None:
        self._save({**self.items, o.name: o})

    async def delete(self, o: Override) -> None:
        self._save({k: v for k, v in self.items.items() if k != o.name})

    def _save(self, items: dict[str, Override]) -> None:
        try:
            self.state.save(now=self.clock(), overrides=[o.stored() for o in items.values()])
        except OSError as e:
            raise ApplyError(f"cannot write the state file {self.state.path}: "
                             f"{e.strerror or e}") from None
        self.items = items
        self._notify()

    async def run(self) -> None:
        self._synced = True
        await asyncio.Event().wait()  # nothing to watch: writes come through put/delete


class ConfigMapOverrides(OverridesSource):
    """In a cluster: one data key per name in a ConfigMap every replica watches."""

    def __init__(self, api: ApiClient, zones: ZoneConfig, on_change: Callable[[], None], *,
                 namespace: str, name: str, restarts: Counter[str]) -> None:
        super().__init__(zones, on_change)
        self.core = CoreV1Api(api)
        self.namespace, self.cm_name = namespace, name
        self.bad: dict[str, str] = {}  # data key -> why it is ignored

        def restarted() -> None:
            restarts["configmaps"] += 1

        self.informer = Informer(
            f"configmap {namespace}/{name}",
            functools.partial(self.core.list_namespaced_config_map, namespace,
                              field_selector=f"metadata.name={name}"),
            on_change=self._changed, on_restart=restarted, on_sync=on_change)

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.cm_name}"

    @property
    def synced(self) -> bool:
        return self.informer.synced

    def _changed(self, key: str, old: Obj | None, new: Obj | None) -> None:
        self.items = self._decode((new or {}).get("data") or {})
        self._notify()

    def _decode(self, data: Mapping[str, str]) -> dict[str, Override]:
        items: dict[str, Override] = {}
        bad: dict[str, str] = {}
        for key, text in data.items():
            try:
                doc = json.loads(text)
                if not isinstance(doc, dict):
                    raise ValueError("not a JSON object")
                o = parse(key, doc, zones=self.zones, updated=str(doc.get("updated", "")),
                          by=str(doc.get("by", "")))
            except ValueError as e:
                bad[key] = str(e)
                continue
            items[o.name] = o
        for key, why in bad.items():
            if self.bad.get(key) != why:
                log.warning("ConfigMap %s: key %s ignored: %s", self.ref, key, why)
        self.bad = bad
        self.error = (f"ConfigMap {self.ref}: {len(bad)} key(s) ignored: "
                      f"{', '.join(sorted(bad))}") if bad else None
        return items

    async def put(self, o: Override) -> None:
        doc = o.stored()
        del doc["name"]  # the key
        await self._patch({o.key: json.dumps(doc, sort_keys=True)})
        self.items = {**self.items, o.name: o}  # read-your-write; the watch agrees later
        self._notify()

    async def delete(self, o: Override) -> None:
        await self._patch({o.key: None})
        self.items = {k: v for k, v in self.items.items() if k != o.name}
        self._notify()

    async def _patch(self, data: dict[str, str | None]) -> None:
        status, body = await call(self.core.patch_namespaced_config_map, self.cm_name,
                                  self.namespace, {"data": data}, field_manager="aliasd")
        if status == 404 and any(v is not None for v in data.values()):
            status, body = await call(self.core.create_namespaced_config_map, self.namespace, {
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": self.cm_name, "namespace": self.namespace},
                "data": {k: v for k, v in data.items() if v is not None}},
                field_manager="aliasd")
            if status == 409:  # created meanwhile by another replica
                status, body = await call(self.core.patch_namespaced_config_map, self.cm_name,
                                          self.namespace, {"data": data},
                                          field_manager="aliasd")
        if status >= 300 and not (status == 404 and all(v is None for v in data.values())):
            raise ApplyError(f"ConfigMap {self.ref}: {message(status, body)}")

    async def run(self) -> None:
        await self.informer.run()
