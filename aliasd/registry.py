"""Claims in, an immutable zone snapshot out (pure: no I/O, no clock).

Validates names (RFC 1123 labels, 63/253 limits, inside a served zone),
resolves conflicts deterministically (oldest claim wins, then namespace/name)
and reports the losers and the invalid claims so the edges can turn them into
Events, log lines and metrics.
"""

from __future__ import annotations

import ipaddress
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import MappingProxyType

from aliasd.model import OVERRIDE_KIND, AliasClaim, Owner, normalize_name
from aliasd.zone import (
    AAAA,
    CNAME,
    NS,
    SOA,
    SRV,
    A,
    RData,
    RRset,
    Snapshot,
    SoaData,
    Weighted,
    ZoneInfo,
)

_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
NS_LABEL = "ns"


@dataclass(frozen=True)
class TakeoverPolicy:
    """Which names outside the zones may be taken over (``--allow-takeover``):
    a name under one of ``suffixes`` (if any are given) claimed from one of
    ``namespaces`` (if any are given). Both empty: takeover is off."""

    suffixes: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()

    @classmethod
    def parse(cls, items: Iterable[str]) -> TakeoverPolicy:
        """``example.com`` (a name suffix) or ``namespace=NAME`` items."""
        suffixes: list[str] = []
        namespaces: list[str] = []
        for item in items:
            item = item.strip()
            if item.startswith("namespace="):
                ns = item.removeprefix("namespace=").strip()
                if not _LABEL.match(ns):
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
        if self.suffixes and not any(name == s or name.endswith("." + s)
                                     for s in self.suffixes):
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
    soa_ttl: int = 30
    refresh: int = 60
    retry: int = 10
    expire: int = 1_209_600  # two weeks: RFC 1912 2.2 recommends at least one week
    negative_ttl: int = 5

    @classmethod
    def from_names(cls, zones: Iterable[str], *, ns_addresses: Iterable[str] = (),
                   takeover: TakeoverPolicy | None = None) -> ZoneConfig:
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
                   takeover=takeover or TakeoverPolicy())


@dataclass(frozen=True)
class Entry:
    """A name served, with the claim that won it."""

    name: str
    claim: AliasClaim


@dataclass(frozen=True)
class Conflict:
    name: str
    winner: Owner
    loser: Owner


@dataclass(frozen=True)
class Invalid:
    claim: AliasClaim
    reason: str
    event: str = "InvalidAlias"  # the Kubernetes Event reason


class TakeoverRefused(ValueError):
    """A takeover the policy does not allow."""


@dataclass(frozen=True)
class Result:
    snapshot: Snapshot
    entries: tuple[Entry, ...] = ()
    conflicts: tuple[Conflict, ...] = ()
    invalid: tuple[Invalid, ...] = field(default=())
    # Claims an HTTP override beats (winner = the override): on purpose, so
    # not conflicts and no Events.
    overridden: tuple[Conflict, ...] = ()
    takeovers: tuple[str, ...] = ()  # names outside the zones being served


def validate_fqdn(name: str) -> str | None:
    """Why ``name`` (normalized) is not a valid RFC 1123 host name, or None."""
    bare = name.rstrip(".")
    if not bare:
        return "name is empty"
    if len(bare) > 253:
        return f"name is {len(bare)} characters long (max 253)"
    for label in bare.split("."):
        if len(label) > 63:
            return f"label {label[:20]!r}... is {len(label)} characters long (max 63)"
        if not _LABEL.match(label):
            return (f"label {label!r} is not a valid DNS label "
                    "(lower-case letters, digits and '-', not at either end)")
    return None


def qualify(raw: str, config: ZoneConfig) -> tuple[str, str]:
    """Normalize ``raw``; a bare label gets the default zone. Returns (name, zone)
    or raises ``ValueError`` with a message a human can act on."""
    if not raw.strip():
        raise ValueError("alias is empty")
    name = absolute_name(raw, config)
    err = validate_fqdn(name)
    if err:
        raise ValueError(f"alias {raw!r}: {err}")
    zone = best_zone(name, config.zones)
    if zone is None:
        raise ValueError(
            f"alias {raw!r} is outside the served zones ({', '.join(config.zones)})"
        )
    if name == zone:
        raise ValueError(f"alias {raw!r} is the zone apex, which aliasd itself serves")
    if name == f"{NS_LABEL}.{zone}":
        raise ValueError(f"alias {raw!r} is reserved for the zone's name server")
    return name, zone


