"""Immutable zone snapshots and the lookup algorithm (RFC 1034 4.3.2, pure).

A :class:`Snapshot` is built once by the registry and then only read. The DNS
server holds a reference to the current one and swaps it whole on change.
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
    # ready endpoint): SERVFAIL, the last stage of the issue 7 fallback chain,
    # so resolvers retry instead of caching "no address".
    unusable: Collection[str] = frozenset()
    # The closest enclosers that have a wildcard: ``foo.internal.`` when
    # ``*.foo.internal.`` exists (RFC 4592 3.3.1). Empty: no name is synthesized.
    wildcards: Collection[str] = frozenset()

    def find_zone(self, qname: str) -> ZoneInfo | None:
        """The most specific served zone containing ``qname`` (normalized)."""
        best: ZoneInfo | None = None
        for z in self.zones:
            if (qname == z.origin or qname.endswith("." + z.origin)) and (
                best is None or len(z.origin) > len(best.origin)
            ):
                best = z
        return best

    def lookup(self, qname: str, qtype: int, *, variant: int | None = None,
               rnd: Callable[[], float] = random.random) -> Lookup:
        """Answer ``qname``/``qtype`` (``qname`` normalized: lower case, trailing dot).

        A weighted ``qname`` answers with ``variant`` (else one drawn with ``rnd``);
        a weighted name met while chasing a CNAME is drawn with ``rnd``."""
        zone = self.find_zone(qname)
        if zone is None:
            return Lookup(Rcode.REFUSED, authoritative=False)
        if not self.ready:
            return Lookup(Rcode.SERVFAIL, authoritative=False)
        answer: list[RRset] = []
        seen: set[str] = set()
        name = qname
        chosen: int | None = None
        cacheable = True
        wildcard: str | None = None
        depends: list[str] = []
        while True:
            owner = name
            if name not in self.names:
                # RFC 4592 3.3.1: a name that does not exist is answered from the
                # wildcard of its closest encloser, if that has one.
                source = self.wildcard_source(name)
                if source is None:
                    return self._negative(Rcode.NXDOMAIN, zone, answer, chosen, cacheable,
                                          wildcard, depends)
                if name == qname:
                    wildcard = source
                depends += _below(name, source[2:])
                depends.append(source)
                owner = source
            if owner in self.unusable:
                return Lookup(Rcode.SERVFAIL, authoritative=False, cacheable=cacheable,
                              wildcard=wildcard, depends=tuple(depends))
            sets = self.rrsets.get(owner, {})
            group = self.weighted.get(owner)
            if group is not None:
                if name == qname:
                    chosen = variant if variant is not None else group.pick(rnd())
                    sets = group.variants[chosen]
                else:
                    cacheable = False
                    sets = group.variants[group.pick(rnd())]
            if owner != name:  # synthesized: the owner is the name asked (RFC 1034 4.3.3)
                sets = {t: RRset(name, t, rr.ttl, rr.rdata) for t, rr in sets.items()}
            if qtype == ANY:
                for t in ANY_PREFERENCE:
                    if t in sets:
                        return Lookup(Rcode.NOERROR, True, (*answer, sets[t]),
                                      variant=chosen, cacheable=cacheable, wildcard=wildcard,
                                      depends=tuple(depends))
                return self._negative(Rcode.NOERROR, zone, answer, chosen, cacheable,
                                      wildcard, depends)
            if qtype in sets:
                answer.append(sets[qtype])
                return Lookup(Rcode.NOERROR, True, tuple(answer),
                              additional=self._additional(sets[qtype]), variant=chosen,
                              cacheable=cacheable, wildcard=wildcard, depends=tuple(depends))
            cname = sets.get(CNAME)
            if cname is None:
                return self._negative(Rcode.NOERROR, zone, answer, chosen, cacheable,
                                      wildcard, depends)
            answer.append(cname)
            seen.add(name)
            target = cname.rdata[0]
            assert isinstance(target, str)
            # Chase the CNAME only inside our zones (RFC 1034 4.3.2 step 3a);
            # outside them the client's resolver does it.
            next_zone = self.find_zone(target)
            if next_zone is None or target in seen or len(answer) >= MAX_CNAME_CHAIN:
                return Lookup(Rcode.NOERROR, True, tuple(answer), variant=chosen,
                              cacheable=cacheable, wildcard=wildcard, depends=tuple(depends))
            zone, name = next_zone, target

    def wildcard_source(self, name: str) -> str | None:
        """For ``name`` that does not exist: the wildcard ``*.<closest encloser>``
        that answers it, or None (RFC 4592 3.3.1: the closest encloser is the
        nearest ancestor that exists, an empty non-terminal included, and only
        its own wildcard counts)."""
        if not self.wildcards:
            return None
        ce = name
        while ce:
            ce = _parent(ce)
            if ce in self.names:
                return WILDCARD + ce if ce in self.wildcards else None
        return None

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
