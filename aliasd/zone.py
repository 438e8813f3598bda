"""Immutable zone snapshots and the lookup algorithm (RFC 1034 4.3.2, pure).

A :class:`Snapshot` is built once by the resolver and then only read. The DNS
server holds a reference to the current one and swaps it whole on change.

:meth:`Snapshot.classify` is the one place that decides what a name is: in
which zone, whether it exists, which wildcard answers it (RFC 4592) and what
its owner holds for a type. :meth:`Snapshot.lookup` (the slow path) and the
DNS fast path (``aliasd.dns.answer``) both ask it, as every path in CoreDNS's
``plugin/file`` asks ``closest.go`` and ``wildcard.go``.
"""

from __future__ import annotations

import bisect
import enum
import functools
import itertools
import random
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple

from aliasd.names import WILDCARD

# RR types by number, the ones we serve.
A, NS, CNAME, SOA, AAAA, SRV, OPT, IXFR, AXFR, ANY = 1, 2, 5, 6, 28, 33, 41, 251, 252, 255
RTYPE_NAMES = {A: "A", NS: "NS", CNAME: "CNAME", SOA: "SOA", AAAA: "AAAA", SRV: "SRV"}
# RFC 8482: answer ANY with one RRset, chosen in this order.
ANY_PREFERENCE = (SOA, CNAME, A, AAAA, NS, SRV)
MAX_CNAME_CHAIN = 8


class Rcode(enum.IntEnum):
    NOERROR = 0
    FORMERR = 1
    SERVFAIL = 2
    NXDOMAIN = 3
    NOTIMP = 4
    REFUSED = 5
    NOTAUTH = 9


@dataclass(frozen=True)
class SoaData:
    mname: str
    rname: str
    serial: int
    refresh: int
    retry: int
    expire: int
    minimum: int


RData = str | tuple[int, int, int, str] | SoaData
"""IP text (A/AAAA), a name (CNAME/NS), (priority, weight, port, target) (SRV), or SOA."""


@dataclass(frozen=True)
class RRset:
    name: str
    rtype: int
    ttl: int
    rdata: tuple[RData, ...]


@dataclass(frozen=True)
class ZoneInfo:
    origin: str
    soa: RRset
    ns: RRset

    @property
    def negative_ttl(self) -> int:
        """RFC 2308 section 5: min(SOA TTL, SOA MINIMUM)."""
        data = self.soa.rdata[0]
        assert isinstance(data, SoaData)
        return min(self.soa.ttl, data.minimum)


class Outcome(enum.Enum):
    """What a snapshot holds for one (name, qtype), before any RRset is read."""

    REFUSED = enum.auto()  # outside every served zone
    NOT_READY = enum.auto()  # in a zone, but the sources have not synced: SERVFAIL
    NXDOMAIN = enum.auto()  # no such name, and no wildcard answers it
    UNUSABLE = enum.auto()  # the owner has no usable target: SERVFAIL
    WEIGHTED = enum.auto()  # the owner is weighted: what it holds depends on the draw
    DATA = enum.auto()  # the owner holds the qtype (for ANY: a type of ANY_PREFERENCE)
    CNAME = enum.auto()  # the owner holds a CNAME to follow instead
    NODATA = enum.auto()  # the owner exists and holds nothing of the type


class Match(NamedTuple):
    """The answer to :meth:`Snapshot.classify`."""

    outcome: Outcome
    zone: ZoneInfo | None  # None only for REFUSED
    # Where the RRsets are read: the name itself, or the wildcard that answers it.
    owner: str
    # The closest encloser (RFC 4592 3.3.1) when ``owner`` is a wildcard, else "".
    encloser: str


# classify runs on the DNS fast path, where reading an Enum member off its class
# (a descriptor on Python 3.11) and NamedTuple.__new__ (a Python frame) are a
# measurable share of a query: module names for the members, tuple.__new__.
_NOT_READY, _NXDOMAIN, _UNUSABLE = Outcome.NOT_READY, Outcome.NXDOMAIN, Outcome.UNUSABLE
_WEIGHTED, _DATA, _CNAME, _NODATA = (Outcome.WEIGHTED, Outcome.DATA, Outcome.CNAME,
                                     Outcome.NODATA)