def absolute_name(raw: str, config: ZoneConfig) -> str:
    """Normalized; a bare label (no dot at all) gets the default zone, for alias
    names and CNAME targets alike. "web." is absolute: the root's child."""
    name = normalize_name(raw)
    if "." not in raw.strip():
        name += config.zones[0]
    return name


def best_zone(name: str, zones: Iterable[str]) -> str | None:
    best: str | None = None
    for z in zones:
        if (name == z or name.endswith("." + z)) and (best is None or len(z) > len(best)):
            best = z
    return best


def _validate_takeover(claim: AliasClaim, config: ZoneConfig) -> str:
    name = normalize_name(claim.name)
    err = validate_fqdn(name)
    if err:
        raise ValueError(f"takeover {claim.name!r}: {err}")
    if best_zone(name, config.zones) is not None:
        raise ValueError(f"takeover {claim.name!r} is inside a served zone; "
                         "use aliasd.io/alias for it")
    if name.count(".") < 2:
        raise ValueError(f"takeover {claim.name!r} is a top-level domain")
    why = config.takeover.refusal(name, claim.owner.namespace)
    if why:
        raise TakeoverRefused(f"takeover of {name} refused: {why}")
    return name


def _validate_claim(claim: AliasClaim, config: ZoneConfig) -> str:
    """The normalized name of a valid claim; ``ValueError`` otherwise."""
    name = (_validate_takeover(claim, config) if claim.takeover
            else qualify(claim.name, config)[0])
    if claim.cname is not None and claim.addresses:
        raise ValueError(f"alias {claim.name!r} has both addresses and a cname")
    if claim.cname is not None:
        target = absolute_name(claim.cname, config)
        err = validate_fqdn(target)
        if err:
            raise ValueError(f"alias {claim.name!r}: cname target {claim.cname!r}: {err}")
        if target == name:
            raise ValueError(f"alias {claim.name!r} is a cname to itself")
    for a in claim.addresses:
        ipaddress.ip_address(a)  # sources pass only valid IPs; fail loudly otherwise
    for p in claim.ports:
        if not _LABEL.match(p.name) or not 1 <= p.port <= 65535:
            raise ValueError(f"alias {claim.name!r}: port {p.name!r}/{p.port} is invalid")
    return name


