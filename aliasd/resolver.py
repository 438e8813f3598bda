"""Claims in, an immutable zone snapshot out (pure: no I/O, no clock).

Validates names (RFC 1123 labels, 63/253 limits, inside a served zone),
resolves conflicts deterministically (oldest claim wins, then namespace/name)
and reports the losers and the invalid claims so the edges can turn them into
Events, log lines and metrics.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import defaultdict
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from aliasd import names
from aliasd.model import OVERRIDE_KIND, AliasClaim, Check, Owner, canonical_ip
from aliasd.names import (
    WILDCARD,
    best_zone,
    is_wildcard,
    normalize_name,
    validate_fqdn,
)
from aliasd.policy import (
    ALLOWED_NAMES_ANNOTATION,
    DEFAULT_RULE,
    policy_namespace,
)
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
from aliasd.zoneconfig import ZoneConfig

_LABEL = names.LABEL
NS_LABEL = names.NS_LABEL


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
    # Set when ``winner`` is gone and its namespace still holds the name (a
    # ``Hold``): the loser waits until then.
    until: float | None = None


@dataclass(frozen=True)
class Hold:
    """A name kept for the namespace whose claim last won it, after that claim
    went away, until ``until`` (``ZoneConfig.name_hold`` seconds later): a
    waiting claim from another namespace does not win while the owner deletes
    and recreates its Service (ExternalDNS never hands one owner's records to
    another; this is the same promise over a restart of the owner's object)."""

    owner: Owner  # the claim's owner that held the name
    until: float


def held_back(name: str, claims: list[AliasClaim], hold: Hold | None
              ) -> tuple[list[AliasClaim], tuple[Conflict, ...]]:
    """The claims that may win ``name`` under ``hold`` (the holder's namespace
    and HTTP overrides), and the others as conflicts that wait."""
    if hold is None:
        return claims, ()
    keep = [c for c in claims if _held_for(c, hold)]
    return keep, tuple(Conflict(name, hold.owner, c.owner, hold.until)
                       for c in sorted(claims, key=_rank) if not _held_for(c, hold))


def _held_for(c: AliasClaim, hold: Hold) -> bool:
    return c.owner.kind == OVERRIDE_KIND or c.owner.namespace == hold.owner.namespace


@dataclass(frozen=True)
class Invalid:
    claim: AliasClaim
    reason: str
    event: str = "InvalidAlias"  # the Kubernetes Event reason


class TakeoverRefused(ValueError):
    """A takeover the policy does not allow."""


class NameNotAllowed(ValueError):
    """A name the owner's namespace may not claim (the name policy)."""


NOT_ALLOWED = "AliasNotAllowed"
"""The Event reason of a claim the name policy denies."""
NO_ANNOTATIONS: Mapping[str, str] = MappingProxyType({})
"""Namespace -> its ``aliasd.io/allowed-names`` value: none annotated."""
NO_HOLDS: Mapping[str, Hold] = MappingProxyType({})
"""Name -> the hold on it: none."""
ALL_HEALTHY: frozenset[Check] = frozenset()
"""The unhealthy checks: none."""


@dataclass(frozen=True)
class Resolution:
    """Everything one name contributes to a snapshot, a function of that name's
    valid claims only (the unit the incremental engine re-resolves)."""

    name: str
    entries: tuple[Entry, ...]
    conflicts: tuple[Conflict, ...] = ()
    overridden: tuple[Conflict, ...] = ()
    # Owner name -> RRsets: the name itself first, then its SRV names.
    rrsets: tuple[tuple[str, Mapping[int, RRset]], ...] = ()
    weighted: Weighted | None = None
    unusable: bool = False
    takeover: bool = False
    # Every health-checked target of the winner is unhealthy: it answers with
    # all of them (of its best priority) rather than with nothing.
    failing_open: bool = False
    # The winner's claims that do not answer now: a lower priority's targets
    # (standing by), unhealthy ones, a Service with no ready endpoints.
    standby: tuple[AliasClaim, ...] = ()

    @property
    def answers(self) -> tuple[object, ...]:
        """What DNS answers depend on (entries, conflicts and overrides aside)."""
        return (self.rrsets, self.weighted, self.unusable, self.takeover)


@dataclass(frozen=True)
class Delta:
    """What an engine commit changed from the result before it (numbered
    ``since``): the names whose resolution or conflicts changed, and the
    objects (engine keys) whose invalid claims changed. A reader that saw
    that result looks at these alone, not at every name."""

    since: int
    names: frozenset[str]
    keys: frozenset[str]


class Result:
    """The outcome of a build: the snapshot and, per name, who won and who lost.

    Immutable; the tuples are computed on first use (sorted by name), so a
    result that is never listed costs nothing beyond its maps. An engine
    numbers its results and says what each changed (``delta``); a build from
    scratch has no delta (anything may differ)."""

    def __init__(self, snapshot: Snapshot, *, resolutions: Mapping[str, Resolution],
                 invalid: Mapping[str, tuple[Invalid, ...]],
                 conflicted: Mapping[str, tuple[Conflict, ...]],
                 overridden: Mapping[str, tuple[Conflict, ...]],
                 takeovers: Mapping[str, object], entry_count: int,
                 number: int = 0, delta: Delta | None = None) -> None:
        self.number = number
        self.delta = delta
        self.snapshot = snapshot
        self.resolutions = resolutions
        self.invalid_by_key = invalid
        self.conflicted = conflicted
        self.overridden_by_name = overridden
        self.takeover_names = takeovers
        self.entry_count = entry_count

    @functools.cached_property
    def entries(self) -> tuple[Entry, ...]:
        return tuple(e for n in sorted(self.resolutions) for e in self.resolutions[n].entries)

    @functools.cached_property
    def conflicts(self) -> tuple[Conflict, ...]:
        return tuple(c for n in sorted(self.conflicted) for c in self.conflicted[n])

    @functools.cached_property
    def overridden(self) -> tuple[Conflict, ...]:
        """Claims an HTTP override beats (winner = the override): on purpose, so
        not conflicts; their owners get an ``AliasOverridden`` Event."""
        return tuple(c for n in sorted(self.overridden_by_name)
                     for c in self.overridden_by_name[n])

    @functools.cached_property
    def invalid(self) -> tuple[Invalid, ...]:
        return tuple(i for k in sorted(self.invalid_by_key) for i in self.invalid_by_key[k])

    @functools.cached_property
    def takeovers(self) -> tuple[str, ...]:
        """Names outside the zones being served."""
        return tuple(sorted(self.takeover_names))

    @property
    def conflict_count(self) -> int:
        return sum(len(c) for c in self.conflicted.values())

    @property
    def invalid_count(self) -> int:
        return sum(len(i) for i in self.invalid_by_key.values())

    def invalid_by_reason(self) -> dict[str, int]:
        """Invalid claims per Event reason (InvalidAlias, TakeoverNotAllowed,
        AliasNotAllowed)."""
        out: dict[str, int] = {}
        for invs in self.invalid_by_key.values():
            for i in invs:
                out[i.event] = out.get(i.event, 0) + 1
        return out


def qualify(raw: str, config: ZoneConfig) -> tuple[str, str]:
    """``names.qualify`` with the served zones of ``config``."""
    return names.qualify(raw, config.zones)


def absolute_name(raw: str, config: ZoneConfig) -> str:
    """``names.absolute_name`` with the default zone of ``config``."""
    return names.absolute_name(raw, config.zones[0])


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


def _validate_claim(claim: AliasClaim, config: ZoneConfig,
                    annotations: Mapping[str, str]) -> str:
    """The normalized name of a valid claim; ``ValueError`` otherwise."""
    name = (_validate_takeover(claim, config) if claim.takeover
            else qualify(claim.name, config)[0])
    namespace = policy_namespace(claim.owner)
    if namespace is not None:
        allowed = config.names.allowed(namespace, annotations.get(namespace), config.zones[0])
        if allowed is None and is_wildcard(name):
            # A wildcard answers every name below its parent that nobody claims:
            # the names another team has not deployed yet, and its typos. Who
            # owns a subtree is the platform's decision, so without a policy
            # that grants one no namespace claims one.
            raise NameNotAllowed(
                f"{name} is a wildcard, which answers every unclaimed name under "
                f"{name.removeprefix(WILDCARD)}: a namespace may claim one only where its "
                f"allowed names grant it, and namespace {namespace} has none "
                f"(no {ALLOWED_NAMES_ANNOTATION} on the Namespace, no {DEFAULT_RULE})")
        why = allowed.refusal(name) if allowed is not None else None
        if why:
            raise NameNotAllowed(why)
    if claim.cname is not None and claim.addresses:
        raise ValueError(f"alias {claim.name!r} has both addresses and a cname")
    if claim.weight is not None and is_wildcard(name):
        # A weighted draw per query would keep every name under the wildcard off
        # the answer templates; one owner per wildcard, like any name.
        raise ValueError(f"alias {claim.name!r} is a wildcard, which cannot be shared by "
                         "weight (aliasd.io/weight, ServiceEntry endpoint weights)")
    if claim.cname is not None:
        target = absolute_name(claim.cname, config)
        err = validate_fqdn(target)
        if err:
            raise ValueError(f"alias {claim.name!r}: cname target {claim.cname!r}: {err}")
        if target == name:
            raise ValueError(f"alias {claim.name!r} is a cname to itself")
    for a in claim.addresses:
        canonical_ip(a)  # sources pass only valid IPs; fail loudly otherwise
    for p in claim.ports:
        if not _LABEL.match(p.name) or not 1 <= p.port <= 65535:
            raise ValueError(f"alias {claim.name!r}: port {p.name!r}/{p.port} is invalid")
    return name


def validate(claims: Iterable[AliasClaim], config: ZoneConfig,
             annotations: Mapping[str, str] = NO_ANNOTATIONS
             ) -> tuple[tuple[tuple[str, AliasClaim], ...], tuple[Invalid, ...]]:
    """The valid claims with their normalized names, and the invalid ones
    (``annotations``: the namespaces' allowed names, for the name policy)."""
    valid: list[tuple[str, AliasClaim]] = []
    invalid: list[Invalid] = []
    for claim in claims:
        try:
            valid.append((_validate_claim(claim, config, annotations), claim))
        except TakeoverRefused as e:
            invalid.append(Invalid(claim, str(e), "TakeoverNotAllowed"))
        except NameNotAllowed as e:
            invalid.append(Invalid(claim, str(e), NOT_ALLOWED))
        except ValueError as e:
            invalid.append(Invalid(claim, str(e)))
    return tuple(valid), tuple(invalid)


def _rank(c: AliasClaim) -> tuple[object, ...]:
    """The conflict rule: an HTTP override first, then the oldest owner
    (then namespace/name/kind/uid); the claim's content breaks the remaining
    ties, so the order is total and independent of the order claims arrive in."""
    return (c.owner.kind != OVERRIDE_KIND, c.owner, c.addresses, c.cname or "", c.ttl,
            tuple((p.name, p.protocol, p.port) for p in c.ports),
            -1 if c.weight is None else c.weight, c.takeover, c.fallback, c.priority,
            c.check is not None, c.check or _NO_CHECK, c.name)


_NO_CHECK = Check("", "", 0)


def _team(c: AliasClaim) -> str:
    """Who may share a name by weight with ``c``: the claims of one namespace
    (the aliases file, without namespaces, is one team of its own)."""
    return c.owner.namespace


def resolve(name: str, claims: Iterable[AliasClaim], config: ZoneConfig,
            unhealthy: Container[Check] = ALL_HEALTHY) -> Resolution:
    """Who wins ``name`` (normalized, validated) among ``claims``, and what it
    answers (``unhealthy``: the checks that currently fail)."""
    ranked = sorted(claims, key=_rank)
    conflicts: list[Conflict] = []
    overridden: tuple[Conflict, ...] = ()
    if ranked[0].owner.kind == OVERRIDE_KIND:
        winners = [ranked[0]]
        overridden = tuple(Conflict(name, ranked[0].owner, c.owner) for c in ranked[1:])
    elif len(ranked) > 1 and ranked[0].weight is not None and all(
            c.weight is not None for c in ranked if _team(c) == _team(ranked[0])):
        # Every claimant of the oldest claim's namespace asked to share: a
        # weighted group, not a conflict. Weights are shared within one
        # namespace only (ExternalDNS's TXT ownership never hands one owner's
        # records to another): a weighted claim from another namespace is a
        # conflict like any other, or it could outweigh a blue/green it is no
        # part of.
        winners = [c for c in ranked if _team(c) == _team(ranked[0])]
        conflicts = [Conflict(name, ranked[0].owner, c.owner) for c in ranked
                     if _team(c) != _team(ranked[0])]
    else:
        # The oldest owner wins; all of its claims (one per target when its
        # targets carry priorities or checks) are its answer.
        winners = [c for c in ranked if c.owner == ranked[0].owner]
        conflicts = [Conflict(name, ranked[0].owner, c.owner) for c in ranked
                     if c.owner != ranked[0].owner]
    chosen, failing_open = failover(winners, unhealthy)
    own: dict[int, RRset] = {}
    weighted: Weighted | None = None
    # The smallest TTL of the targets, so a weight shift or a failover takes
    # effect quickly.
    ttl = min(c.ttl for c in chosen)
    unusable = not any(c.addresses or c.cname is not None for c in chosen)
    if len(chosen) > 1 and all(c.weight is not None for c in chosen):
        variants = tuple(MappingProxyType(_targets(name, c, ttl, config)) for c in chosen)
        weighted = Weighted(tuple(c.weight or 0 for c in chosen), variants)
        heaviest = max(range(len(chosen)), key=lambda i: chosen[i].weight or 0)
        own.update(variants[heaviest])  # what AXFR shows
    else:
        # One target, or one owner's several unweighted ones: every address
        # (a name answers with addresses or one CNAME, the first by rank).
        merged = chosen[0] if len(chosen) == 1 else dataclasses.replace(
            chosen[0], addresses=tuple(dict.fromkeys(a for c in chosen for a in c.addresses)))
        # The name exists even with no address now (a headless Service scaled
        # to zero): NODATA, not NXDOMAIN.
        own.update(_targets(name, merged, ttl, config))
    srvs: dict[str, RRset] = {}
    for c in chosen:
        # RFC 4592 4.5: _http._tcp.*.foo.internal. would not be a wildcard, only a
        # name no client asks; a wildcard's ports give no SRV.
        if c.cname is not None or is_wildcard(name):
            continue
        for p in sorted(set(c.ports), key=lambda p: (p.protocol, p.name, p.port)):
            srv = f"_{p.name}._{p.protocol.lower()}.{name}"
            rd: RData = (0, 100, p.port, name)
            old = srvs.get(srv)
            if old is not None and rd in old.rdata:
                continue
            srvs[srv] = RRset(srv, SRV, c.ttl, (*old.rdata, rd) if old is not None else (rd,))
    rrsets = ((name, MappingProxyType(own)),
              *((srv, MappingProxyType({SRV: rr})) for srv, rr in srvs.items()))
    return Resolution(name, tuple(Entry(name, c) for c in winners), tuple(conflicts),
                      overridden, rrsets, weighted, unusable,
                      any(c.takeover for c in winners), failing_open,
                      tuple(c for c in winners if c not in chosen)
                      if len(chosen) < len(winners) else ())


def failover(claims: Sequence[AliasClaim], unhealthy: Container[Check]
             ) -> tuple[list[AliasClaim], bool]:
    """The claims that answer among one winner's (ranked): the usable ones
    (an address or a CNAME: a Service with no ready endpoints is skipped),
    unhealthy checks left out, then the lowest priority left. When every
    checked target is unhealthy, the answer fails open (True) with all of its
    best priority: an empty answer takes a service down harder than a dead
    target does (Kuadrant keeps the record in that case, Consul's prepared
    queries do not; a registry for migrations should not). Nothing usable at
    all: every claim, which answers NODATA."""
    if len(claims) == 1 and claims[0].check is None:
        return list(claims), False
    usable = [c for c in claims if c.addresses or c.cname is not None]
    if not usable:
        return list(claims), False
    healthy = [c for c in usable if c.check is None or c.check not in unhealthy]
    pool = healthy or usable
    best = min(c.priority for c in pool)
    return [c for c in pool if c.priority == best], not healthy


def owner_names(res: Resolution, zones: Iterable[str]) -> list[str]:
    """Every name ``res`` makes exist: its owner names and their ancestors up to
    their zone (empty non-terminals: NODATA, not NXDOMAIN). A taken-over name is
    a zone of its own (outside every served zone, so nothing else is below it)."""
    zone = res.name if res.takeover else best_zone(res.name, zones)
    assert zone is not None
    out: list[str] = []
    for owner, _ in res.rrsets:
        n = owner
        while True:
            out.append(n)
            if n == zone:
                break
            n = n.split(".", 1)[1]
    return list(dict.fromkeys(out))


def apex_rrsets(config: ZoneConfig, serial: int) -> dict[str, dict[int, RRset]]:
    """The served zones' SOA and NS, and the glue of ``ns.<zone>``."""
    out: dict[str, dict[int, RRset]] = defaultdict(dict)
    for origin in config.zones:
        zi = _apex(origin, config, serial)
        out[origin][SOA] = zi.soa
        out[origin][NS] = zi.ns
        _add_addresses(out, f"{NS_LABEL}.{origin}", config.ns_addresses, config.soa_ttl)
    return out


def zone_infos(config: ZoneConfig, serial: int, takeovers: Iterable[str]) -> tuple[ZoneInfo, ...]:
    """The served zones, then one per taken-over name (sorted): such a name is a
    zone of exactly that name, so that a query for anything below it is
    answered (NXDOMAIN) rather than refused. Its SOA only serves negative
    answers: an apex SOA next to a CNAME is not allowed."""
    return (*(_apex(origin, config, serial) for origin in config.zones),
            *(_apex(name, config, serial) for name in sorted(takeovers)))


def build_keyed(objects: Mapping[str, Iterable[AliasClaim]], *, config: ZoneConfig,
                serial: int, ready: bool = True,
                annotations: Mapping[str, str] = NO_ANNOTATIONS,
                holds: Mapping[str, Hold] = NO_HOLDS,
                unhealthy: Container[Check] = ALL_HEALTHY) -> Result:
    """The snapshot for every object's claims (key -> claims), from scratch,
    with ``holds`` in force (``unhealthy``: the checks that fail). The
    incremental engine must always equal this."""
    by_name: dict[str, list[AliasClaim]] = defaultdict(list)
    invalid: dict[str, tuple[Invalid, ...]] = {}
    for key, claims in objects.items():
        valid, bad = validate(claims, config, annotations)
        if bad:
            invalid[key] = bad
        for name, claim in valid:
            by_name[name].append(claim)
    resolutions: dict[str, Resolution] = {}
    conflicted: dict[str, tuple[Conflict, ...]] = {}
    for name in sorted(by_name):
        claims, waiting = held_back(name, by_name[name], holds.get(name))
        if claims:
            resolutions[name] = resolve(name, claims, config, unhealthy)
        if cs := (resolutions[name].conflicts if claims else ()) + waiting:
            conflicted[name] = cs
    rrsets = apex_rrsets(config, serial)
    names: set[str] = set()
    for origin in rrsets:
        names.update(owner_names(Resolution(origin, (), rrsets=((origin, {}),)),
                                 config.zones))
    weighted: dict[str, Weighted] = {}
    unusable: set[str] = set()
    for res in resolutions.values():
        for owner, own in res.rrsets:
            rrsets[owner].update(own)
        names.update(owner_names(res, config.zones))
        if res.weighted is not None:
            weighted[res.name] = res.weighted
        if res.unusable:
            unusable.add(res.name)
    takeovers = {n: True for n, r in resolutions.items() if r.takeover}
    snap = Snapshot(
        serial=serial, zones=zone_infos(config, serial, takeovers),
        rrsets=MappingProxyType({k: MappingProxyType(dict(v)) for k, v in rrsets.items()}),
        ready=ready, names=frozenset(names), weighted=MappingProxyType(weighted),
        unusable=frozenset(unusable),
        wildcards=frozenset(n.removeprefix(WILDCARD) for n in names if is_wildcard(n)),
    )
    return Result(snap, resolutions=resolutions, invalid=invalid,
                  conflicted=conflicted,
                  overridden={n: r.overridden for n, r in resolutions.items() if r.overridden},
                  takeovers=takeovers,
                  entry_count=sum(len(r.entries) for r in resolutions.values()))


def build(
    claims: Iterable[AliasClaim], *, config: ZoneConfig, serial: int, ready: bool = True,
    annotations: Mapping[str, str] = NO_ANNOTATIONS,
) -> Result:
    """Build the snapshot for ``claims``. Deterministic for a given input set."""
    return build_keyed({f"{i:09d}": (c,) for i, c in enumerate(claims)}, config=config,
                       serial=serial, ready=ready, annotations=annotations)


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
        version, text = canonical_ip(a)
        bucket = v4 if version == 4 else v6
        if text not in bucket:
            bucket.append(text)
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
