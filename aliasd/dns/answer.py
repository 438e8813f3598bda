"""Turning query bytes into answer bytes for one snapshot (pure, CPU-only).

Two paths give byte-identical answers (a property test proves it):

* the **slow path** (:mod:`aliasd.dns.slowpath`) parses with dnslib, looks the
  name up in the snapshot and packs a response with dnslib;
* the **fast path** (here) recognises the common query shape (one question,
  optional OPT, no other records) from the raw bytes (:mod:`aliasd.dns.wire`)
  and answers without dnslib:

  - a name that exists: a wire-format answer that the slow path produced
    earlier (:mod:`aliasd.dns.cache`), patched with the message ID, the RD/CD
    bits and the question as asked (so 0x20 mixed case comes back exactly);
  - an answer with nothing in the answer section (NXDOMAIN, NODATA, REFUSED,
    SERVFAIL), or a name that a wildcard answers (RFC 4592): a template
    (:mod:`aliasd.dns.templates`) learnt from the first slow answer of its
    kind, patched with the question. No per-name entry: a flood of names that
    do not exist, or of names under a wildcard, leaves the cache alone.

Which template a question takes is decided by :meth:`Snapshot.classify`, the
same function the slow path's :meth:`Snapshot.lookup` asks.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from ipaddress import IPv4Network, IPv6Network

from aliasd.dns import slowpath, xfr
from aliasd.dns.cache import CACHED_QTYPES, AnswerCache, CachedAnswer, Variants
from aliasd.dns.records import CLASS_IN
from aliasd.dns.stats import Stats, qtype_name
from aliasd.dns.templates import (
    Template,
    label_below,
    wildcard_template,
    zone_anchors,
)
from aliasd.dns.wire import (
    CD,
    COUNTS_EDNS,
    COUNTS_NO_EDNS,
    EDNS,
    EDNS_DO,
    MAX_TCP,
    NO_EDNS,
    OPT_HEAD,
    RD,
    Shape,
    fast_shape,
    udp_limit,
    wire_name,
)
from aliasd.zone import AXFR, IXFR, Outcome, Rcode, Snapshot

log = logging.getLogger(__name__)

_AXFR, _IXFR = AXFR.to_bytes(2, "big"), IXFR.to_bytes(2, "big")
# Outcomes and rcodes as module names: reading an Enum member off its class is
# a descriptor call on Python 3.11, a measurable share of a template answer.
_NXDOMAIN, _NODATA, _WEIGHTED, _REFUSED = (Outcome.NXDOMAIN, Outcome.NODATA, Outcome.WEIGHTED,
                                           Outcome.REFUSED)
_DATA, _CNAME = Outcome.DATA, Outcome.CNAME
_RCODE_REFUSED, _RCODE_SERVFAIL = Rcode.REFUSED, Rcode.SERVFAIL
_RCODE_NXDOMAIN, _RCODE_NOERROR = Rcode.NXDOMAIN, Rcode.NOERROR
_NO_EDNS_LIMIT = udp_limit(0)
TemplateKey = tuple[str, int, int]
"""(anchor, rcode, EDNS shape) or (wildcard, qtype, EDNS shape)."""


class Answerer:
    """Answers queries from one snapshot. A new snapshot gets a new Answerer;
    :meth:`evolve` hands it the cached answers that are still right. Nothing a
    query can see is ever half-updated: the successor is complete before the
    server's one reference is swapped."""

    def __init__(self, snapshot: Snapshot, *, stats: Stats,
                 allow_transfer: Sequence[IPv4Network | IPv6Network] = (),
                 cache: AnswerCache | None = None) -> None:
        self.snapshot = snapshot
        self.stats = stats
        self.allow_transfer = tuple(allow_transfer)
        self._cache = cache if cache is not None else AnswerCache()
        self._entries = self._cache.entries
        # Templates carry the SOA serial, so they are per snapshot (learnt again
        # after a swap: one slow answer each). None: that key cannot be templated.
        self._templates: dict[TemplateKey, Template | None] = {}
        self._anchors = zone_anchors(snapshot)

    @property
    def cache_size(self) -> int:
        return len(self._cache)

    def evolve(self, snapshot: Snapshot, changed: frozenset[str] | None) -> Answerer:
        """The Answerer for ``snapshot``, keeping every cached answer that depended
        on no name in ``changed`` (None: anything may have changed, keep nothing).

        Takes this Answerer's cache (no copy: the work is proportional to what
        changed), so this one answers on through the slow path from now on."""
        old = self.snapshot
        if (changed is None or old.ready != snapshot.ready
                or [(z.origin, z.ns) for z in old.zones]
                != [(z.origin, z.ns) for z in snapshot.zones]):
            return Answerer(snapshot, stats=self.stats, allow_transfer=self.allow_transfer)
        # Answers carrying a SOA (negatives after a CNAME, SOA/ANY at the apex)
        # depend on the zone origin; the serial changes with every snapshot.
        gone = set(changed)
        gone.update(z.origin for z, was in zip(snapshot.zones, old.zones, strict=True)
                    if z.soa != was.soa)
        cache = self._cache.take(gone)
        self._entries = self._cache.entries
        return Answerer(snapshot, stats=self.stats, allow_transfer=self.allow_transfer,
                        cache=cache)

    def respond(self, data: bytes, *, tcp: bool = False, client: str = "") -> bytes | None:
        """The answer to one query, or None when it must be dropped."""
        if type(data) is not bytes:
            data = bytes(data)
        n = len(data)
        # A cached answer, the question's end found from the length alone: no
        # EDNS (it ends the message) or an OPT without options (the last 11
        # bytes). The key equals a cached one only if these bytes are, up to
        # ASCII case, a question that fast_shape accepted (length bytes < 0x41
        # do not change with case), so nothing is parsed twice.
        if n > 16 and not data[2] & 0xFE and not data[3] & 0x4F:
            counts = data[4:12]
            if counts == COUNTS_NO_EDNS:
                qend = n
                entry = self._entries.get(data[12:].lower() + NO_EDNS)
                limit = MAX_TCP if tcp else _NO_EDNS_LIMIT
            elif (counts == COUNTS_EDNS and data[n - 11:n - 8] == OPT_HEAD
                  and not data[n - 5] and not data[n - 2] and not data[n - 1]):
                qend = n - 11
                entry = self._entries.get(data[12:qend].lower()
                                          + (EDNS_DO if data[n - 4] & 0x80 else EDNS))
                limit = MAX_TCP if tcp else udp_limit(data[n - 8] << 8 | data[n - 7])
            else:
                entry = None
            if type(entry) is CachedAnswer and entry[4] <= limit:
                stats = self.stats
                stats.fast_hits += 1
                stats.answers[(entry[2], entry[3])] += 1
                return (data[:2] + entry[0][(data[2] & RD) | (data[3] & CD) >> 3]
                        + data[12:qend] + entry[1])
        shape = fast_shape(data, tcp)
        variant = None
        learn: TemplateKey | None = None
        if shape is not None:
            qend, key, limit, edns = shape
            entry = self._entries.get(key)
            hit: CachedAnswer | None = None
            if entry is None:
                found = self._template_key(key, qend)
                if found is not None:
                    learn = (found[0], found[1], edns)
                    t = self._templates.get(learn)
                    if t is not None:
                        tail = t.tails.get(qend) or t.tail(qend)
                        if qend + len(tail) <= limit and not (t.avoid and found[3] in t.avoid):
                            stats = self.stats
                            stats.fast_hits += 1
                            stats.template_hits += 1
                            stats.answers[(t.rcode, found[2])] += 1
                            return (data[:2] + t.headers[(data[2] & RD) | (data[3] & CD) >> 3]
                                    + data[12:qend] + tail)
                        learn = None
                    elif learn in self._templates:
                        learn = None  # that shape cannot be templated: slow path
                    if learn is not None and learn[0][:1] == "*":
                        learn = None  # a wildcard's template is learnt in _slow
            elif isinstance(entry, Variants):  # weighted: a fresh draw for every query
                variant = entry.group.pick(random.random())
                hit = entry.answers[variant]
            else:
                hit = entry
            if hit is not None and hit[4] <= limit:
                self.stats.fast_hits += 1
                self.stats.answers[(hit[2], hit[3])] += 1
                return (data[:2] + hit[0][(data[2] & RD) | (data[3] & CD) >> 3]
                        + data[12:qend] + hit[1])
        try:
            out = self._slow(data, tcp=tcp, client=client, shape=shape, variant=variant)
        except Exception:  # no input may take the server down; count and drop
            log.exception("internal error answering a query")
            self.stats.problems["internal_error"] += 1
            return None
        if out is not None and learn is not None and shape is not None:
            anchor_start = shape.qend - 4 - (len(learn[0]) + 1 if learn[0] else 0)
            self._templates[learn] = Template.learn(out, shape.qend, anchor_start)
        return out

    def _template_key(self, key: bytes, qend: int) -> tuple[str, int, str, str] | None:
        """For the question in ``key``, answered with an empty answer section
        (NXDOMAIN, NODATA, REFUSED, SERVFAIL): (anchor, rcode, qtype name, "");
        answered from a wildcard (RFC 4592): (wildcard, qtype, qtype name, the
        qname's label below the closest encloser); else None. The decision is
        :meth:`Snapshot.classify`'s, as on the slow path."""
        qlen = qend - 16
        qtype = key[qlen] << 8 | key[qlen + 1]
        qclass = key[qlen + 2] << 8 | key[qlen + 3]
        if qclass != CLASS_IN or qtype in (AXFR, IXFR):
            return None
        name = wire_name(key)
        if name is None:
            return None
        match = self.snapshot.classify(name, qtype)
        outcome = match.outcome
        if outcome is _DATA or outcome is _CNAME:
            if not match.encloser:
                return None  # a name that exists: the cache's, not a template's
            return match.owner, qtype, qtype_name(qtype), label_below(name, match.encloser)
        if outcome is _NXDOMAIN or outcome is _NODATA:
            zone = match.zone
            assert zone is not None
            # The longest name that the qname and the zone's SOA end with.
            found = zone.origin
            for candidate, dotted in self._anchors[found]:
                if name == candidate or name.endswith(dotted):
                    found = candidate
                    break
            return (found, _RCODE_NXDOMAIN if outcome is _NXDOMAIN else _RCODE_NOERROR,
                    qtype_name(qtype), "")
        if outcome is _WEIGHTED:
            return None  # a draw: the cache holds one answer per variant
        # REFUSED; SERVFAIL (not ready, unusable): no SOA, so no anchor.
        rcode = _RCODE_REFUSED if outcome is _REFUSED else _RCODE_SERVFAIL
        return "", rcode, qtype_name(qtype), ""

    def answer_slow(self, data: bytes, *, tcp: bool = False, client: str = "") -> bytes | None:
        """The slow path alone, bypassing and not filling the wire cache."""
        return slowpath.answer(self.snapshot, bytes(data), tcp=tcp, client=client,
                               allow=self.allow_transfer, stats=self.stats).wire

    def respond_tcp(self, data: bytes, *, client: str = "") -> list[bytes]:
        """Like :meth:`respond`, but a zone transfer may take several messages."""
        shape = fast_shape(data, True)
        if shape is not None and data[shape.qend - 4:shape.qend - 2] not in (_AXFR, _IXFR):
            # The common shape and not a transfer: no dnslib parse to find out.
            out = self.respond(data, tcp=True, client=client)
            return [out] if out is not None else []
        try:
            messages = xfr.transfer(self.snapshot, data, client=client,
                                    allow=self.allow_transfer, stats=self.stats)
        except Exception:
            log.exception("internal error answering a transfer")
            self.stats.problems["internal_error"] += 1
            return []
        if messages is not None:
            return messages
        out = self.respond(data, tcp=True, client=client)
        return [out] if out is not None else []

    def _slow(self, data: bytes, *, tcp: bool, client: str, shape: Shape | None,
              variant: int | None) -> bytes | None:
        """The slow path's answer; from it, a cached answer or a wildcard's
        template when the answer qualifies."""
        res = slowpath.answer(self.snapshot, data, tcp=tcp, client=client,
                              allow=self.allow_transfer, stats=self.stats, variant=variant)
        lookup = res.lookup
        if (shape is None or res.wire is None or lookup is None or not lookup.answer
                or res.qtype not in CACHED_QTYPES):
            return res.wire
        if lookup.wildcard is not None:
            # One template per wildcard, qtype and EDNS shape, never an entry per qname.
            t = wildcard_template(res.wire, shape.qend, res.qname, lookup)
            if t is not None:
                self._templates[(lookup.wildcard, res.qtype, shape.edns)] = t
            return res.wire
        # Admission by existence: a non-empty answer section means the qname
        # exists, so what enters is bounded by the zone.
        entry = CachedAnswer.of(res.wire, shape.qend, lookup.rcode.name, qtype_name(res.qtype))
        self._cache.add(shape.key, entry, qname=res.qname, lookup=lookup,
                        weighted=self.snapshot.weighted.get(res.qname))
        return res.wire