def build(
    claims: Iterable[AliasClaim], *, config: ZoneConfig, serial: int, ready: bool = True
) -> Result:
    """Build the snapshot for ``claims``. Deterministic for a given input set."""
    by_name: dict[str, list[AliasClaim]] = defaultdict(list)
    invalid: list[Invalid] = []
    for claim in claims:
        try:
            name = _validate_claim(claim, config)
        except TakeoverRefused as e:
            invalid.append(Invalid(claim, str(e), "TakeoverNotAllowed"))
            continue
        except ValueError as e:
            invalid.append(Invalid(claim, str(e)))
            continue
        by_name[name].append(claim)

    entries: list[Entry] = []
    conflicts: list[Conflict] = []
    overridden: list[Conflict] = []
    groups: dict[str, list[AliasClaim]] = {}
    for name in sorted(by_name):
        # An HTTP override beats every other claim (issue 7).
        ranked = sorted(by_name[name], key=lambda c: (c.owner.kind != OVERRIDE_KIND, c.owner))
        if ranked[0].owner.kind == OVERRIDE_KIND:
            entries.append(Entry(name, ranked[0]))
            overridden += [Conflict(name, ranked[0].owner, c.owner) for c in ranked[1:]]
            continue
        if len(ranked) > 1 and all(c.weight is not None for c in ranked):
            # Every claimant asked to share: a weighted group, not a conflict.
            groups[name] = ranked
            entries += [Entry(name, c) for c in ranked]
            continue
        winner = ranked[0]
        entries.append(Entry(name, winner))
        for loser in ranked[1:]:
            if loser.owner != winner.owner:
                conflicts.append(Conflict(name, winner.owner, loser.owner))

    rrsets: dict[str, dict[int, RRset]] = defaultdict(dict)
    zones: list[ZoneInfo] = []
    for origin in config.zones:
        zi = _apex(origin, config, serial)
        zones.append(zi)
        rrsets[origin][SOA] = zi.soa
        rrsets[origin][NS] = zi.ns
        ns_name = f"{NS_LABEL}.{origin}"
        _add_addresses(rrsets, ns_name, config.ns_addresses, config.soa_ttl)
    # A taken-over name is a zone of exactly that name, so that a query for
    # anything below it is answered (NXDOMAIN) rather than refused. Its SOA
    # only serves negative answers: an apex SOA next to a CNAME is not allowed.
    takeovers = sorted({e.name for e in entries if e.claim.takeover})
    zones += [_apex(name, config, serial) for name in takeovers]
    all_zones = [z.origin for z in zones]
    weighted: dict[str, Weighted] = {}
    for name, group in groups.items():
        # The smallest TTL of the group, so a weight shift takes effect quickly.
        ttl = min(c.ttl for c in group)
        variants = tuple(MappingProxyType(_targets(name, c, ttl, config)) for c in group)
        weighted[name] = Weighted(tuple(c.weight or 0 for c in group), variants)
        heaviest = max(range(len(group)), key=lambda i: group[i].weight or 0)
        rrsets[name].update(variants[heaviest])  # what AXFR shows
    unusable = {name for name, group in groups.items()
                if not any(c.addresses or c.cname for c in group)}
    for entry in entries:
        c = entry.claim
        if not c.addresses and c.cname is None and entry.name not in groups:
            unusable.add(entry.name)
        if entry.name not in groups:
            # The name exists even with no address now (a headless Service
            # scaled to zero): NODATA, not NXDOMAIN.
            rrsets[entry.name].update(_targets(entry.name, c, c.ttl, config))
        if c.cname is not None:
            continue
        for p in sorted(set(c.ports), key=lambda p: (p.protocol, p.name, p.port)):
            srv = f"_{p.name}._{p.protocol.lower()}.{entry.name}"
            rd: RData = (0, 100, p.port, entry.name)
            old = rrsets[srv].get(SRV)
            if old is not None and rd in old.rdata:
                continue
            rdata = (*old.rdata, rd) if old is not None else (rd,)
            rrsets[srv][SRV] = RRset(srv, SRV, c.ttl, rdata)

    names: set[str] = set()
    for name in rrsets:
        zone = best_zone(name, all_zones)
        assert zone is not None
        n = name
        while True:
            names.add(n)
            if n == zone:
                break
            n = n.split(".", 1)[1]
    frozen = {k: MappingProxyType(dict(v)) for k, v in rrsets.items()}
    snap = Snapshot(
        serial=serial, zones=tuple(zones), rrsets=MappingProxyType(frozen), ready=ready,
        names=frozenset(names), weighted=MappingProxyType(weighted),
        unusable=frozenset(unusable),
    )
    return Result(snap, tuple(entries), tuple(conflicts), tuple(invalid), tuple(overridden),
                  tuple(takeovers))


def _targets(name: str, c: AliasClaim, ttl: int, config: ZoneConfig) -> dict[int, RRset]:
    """The CNAME or A/AAAA RRsets of one claim (none: the name exists, NODATA)."""
    if c.cname is not None:
        return {CNAME: RRset(name, CNAME, ttl, (absolute_name(c.cname, config),))}
    out: dict[str, dict[int, RRset]] = defaultdict(dict)
    _add_addresses(out, name, c.addresses, ttl)
    return out[name]


def _add_addresses(
    rrsets: dict[str, dict[int, RRset]], name: str, addresses: Iterable[str], ttl: int
) -> None:
    v4: list[str] = []
    v6: list[str] = []
    for a in addresses:
        ip = ipaddress.ip_address(a)
        bucket = v4 if ip.version == 4 else v6
        if str(ip) not in bucket:
            bucket.append(str(ip))
    if v4:
        rrsets[name][A] = RRset(name, A, ttl, tuple(v4))
    if v6:
        rrsets[name][AAAA] = RRset(name, AAAA, ttl, tuple(v6))


def _apex(origin: str, config: ZoneConfig, serial: int) -> ZoneInfo:
    ns_name = f"{NS_LABEL}.{origin}"
    soa = RRset(origin, SOA, config.soa_ttl, (SoaData(
        mname=ns_name, rname=f"hostmaster.{origin}", serial=serial, refresh=config.refresh,
        retry=config.retry, expire=config.expire, minimum=config.negative_ttl,
    ),))
    ns = RRset(origin, NS, config.soa_ttl, (ns_name,))
    return ZoneInfo(origin, soa, ns)


def next_serial(previous: int, now: float) -> int:
    """A serial that grows on every change and, being derived from the clock,
    never goes backwards across restarts (RFC 1982 arithmetic not needed
    before 2106)."""
    return max(previous + 1, int(now)) & 0xFFFFFFFF
