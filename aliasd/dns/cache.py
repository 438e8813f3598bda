"""The answer cache: wire answers of names that exist, and the names each was
read from, so that a new snapshot keeps every answer no changed name touched.

Only answers with a non-empty answer section, for one of the types the zones
serve, to a qname that no wildcard answered, enter: the qname exists, so the
cache is bounded by the zone (names x served types x 3 EDNS shapes), whatever
clients send. :data:`MAX_CACHE` is a memory ceiling for zones larger than that
(oldest entry out; every entry being a real name, a flood cannot use it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from aliasd.dns.wire import flag_headers
from aliasd.zone import AAAA, ANY, CNAME, NS, SOA, SRV, A, Lookup, Weighted

MAX_CACHE = 200_000
# Types of the answers worth caching: the ones the resolver builds (plus ANY).
# Any other qtype at an existing name is NODATA (a template) or, at a CNAME, a
# chased answer left to the slow path, so random qtypes cannot grow the cache.
CACHED_QTYPES = frozenset((A, AAAA, CNAME, SRV, NS, SOA, ANY))


class CachedAnswer(NamedTuple):
    """One answer in wire format, ready to be patched with a query's ID, flags
    and question as asked."""

    headers: tuple[bytes, bytes, bytes, bytes]  # see aliasd.dns.wire.flag_headers
    tail: bytes  # what follows the question
    rcode: str  # the answer counter's labels
    qtype: str
    size: int  # the whole answer's length

    @classmethod
    def of(cls, answer: bytes, qend: int, rcode: str, qtype: str) -> CachedAnswer:
        return cls(flag_headers(answer), answer[qend:], rcode, qtype, len(answer))


@dataclass
class Variants:
    """Cached answers of a weighted name, one per variant, filled as drawn."""

    group: Weighted
    answers: list[CachedAnswer | None]


class AnswerCache:
    """Question (lower-cased wire + EDNS shape) → answer, with the dependency
    graph question ↔ names it was read from."""

    __slots__ = ("_dependents", "_deps", "entries")

    def __init__(self) -> None:
        # Read directly by the query path: one dict lookup per query.
        self.entries: dict[bytes, CachedAnswer | Variants] = {}
        self._deps: dict[bytes, tuple[str, ...]] = {}
        self._dependents: dict[str, set[bytes]] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, key: bytes, answer: CachedAnswer, *, qname: str, lookup: Lookup,
            weighted: Weighted | None) -> None:
        """Cache ``answer`` to the question ``key`` (``qname`` lower-cased), the
        answer built from ``lookup``; ``weighted``: the qname's group, whose
        variant ``lookup.variant`` answered."""
        entries = self.entries
        if key not in entries:
            if len(entries) >= MAX_CACHE:  # memory ceiling only: oldest out
                self._forget(next(iter(entries)))
            deps = dependencies(qname, lookup)
            self._deps[key] = deps
            for name in deps:
                self._dependents.setdefault(name, set()).add(key)
        if lookup.variant is None or weighted is None:
            entries[key] = answer
            return
        cached = entries.get(key)
        if not isinstance(cached, Variants):
            cached = entries[key] = Variants(weighted, [None] * len(weighted.variants))
        cached.answers[lookup.variant] = answer

    def take(self, gone: Iterable[str]) -> AnswerCache:
        """A cache holding this one's answers but those read from a name in
        ``gone``; this one is left empty (no copy: the work is proportional to
        what changed)."""
        new = AnswerCache()
        new.entries, new._deps, new._dependents = self.entries, self._deps, self._dependents
        self.entries, self._deps, self._dependents = {}, {}, {}
        for name in gone:
            for key in new._dependents.pop(name, ()):
                new._forget(key)
        return new

    def _forget(self, key: bytes) -> None:
        """Drop one cached answer and its dependency edges."""
        self.entries.pop(key, None)
        for name in self._deps.pop(key, ()):
            keys = self._dependents.get(name)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._dependents[name]


def dependencies(qname: str, lookup: Lookup) -> tuple[str, ...]:
    """Every name an answer was read from: the qname and the owners of its
    RRsets (the CNAME chain, glue, the zone's SOA when a chase ended in a
    negative), plus SRV/NS targets, whose addresses may appear as glue later.
    A CNAME target that was chased is in the chain or ended in the SOA; one
    that was not (outside the zones, a loop) was not read."""
    names = {qname, *lookup.depends}
    for section in (lookup.answer, lookup.authority, lookup.additional):
        for rrset in section:
            names.add(rrset.name)
            if rrset.rtype == NS:
                names.update(rd for rd in rrset.rdata if isinstance(rd, str))
            elif rrset.rtype == SRV:
                names.update(rd[3] for rd in rrset.rdata if isinstance(rd, tuple))
    return tuple(names)