_NO_RRSETS: Mapping[int, RRset] = MappingProxyType({})
_REFUSED = Match(Outcome.REFUSED, None, "", "")


def holds(sets: Mapping[int, RRset], qtype: int) -> Outcome:
    """DATA, CNAME or NODATA: what one owner's RRsets give a ``qtype``
    (RFC 1034 4.3.2 step 3a; RFC 8482 for ANY: one RRset, if any)."""
    if qtype == ANY:
        return _DATA if any(t in sets for t in ANY_PREFERENCE) else _NODATA
    if qtype in sets:
        return _DATA
    return _CNAME if CNAME in sets else _NODATA


@dataclass(frozen=True)
class Lookup:
    """The result of a query against a snapshot, before wire encoding."""

    rcode: Rcode
    authoritative: bool
    answer: tuple[RRset, ...] = ()
    authority: tuple[RRset, ...] = ()
    additional: tuple[RRset, ...] = ()
    # Which variant of a weighted qname answered, and whether the answer depended
    # on no other random choice (so it may be cached per variant).
    variant: int | None = None
    cacheable: bool = True
    # The wildcard (``*.<closest encloser>``) that synthesized the qname's own
    # answer (RFC 4592): such an answer is one per wildcard, never one per qname.
    wildcard: str | None = None
    # Names an answer relied on besides the owners of its RRsets: for every name
    # synthesized from a wildcard, that name and its ancestors below the closest
    # encloser (they did not exist) and the wildcard itself.
    depends: tuple[str, ...] = ()


@dataclass(frozen=True)
class Weighted:
    """Several target sets for one name; each query gets one, chosen at random
    in proportion to the weights (weight 0 = drained)."""

    weights: tuple[int, ...]
    variants: tuple[Mapping[int, RRset], ...]

    @functools.cached_property
    def cumulative(self) -> tuple[int, ...]:
        # All drained: spread evenly rather than answer nothing.
        ws = self.weights if any(self.weights) else (1,) * len(self.weights)
        return tuple(itertools.accumulate(ws))

    def pick(self, rnd: float) -> int:
        """The variant for a uniform ``rnd`` in [0, 1)."""
        return bisect.bisect_right(self.cumulative, rnd * self.cumulative[-1])


