"""The served zones and who may take over names outside them: the typed
configuration the resolver, the sources and the CoreDNS plan read (pure: no
I/O)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

from aliasd.names import LABEL, normalize_name, overlaps, validate_fqdn
from aliasd.policy import NamePolicy

RESERVED_ZONES = ("cluster.local.", "in-addr.arpa.", "ip6.arpa.")
"""Zones no takeover may touch, whatever ``--allow-takeover`` says: the default
cluster domain (Service discovery: ``svc.cluster.local``) and the reverse
zones (RFC 1035 3.5, RFC 3596 2.5) the CoreDNS ``kubernetes`` plugin answers.
A takeover block for one of them, for a name below one, or for a parent of
one would send that whole subtree to aliasd (CoreDNS routes a query to its
most specific server block)."""


@dataclass(frozen=True)
class TakeoverPolicy:
    """Which names outside the zones may be taken over (``--allow-takeover``):
    a name strictly under one of ``suffixes`` (if any are given) claimed from
    one of ``namespaces`` (if any are given), never one overlapping
    ``reserved``. Suffixes and namespaces both empty: takeover is off."""

    suffixes: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    reserved: tuple[str, ...] = RESERVED_ZONES

    @classmethod
    def parse(cls, items: Iterable[str]) -> TakeoverPolicy:
        """``example.com`` (a name suffix) or ``namespace=NAME`` items."""
        suffixes: list[str] = []
        namespaces: list[str] = []
        for item in items:
            item = item.strip()
            if item.startswith("namespace="):
                ns = item.removeprefix("namespace=").strip()
                if not LABEL.match(ns):
                    raise ValueError(f"--allow-takeover {item!r}: {ns!r} is not a namespace name")
                namespaces.append(ns)
                continue
            suffix = normalize_name(item.lstrip("*").lstrip("."))
            err = validate_fqdn(suffix)
            if err:
                raise ValueError(f"--allow-takeover {item!r}: {err} (give a name suffix such "
                                 "as example.com, or namespace=NAME)")
            suffixes.append(suffix)
        return cls(tuple(suffixes), tuple(namespaces))

    def refusal(self, name: str, namespace: str) -> str | None:
        """Why ``namespace`` may not take over ``name`` (normalized), or None."""
        if not self.suffixes and not self.namespaces:
            return "takeover is off (aliasd runs without --allow-takeover)"
        for zone in self.reserved:
            if overlaps(name, zone):
                return (f"{name} overlaps {zone}, which the cluster DNS serves itself "
                        "(Service discovery, reverse lookups); no allowance reaches it")
        if self.suffixes and name in self.suffixes:
            # The suffix itself would turn every lookup below it into NXDOMAIN
            # (aliasd serves exactly the taken-over name).
            return (f"{name} is an allowed suffix itself; only names strictly below it "
                    "may be taken over")
        if self.suffixes and not any(name.endswith("." + s) for s in self.suffixes):
            return (f"{name} is not under an allowed suffix "
                    f"({', '.join(self.suffixes)})")
        if self.namespaces and namespace not in self.namespaces:
            return (f"namespace {namespace or '(none)'} may not take over names "
                    f"(allowed: {', '.join(self.namespaces)})")
        return None


@dataclass(frozen=True)
class ZoneConfig:
    """The served zones (first = default for bare labels) and their SOA/NS."""

    zones: tuple[str, ...]
    ns_addresses: tuple[str, ...] = ()
    takeover: TakeoverPolicy = field(default_factory=TakeoverPolicy)
    names: NamePolicy = field(default_factory=NamePolicy)  # who may claim which name
    # Seconds a name stays with the namespace whose claim last won it after
    # that claim goes away (0: not at all); see ``resolver.Hold``.
    name_hold: float = 0.0
    soa_ttl: int = 30
    refresh: int = 60
    retry: int = 10
    expire: int = 1_209_600  # two weeks: RFC 1912 2.2 recommends at least one week
    negative_ttl: int = 5

    @classmethod
    def from_names(cls, zones: Iterable[str], *, ns_addresses: Iterable[str] = (),
                   takeover: TakeoverPolicy | None = None,
                   names: NamePolicy | None = None, name_hold: float = 0.0) -> ZoneConfig:
        normalized: list[str] = []
        for z in zones:
            n = normalize_name(z)
            err = validate_fqdn(n)
            if err:
                raise ValueError(f"zone {z!r}: {err}")
            if n not in normalized:
                normalized.append(n)
        if not normalized:
            raise ValueError("at least one zone is required")
        addrs = []
        for a in ns_addresses:
            try:
                addrs.append(str(ipaddress.ip_address(a)))
            except ValueError:
                raise ValueError(f"ns address {a!r} is not an IP address") from None
        return cls(zones=tuple(normalized), ns_addresses=tuple(addrs),
                   takeover=takeover or TakeoverPolicy(), names=names or NamePolicy(),
                   name_hold=name_hold)