@dataclass(frozen=True)
class Snapshot:
    """Everything the DNS server needs to answer, frozen.

    ``ready`` is False until every source has synced once: in-zone queries are
    then SERVFAIL rather than a wrong NXDOMAIN.
    """

    serial: int
    zones: tuple[ZoneInfo, ...]
    rrsets: Mapping[str, Mapping[int, RRset]] = field(default_factory=lambda: MappingProxyType({}))
    ready: bool = True
    # Every owner name plus every ancestor up to its zone (empty non-terminals);
    # only ``in`` is used, so the engine may hand a shared persistent map.
    names: Collection[str] = frozenset()
    weighted: Mapping[str, Weighted] = field(default_factory=lambda: MappingProxyType({}))
    # Aliases with no usable target and no fallback (a headless Service with no
    # ready endpoint): SERVFAIL, the last stage of the fallback chain,
    # so resolvers retry instead of caching "no address".
    unusable: Collection[str] = frozenset()
    # The closest enclosers that have a wildcard: ``foo.internal.`` when
    # ``*.foo.internal.`` exists (RFC 4592 3.3.1). Empty: no name is synthesized.
    wildcards: Collection[str] = frozenset()

    @functools.cached_property
    def _suffixes(self) -> tuple[tuple[ZoneInfo, str], ...]:
        """Each zone with its dotted suffix, the most specific first."""
        ordered = sorted(self.zones, key=lambda z: len(z.origin), reverse=True)
        return tuple((z, "." + z.origin) for z in ordered)

    def find_zone(self, qname: str) -> ZoneInfo | None:
        """The most specific served zone containing ``qname`` (normalized)."""
        return self.classify(qname, ANY).zone

    def classify(self, name: str, qtype: int) -> Match:
        """What ``name`` (normalized) is, for ``qtype``: the one decision of zone,
        existence, closest encloser and wildcard (RFC 4592 3.3.1, 4.1) that
        every answer path takes. Inlined loops: the DNS fast path asks it for
        every name that is not in its answer cache."""
        for zone, dotted in self._suffixes:
            if name == zone.origin or name.endswith(dotted):
                break
        else:
            return _REFUSED
        if not self.ready:
            return tuple.__new__(Match, (_NOT_READY, zone, name, ""))
        owner, encloser = name, ""
        names = self.names
        if name not in names:
            # RFC 4592 3.3.1: the closest encloser is the nearest ancestor that
            # exists, an empty non-terminal included, and only its own wildcard
            # answers.
            if self.wildcards:
                if "\\" in name:  # a label may hold an escaped dot: label by label
                    encloser = name
                    while encloser:
                        encloser = _parent(encloser)
                        if encloser in names:
                            break
                else:
                    i = name.find(".")
                    while i >= 0:
                        encloser = name[i + 1:]
                        if encloser in names:
                            break
                        i = name.find(".", i + 1)
            if not encloser or encloser not in self.wildcards:
                return tuple.__new__(Match, (_NXDOMAIN, zone, name, ""))
            owner = WILDCARD + encloser
        if owner in self.unusable:
            return tuple.__new__(Match, (_UNUSABLE, zone, owner, encloser))
        if owner in self.weighted:
            return tuple.__new__(Match, (_WEIGHTED, zone, owner, encloser))
        outcome = holds(self.rrsets.get(owner, _NO_RRSETS), qtype)
        return tuple.__new__(Match, (outcome, zone, owner, encloser))

    def lookup(self, qname: str, qtype: int, *, variant: int | None = None,
               rnd: Callable[[], float] = random.random) -> Lookup:
        """Answer ``qname``/``qtype`` (``qname`` normalized: lower case, trailing dot).

        A weighted ``qname`` answers with ``variant`` (else one drawn with ``rnd``);
        a weighted name met while chasing a CNAME is drawn with ``rnd``."""
        match = self.classify(qname, qtype)
        if match.outcome is Outcome.REFUSED:
            return Lookup(Rcode.REFUSED, authoritative=False)
        if match.outcome is Outcome.NOT_READY:
            return Lookup(Rcode.SERVFAIL, authoritative=False)
        answer: list[RRset] = []
        seen: set[str] = set()
        name = qname
        chosen: int | None = None
        cacheable = True
        wildcard: str | None = None
        depends: list[str] = []
        while True:
            zone = match.zone
            assert zone is not None
            outcome: Outcome = match.outcome
            if outcome is Outcome.NXDOMAIN:
                return self._negative(Rcode.NXDOMAIN, zone, answer, chosen, cacheable,
                                      wildcard, depends)
            owner = match.owner
            if owner != name:  # RFC 4592 3.3.1: answered from the closest encloser's wildcard
                if name == qname:
                    wildcard = owner
                depends += _below(name, match.encloser)
                depends.append(owner)
            if outcome is Outcome.UNUSABLE:
                return Lookup(Rcode.SERVFAIL, authoritative=False, cacheable=cacheable,
                              wildcard=wildcard, depends=tuple(depends))
            sets = self.rrsets.get(owner, _NO_RRSETS)
            if outcome is Outcome.WEIGHTED:
                group = self.weighted[owner]
                if name == qname:
                    chosen = variant if variant is not None else group.pick(rnd())
                    sets = group.variants[chosen]
                else:
                    cacheable = False
                    sets = group.variants[group.pick(rnd())]
                outcome = holds(sets, qtype)
            if owner != name:  # synthesized: the owner is the name asked (RFC 1034 4.3.3)
                sets = {t: RRset(name, t, rr.ttl, rr.rdata) for t, rr in sets.items()}
            if outcome is Outcome.NODATA:
                return self._negative(Rcode.NOERROR, zone, answer, chosen, cacheable,
                                      wildcard, depends)
            if outcome is Outcome.DATA:
                if qtype == ANY:
                    first = next(t for t in ANY_PREFERENCE if t in sets)
                    return Lookup(Rcode.NOERROR, True, (*answer, sets[first]),
                                  variant=chosen, cacheable=cacheable, wildcard=wildcard,
                                  depends=tuple(depends))
                answer.append(sets[qtype])
                return Lookup(Rcode.NOERROR, True, tuple(answer),
                              additional=self._additional(sets[qtype]), variant=chosen,
                              cacheable=cacheable, wildcard=wildcard, depends=tuple(depends))
            cname = sets[CNAME]
            answer.append(cname)
            seen.add(name)
            target = cname.rdata[0]
            assert isinstance(target, str)
            # Chase the CNAME only inside our zones (RFC 1034 4.3.2 step 3a);
            # outside them the client's resolver does it.
            match = self.classify(target, qtype)
            if (match.outcome is Outcome.REFUSED or target in seen
                    or len(answer) >= MAX_CNAME_CHAIN):
                return Lookup(Rcode.NOERROR, True, tuple(answer), variant=chosen,
                              cacheable=cacheable, wildcard=wildcard, depends=tuple(depends))
            name = target

    def _negative(self, rcode: Rcode, zone: ZoneInfo, answer: list[RRset],
                  variant: int | None, cacheable: bool, wildcard: str | None = None,
                  depends: list[str] | None = None) -> Lookup:
        soa = zone.soa
        neg = RRset(soa.name, SOA, zone.negative_ttl, soa.rdata)
        return Lookup(rcode, True, tuple(answer), authority=(neg,), variant=variant,
                      cacheable=cacheable, wildcard=wildcard, depends=tuple(depends or ()))

    def _additional(self, rrset: RRset) -> tuple[RRset, ...]:
        """Glue for NS, addresses of in-zone SRV targets."""
        if rrset.rtype not in (NS, SRV):
            return ()
        out: list[RRset] = []
        for rd in rrset.rdata:
            target = rd if isinstance(rd, str) else rd[3] if isinstance(rd, tuple) else None
            if target is None:
                continue
            for t in (A, AAAA):
                extra = self.rrsets.get(target, {}).get(t)
                if extra is not None and extra not in out:
                    out.append(extra)
        return tuple(out)

    def zone_records(self, zone: ZoneInfo) -> list[RRset]:
        """Every RRset of ``zone`` in a stable order, SOA first (for AXFR)."""
        out = [zone.soa]
        for name in sorted(self.rrsets, key=_canonical_key):
            if self.find_zone(name) is not zone:
                continue
            for rtype in sorted(self.rrsets[name]):
                if rtype != SOA:
                    out.append(self.rrsets[name][rtype])
        return out


def _parent(name: str) -> str:
    """``name`` without its first label ("" for the root's children). The
    first unescaped dot ends it: a qname's label may hold ``\\.``."""
    i = name.find(".")
    while i > 0 and name[i - 1] == "\\":
        k = i - 1
        while k > 0 and name[k - 1] == "\\":
            k -= 1
        if (i - k) % 2 == 0:
            break
        i = name.find(".", i + 1)
    return name[i + 1:] if i >= 0 else ""


def _below(name: str, ancestor: str) -> list[str]:
    """``name`` and its ancestors strictly below ``ancestor``."""
    out = []
    while name != ancestor and name.endswith("." + ancestor):
        out.append(name)
        name = _parent(name)
    return out


def _canonical_key(name: str) -> tuple[str, ...]:
    """RFC 4034 6.1 canonical order: compare labels right to left."""
    return tuple(reversed(name.rstrip(".").split(".")))
