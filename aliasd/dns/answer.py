"""Turning query bytes into answer bytes for one snapshot (pure, CPU-only).

Two paths give byte-identical answers (a property test proves it):

* the **slow path** parses with dnslib, looks the name up in the snapshot and
  packs a response with dnslib;
* the **fast path** recognises the common query shape (one question, optional
  OPT, no other records) from the raw bytes and answers without dnslib:

  - a name that exists: a wire-format answer that the slow path produced
    earlier, keyed by the lower-cased question, patched with the message ID,
    the RD/CD bits and the question as asked (so 0x20 mixed case comes back
    exactly);
  - an answer with nothing in the answer section (NXDOMAIN, NODATA, REFUSED,
    SERVFAIL): one template per (anchor, rcode, EDNS shape), learnt from the
    first slow answer of that shape, patched with the question; its
    compression pointers are moved by the question's length (see
    :class:`_Template`). No per-name entry: a flood of names that do not exist
    leaves the cache alone (issue 15);
  - a name that does not exist but that a wildcard answers (RFC 4592): one
    template per (wildcard, qtype, EDNS shape), learnt the same way. The
    answer's owner is the qname, a pointer to the question (0xC00C), so the
    bytes are the same for every such name but the question (issue 16); a
    flood of names under a wildcard leaves the cache alone too.

The slow path always builds its answer for the lower-cased question and then
splices the question bytes as asked back in; that is what makes a cached
answer valid for every casing of the same name.

**What enters the cache, and what leaves it.** Only answers with a non-empty
answer section, for one of the types the zones serve, to a qname that no
wildcard answered: the qname exists, so the cache is bounded by the zone
(names x served types x 3 EDNS shapes), whatever clients send. MAX_CACHE is
a memory ceiling for zones larger than that (oldest entry out, all entries
being real names, so a flood cannot use it).
Across snapshots an entry survives unless a name it depended on changed (the
qname, the owner of every RRset in it: CNAME chain, glue, the zone's SOA;
SRV/NS targets; for a name in the chain that a wildcard answered, the wildcard
and the names between it and the closest encloser): :meth:`Answerer.evolve`.
"""

from __future__ import annotations

import bisect
import ipaddress
import logging
import random
import struct
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import dnslib
from dnslib import EDNS0, RR, DNSHeader, DNSLabel, DNSQuestion, DNSRecord

from aliasd.names import WILDCARD
from aliasd.zone import (
    AAAA,
    ANY,
    ANY_PREFERENCE,
    AXFR,
    CNAME,
    IXFR,
    NS,
    OPT,
    SOA,
    SRV,
    A,
    Lookup,
    Rcode,
    RRset,
    Snapshot,
    SoaData,
    Weighted,
)

log = logging.getLogger(__name__)

CLASS_IN = 1
CLASS_ANY = 255
# RFC 6891 6.2.5 / DNS flag day 2020: advertise 1232 to avoid fragmentation.
OUR_UDP_SIZE = 1232
MAX_TCP = 65535
MAX_CACHE = 200_000
# Types of the answers worth caching: the ones the registry builds (plus ANY).
# Any other qtype at an existing name is NODATA (a template) or, at a CNAME, a
# chased answer left to the slow path, so random qtypes cannot grow the cache.
CACHED_QTYPES = frozenset((A, AAAA, CNAME, SRV, NS, SOA, ANY))
BADVERS = 16
AXFR_RRS_PER_MESSAGE = 500

_QR, _AA, _TC, _RD = 0x80, 0x04, 0x02, 0x01  # in header byte 2
_CD = 0x10  # in header byte 3
_COUNTS_NO_EDNS = b"\x00\x01\x00\x00\x00\x00\x00\x00"
_COUNTS_EDNS = b"\x00\x01\x00\x00\x00\x00\x00\x01"
_OPT_HEAD = b"\x00\x00\x29"  # root owner, type OPT
_AXFR, _IXFR = AXFR.to_bytes(2, "big"), IXFR.to_bytes(2, "big")
# The last byte of a cache key: no EDNS, EDNS, EDNS with DO. Distinct, so a key
# always names one question and one EDNS shape.
_NO_EDNS, _EDNS, _EDNS_DO = b"\x01", b"\x00", b"\x80"

Entry = tuple[tuple[bytes, bytes, bytes, bytes], bytes, str, str, int]
"""A cached answer: header bytes 2-12 for each (RD, CD) of the query, what
follows the question, rcode and qtype names (metrics), total length."""


def _entry(out: bytes, qend: int, rcode: str, qtype: str) -> Entry:
    f0, f1 = out[2] & ~_RD & 0xFF, out[3] & ~_CD & 0xFF
    counts = out[4:12]
    h = (bytes((f0, f1)) + counts, bytes((f0 | _RD, f1)) + counts,
         bytes((f0, f1 | _CD)) + counts, bytes((f0 | _RD, f1 | _CD)) + counts)
    return h, out[qend:], rcode, qtype, len(out)


LATENCY_BUCKETS = (0.00002, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01, 0.05)
LATENCY_SAMPLE = 16  # a power of two: the hot path tests a bit mask


@dataclass
class Stats:
    """Counters read by the metrics endpoint: answers by (rcode, qtype name),
    and every malformed or refused input by kind. Plain ints: the hot path
    pays a dict increment, not a lock."""

    answers: Counter[tuple[str, str]] = field(default_factory=Counter)
    problems: Counter[str] = field(default_factory=Counter)
    fast_hits: int = 0  # answers without the slow path: cache and templates
    template_hits: int = 0  # of which negative/refused templates
    slow: int = 0
    # Answer latency of one UDP query in LATENCY_SAMPLE (timing every query would
    # cost more than the fast path itself): counts per bucket, sum, count.
    latency_buckets: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS))
    latency_sum: float = 0.0
    latency_count: int = 0

    def observe_latency(self, seconds: float) -> None:
        i = bisect.bisect_left(LATENCY_BUCKETS, seconds)
        if i < len(LATENCY_BUCKETS):
            self.latency_buckets[i] += 1
        self.latency_sum += seconds
        self.latency_count += 1



_QTYPE_NAMES = {A: "A", NS: "NS", CNAME: "CNAME", SOA: "SOA", AAAA: "AAAA", SRV: "SRV",
                ANY: "ANY", AXFR: "AXFR", IXFR: "IXFR", 12: "PTR", 15: "MX", 16: "TXT",
                65: "HTTPS", 64: "SVCB"}


def qtype_name(qtype: int) -> str:
    return _QTYPE_NAMES.get(qtype, "other")


Shape = tuple[int, bytes, int, int]
"""What the fast parser learned: (end of the question, cache key, answer size
limit, EDNS shape: 0 none, 1 OPT, 2 OPT with DO). A tuple, not a dataclass:
it is built for every query."""


def fast_shape(data: bytes, tcp: bool) -> Shape | None:
    """Recognise ``QUERY, 1 question, [1 OPT v0]`` from the raw bytes, or None."""
    n = len(data)
    if n < 17 or data[2] & 0xFE or data[3] & 0x4F:
        # QR/opcode/AA/TC set, or Z/rcode bits set: not a plain query.
        return None
    i = 12
    while True:
        length = data[i]
        if length == 0:
            break
        if length > 63:
            return None
        i += length + 1
        if i >= n:
            return None
    qend = i + 5
    if qend - 12 > 259 or qend > n:
        return None
    counts = data[4:12]
    if counts == _COUNTS_NO_EDNS:
        if qend != n:
            return None
        return qend, data[12:qend].lower() + _NO_EDNS, MAX_TCP if tcp else 512, 0
    if counts != _COUNTS_EDNS or n < qend + 11:
        return None
    if data[qend] != 0 or data[qend + 1] != 0 or data[qend + 2] != OPT or data[qend + 6] != 0:
        return None  # not an OPT at the root, or EDNS version != 0 (BADVERS: slow path)
    rdlen = (data[qend + 9] << 8) | data[qend + 10]
    j = qend + 11
    end = j + rdlen
    if end != n:
        return None
    while j < end:  # options must tile the RDATA exactly, as dnslib needs
        if j + 4 > end:
            return None
        j += 4 + ((data[j + 2] << 8) | data[j + 3])
    if j != end:
        return None
    udp = (data[qend + 3] << 8) | data[qend + 4]
    if data[qend + 7] & 0x80:
        return qend, data[12:qend].lower() + _EDNS_DO, MAX_TCP if tcp else max(512, udp), 2
    return qend, data[12:qend].lower() + _EDNS, MAX_TCP if tcp else max(512, udp), 1


def wire_name(wire: bytes) -> str | None:
    """``b"\\x03www\\x08internal\\x00..."`` → ``"www.internal."``; None when a label
    holds a dot (that name could pose as another one) or is not UTF-8 (dnslib
    refuses it: FORMERR): the slow path takes those."""
    labels = []
    i = 0
    length = wire[0]
    while length:
        labels.append(wire[i + 1:i + 1 + length])
        i += length + 1
        length = wire[i]
    if not labels:
        return "."
    text = b".".join(labels)
    if text.count(b".") != len(labels) - 1:
        return None
    try:
        return text.decode() + "."
    except UnicodeDecodeError:
        return None


class _Template:
    """An answer that is the same for a whole class of questions except for the
    question itself, learnt from a slow answer whose question ended at ``qend``:

    * an answer with an empty answer section for one (anchor, rcode, EDNS
      shape): NXDOMAIN, NODATA, REFUSED, SERVFAIL;
    * the answer synthesized from one wildcard for one (qtype, EDNS shape)
      (RFC 4592): its owner name is the qname, which dnslib writes as a
      pointer to the question (0xC00C), the same bytes for every qname.

    What follows the question compresses its names against the question: dnslib
    points each one at the longest suffix it shares with the question. The
    *anchor* is the longest suffix of the qname shared with any name in that tail
    (the zone, ``ns.<zone>`` for names under it, or a wildcard's closest
    encloser), so for every qname with the same anchor the pointers land in the
    anchor or the tail itself, both at the same distance from the end of the
    question: moving every pointer by the difference in question length gives the
    slow path's bytes exactly (the property tests in tests/unit/test_fastpath.py
    hold it). A name in a wildcard answer below the closest encloser (a CNAME
    target there that does not exist) would share more with some qnames:
    ``avoid`` holds the labels just below the closest encloser that such qnames
    have, and those take the slow path."""

    __slots__ = ("_pointers", "_qend", "_tail", "avoid", "headers", "rcode", "tails")

    def __init__(self, answer: bytes, qend: int, pointers: tuple[int, ...],
                 avoid: frozenset[str] = frozenset()) -> None:
        self.rcode = Rcode(answer[3] & 0xF).name
        self.headers = _entry(answer, qend, self.rcode, "")[0]
        self._qend = qend
        self._tail = answer[qend:]
        self._pointers = pointers
        self.tails: dict[int, bytes] = {qend: self._tail}
        self.avoid = avoid

    def tail(self, qend: int) -> bytes:
        """The tail for a question ending at ``qend`` (at most ~250 of them)."""
        out = bytearray(self._tail)
        shift = qend - self._qend
        for p in self._pointers:
            target = ((out[p] & 0x3F) << 8 | out[p + 1]) + shift
            out[p], out[p + 1] = 0xC0 | target >> 8, target & 0xFF
        tail = self.tails[qend] = bytes(out)
        return tail

    @classmethod
    def learn(cls, answer: bytes, qend: int, anchor_start: int, *, wildcard: bool = False,
              avoid: frozenset[str] = frozenset()) -> _Template | None:
        """A template from a slow answer, or None if it is not of the form the
        patching reproduces (then that question takes the slow path). With
        ``wildcard``, the answer section may hold RRsets, and an owner name
        may point at the whole qname."""
        if answer[2] & _TC or (not wildcard and answer[6:8] != b"\x00\x00"):
            return None
        pointers: list[int] = []
        pos = qend
        n = len(answer)

        def name(owner: bool) -> bool:
            nonlocal pos
            while pos < n:
                length = answer[pos]
                if length == 0:
                    pos += 1
                    return True
                if length & 0xC0 == 0xC0:
                    if pos + 1 >= n:
                        return False
                    target = (length & 0x3F) << 8 | answer[pos + 1]
                    if wildcard and owner and target == 12:
                        pos += 2  # the qname itself, 0xC00C for every question
                        return True
                    # Into the anchor or the tail only, never the rest of the qname.
                    if not (anchor_start <= target < qend - 4 or qend <= target < pos):
                        return False
                    pointers.append(pos - qend)
                    pos += 2
                    return True
                if length > 63:
                    return False
                pos += 1 + length
            return False

        def record() -> bool:
            nonlocal pos
            if not name(True) or pos + 10 > n:
                return False
            rtype = answer[pos] << 8 | answer[pos + 1]
            end = pos + 10 + (answer[pos + 8] << 8 | answer[pos + 9])
            pos += 10
            if rtype in (A, AAAA, OPT):
                pos = end
            elif rtype in (CNAME, NS):
                name(False)
            elif rtype == SRV:
                pos += 6
                name(False)
            elif rtype == SOA:
                if not (name(False) and name(False)):
                    return False
                pos += 20
            else:
                return False
            return pos == end

        count = sum((answer[i] << 8 | answer[i + 1]) for i in (6, 8, 10))
        for _ in range(count):
            if not record():
                return None
        if pos != n:
            return None
        return cls(answer, qend, tuple(pointers), avoid)


@dataclass(frozen=True)
class _ZoneKey:
    """A served zone as the negative fast path sees it."""

    origin: str
    dotted: str  # "." + origin: the suffix test
    # Suffixes of the SOA's names strictly inside the zone (e.g. ns.<zone>,
    # hostmaster.<zone>), longest first, each with its dotted form: the anchors.
    anchors: tuple[tuple[str, str], ...]


def _zone_keys(snapshot: Snapshot) -> tuple[_ZoneKey, ...]:
    out = []
    for z in snapshot.zones:
        soa = z.soa.rdata[0]
        assert isinstance(soa, SoaData)
        found = set()
        for n in (soa.mname, soa.rname):
            labels = n.rstrip(".").split(".")
            for i in range(len(labels)):
                suffix = ".".join(labels[i:]) + "."
                if suffix.endswith("." + z.origin) and suffix != z.origin:
                    found.add(suffix)
        anchors = tuple((a, "." + a) for a in sorted(found, key=len, reverse=True))
        out.append(_ZoneKey(z.origin, "." + z.origin, anchors))
    # Most specific zone first, as Snapshot.find_zone chooses.
    return tuple(sorted(out, key=lambda k: len(k.origin), reverse=True))


@dataclass
class _Variants:
    """Cached answers of a weighted name, one per variant, filled as drawn."""

    group: Weighted
    wires: list[Entry | None]


class Answerer:
    """Answers queries from one snapshot. A new snapshot gets a new Answerer;
    :meth:`evolve` hands it the cached answers that are still right. Nothing a
    query can see is ever half-updated: the successor is complete before the
    server's one reference is swapped."""

    def __init__(
        self,
        snapshot: Snapshot,
        *,
        stats: Stats,
        allow_transfer: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network] = (),
    ) -> None:
        self.snapshot = snapshot
        self.stats = stats
        self.allow_transfer = tuple(allow_transfer)
        # question → answer template; for a weighted name, one template per variant.
        self._cache: dict[bytes, Entry | _Variants] = {}
        # question → the names its answer depended on, and name → those questions.
        self._deps: dict[bytes, tuple[str, ...]] = {}
        self._dependents: dict[str, set[bytes]] = {}
        # (anchor, rcode, EDNS shape) → template; they carry the SOA serial, so
        # they are per snapshot (learnt again after a swap: one slow answer each).
        self._templates: dict[tuple[str, int, int], _Template | None] = {}
        self._zones = _zone_keys(snapshot)

    @property
    def cache_size(self) -> int:
        return len(self._cache)

    def evolve(self, snapshot: Snapshot, changed: frozenset[str] | None) -> Answerer:
        """The Answerer for ``snapshot``, keeping every cached answer that depended
        on no name in ``changed`` (None: anything may have changed, keep nothing).

        Takes this Answerer's cache (no copy: the work is proportional to what
        changed), so this one answers on through the slow path from now on."""
        new = Answerer(snapshot, stats=self.stats, allow_transfer=self.allow_transfer)
        old = self.snapshot
        if (changed is None or old.ready != snapshot.ready
                or [(z.origin, z.ns) for z in old.zones]
                != [(z.origin, z.ns) for z in snapshot.zones]):
            return new
        # Answers carrying a SOA (negatives after a CNAME, SOA/ANY at the apex)
        # depend on the zone origin; the serial changes with every snapshot.
        gone = set(changed)
        gone.update(z.origin for z, was in zip(snapshot.zones, old.zones, strict=True)
                    if z.soa != was.soa)
        cache, deps, dependents = self._cache, self._deps, self._dependents
        self._cache, self._deps, self._dependents = {}, {}, {}
        for name in gone:
            for key in dependents.pop(name, ()):
                _forget(key, cache, deps, dependents)
        new._cache, new._deps, new._dependents = cache, deps, dependents
        return new

    # ---- entry points ------------------------------------------------------

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
            if counts == _COUNTS_NO_EDNS:
                qend = n
                entry = self._cache.get(data[12:].lower() + _NO_EDNS)
                limit = MAX_TCP if tcp else 512
            elif (counts == _COUNTS_EDNS and data[n - 11:n - 8] == _OPT_HEAD
                  and not data[n - 5] and not data[n - 2] and not data[n - 1]):
                qend = n - 11
                entry = self._cache.get(data[12:qend].lower()
                                        + (_EDNS_DO if data[n - 4] & 0x80 else _EDNS))
                limit = MAX_TCP if tcp else max(512, data[n - 8] << 8 | data[n - 7])
            else:
                entry = None
            if type(entry) is tuple and entry[4] <= limit:
                stats = self.stats
                stats.fast_hits += 1
                stats.answers[(entry[2], entry[3])] += 1
                return (data[:2] + entry[0][(data[2] & _RD) | (data[3] & _CD) >> 3]
                        + data[12:qend] + entry[1])
        shape = fast_shape(data, tcp)
        variant = None
        learn: tuple[str, int, int] | None = None
        if shape is not None:
            qend, key, limit, edns = shape
            entry = self._cache.get(key)
            hit: Entry | None = None
            if entry is None:
                negative = self._negative(key, qend)
                if negative is not None:
                    learn = (negative[0], negative[1], edns)
                    t = self._templates.get(learn)
                    if t is not None:
                        tail = t.tails.get(qend) or t.tail(qend)
                        if qend + len(tail) <= limit and not (t.avoid
                                                              and negative[3] in t.avoid):
                            stats = self.stats
                            stats.fast_hits += 1
                            stats.template_hits += 1
                            stats.answers[(t.rcode, negative[2])] += 1
                            return (data[:2] + t.headers[(data[2] & _RD) | (data[3] & _CD) >> 3]
                                    + data[12:qend] + tail)
                        learn = None
                    elif learn in self._templates:
                        learn = None  # that shape cannot be templated: slow path
                    if learn is not None and learn[0][:1] == "*":
                        learn = None  # a wildcard's template is learnt in _slow
            elif isinstance(entry, _Variants):  # weighted: a fresh draw for every query
                variant = entry.group.pick(random.random())
                hit = entry.wires[variant]
            else:
                hit = entry
            if hit is not None and hit[4] <= limit:
                self.stats.fast_hits += 1
                self.stats.answers[(hit[2], hit[3])] += 1
                return (data[:2] + hit[0][(data[2] & _RD) | (data[3] & _CD) >> 3]
                        + data[12:qend] + hit[1])
        try:
            out = self._slow(data, tcp=tcp, client=client, shape=shape, variant=variant)
        except Exception:  # no input may take the server down; count and drop
            log.exception("internal error answering a query")
            self.stats.problems["internal_error"] += 1
            return None
        if not out:
            return None
        if learn is not None and shape is not None:
            anchor_start = shape[0] - 4 - (len(learn[0]) + 1 if learn[0] else 0)
            self._templates[learn] = _Template.learn(out[0], shape[0], anchor_start)
        return out[0]

    def _negative(self, key: bytes, qend: int) -> tuple[str, int, str, str] | None:
        """(anchor, rcode, qtype name, "") when the answer to the question in
        ``key`` has an empty answer section (NXDOMAIN, NODATA, REFUSED,
        SERVFAIL); (wildcard, qtype, qtype name, the qname's label below the
        closest encloser) when a wildcard answers it (RFC 4592); else None.
        Mirrors :meth:`Snapshot.lookup` for exactly those cases."""
        qlen = qend - 16
        qtype = key[qlen] << 8 | key[qlen + 1]
        qclass = key[qlen + 2] << 8 | key[qlen + 3]
        if qclass != CLASS_IN or qtype in (AXFR, IXFR):
            return None
        name = wire_name(key)
        if name is None:
            return None
        snap = self.snapshot
        for zone in self._zones:
            if name == zone.origin or name.endswith(zone.dotted):
                break
        else:
            return "", Rcode.REFUSED, qtype_name(qtype), ""
        if not snap.ready:
            return "", Rcode.SERVFAIL, qtype_name(qtype), ""
        if name not in snap.names:
            rcode = Rcode.NXDOMAIN
            if snap.wildcards:  # Snapshot.wildcard_source, inlined
                ce = name
                while ce:
                    ce = ce[ce.find(".") + 1:]
                    if ce in snap.names:
                        break
                if ce in snap.wildcards:
                    source = WILDCARD + ce
                    if source in snap.unusable:
                        return "", Rcode.SERVFAIL, qtype_name(qtype), ""
                    if source in snap.weighted:
                        return None
                    sets = snap.rrsets.get(source)
                    if sets and (qtype in sets or CNAME in sets if qtype != ANY
                                 else any(t in sets for t in ANY_PREFERENCE)):
                        below = name[:len(name) - len(ce) - 1]
                        return source, qtype, qtype_name(qtype), below[below.rfind(".") + 1:]
                    rcode = Rcode.NOERROR
        else:
            if name in snap.unusable:
                return "", Rcode.SERVFAIL, qtype_name(qtype), ""
            if name in snap.weighted:
                return None
            sets = snap.rrsets.get(name)
            if sets:
                if qtype == ANY:
                    if any(t in sets for t in ANY_PREFERENCE):
                        return None
                elif qtype in sets or CNAME in sets:
                    return None
            rcode = Rcode.NOERROR
        anchor = zone.origin
        for candidate, dotted in zone.anchors:
            if name == candidate or name.endswith(dotted):
                anchor = candidate
                break
        return anchor, rcode, qtype_name(qtype), ""

    def answer_slow(self, data: bytes, *, tcp: bool = False, client: str = "") -> bytes | None:
        """The slow path alone, bypassing and not filling the wire cache."""
        out = self._slow(bytes(data), tcp=tcp, client=client, shape=None)
        return out[0] if out else None

    def respond_tcp(self, data: bytes, *, client: str = "") -> list[bytes]:
        """Like :meth:`respond`, but a zone transfer may take several messages."""
        shape = fast_shape(data, True)
        if shape is not None and data[shape[0] - 4:shape[0] - 2] not in (_AXFR, _IXFR):
            # The common shape and not a transfer: no dnslib parse to find out.
            out = self.respond(data, tcp=True, client=client)
            return [out] if out is not None else []
        try:
            transfer = self._transfer(data, client)
        except Exception:
            log.exception("internal error answering a transfer")
            self.stats.problems["internal_error"] += 1
            return []
        if transfer is not None:
            return transfer
        out = self.respond(data, tcp=True, client=client)
        return [out] if out is not None else []

    # ---- slow path ---------------------------------------------------------

    def _error(self, data: bytes, rcode: Rcode, kind: str) -> list[bytes]:
        """A header-only error answer (FORMERR, NOTIMP) keeping ID, opcode and RD."""
        self.stats.problems[kind] += 1
        qid = data[:2]
        flags = ((data[2] & 0x79) | _QR) << 8 | int(rcode)  # opcode + RD copied
        return [qid + struct.pack("!HHHHH", flags, 0, 0, 0, 0)]

    def _parse(self, data: bytes) -> tuple[DNSRecord | None, list[bytes] | None]:
        if len(data) < 12:
            self.stats.problems["dropped_short"] += 1
            return None, []
        try:
            req = DNSRecord.parse(data)
        except Exception:
            return None, self._error(data, Rcode.FORMERR, "formerr_unparsable")
        if data[2] & _QR:
            return None, self._error(data, Rcode.FORMERR, "formerr_qr_set")
        if (data[2] >> 3) & 0xF != 0:
            return None, self._error(data, Rcode.NOTIMP, "notimp_opcode")
        if len(req.questions) != 1:
            return None, self._error(data, Rcode.FORMERR, "formerr_question_count")
        if sum(1 for rr in req.ar if rr.rtype == OPT) > 1:
            return None, self._error(data, Rcode.FORMERR, "formerr_multiple_opt")
        return req, None

    def _slow(self, data: bytes, *, tcp: bool, client: str, shape: Shape | None,
              variant: int | None = None) -> list[bytes]:
        self.stats.slow += 1
        req, err = self._parse(data)
        if req is None:
            assert err is not None
            return err
        q = req.questions[0]
        opt = next((rr for rr in req.ar if rr.rtype == OPT), None)
        do = bool(opt is not None and opt.ttl & 0x8000)
        limit = MAX_TCP if tcp else (max(512, opt.rclass) if opt is not None else 512)
        qname = DNSLabel([label.lower() for label in q.qname.label])
        qtext = str(qname).lower()  # odd bytes escaped (\ddd, \.)
        header = DNSHeader(id=req.header.id, qr=1, rd=req.header.rd, ra=0)
        header.cd = req.header.cd
        resp = DNSRecord(header, q=DNSQuestion(qname, q.qtype, q.qclass))
        qtype_n = qtype_name(q.qtype)

        if opt is not None and (opt.ttl >> 16) & 0xFF != 0:
            # RFC 6891 6.1.3: unknown version -> BADVERS, answered with version 0.
            self.stats.problems["badvers"] += 1
            resp.add_ar(EDNS0(udp_len=OUR_UDP_SIZE, ext_rcode=BADVERS >> 4,
                              flags="do" if do else ""))
            self.stats.answers[("BADVERS", qtype_n)] += 1
            return [self._finish(resp, data, limit)]

        cacheable = shape is not None
        if q.qclass not in (CLASS_IN, CLASS_ANY):
            lookup = Lookup(Rcode.REFUSED, authoritative=False)
        elif q.qtype in (AXFR, IXFR):
            cacheable = False
            lookup = Lookup(Rcode.REFUSED, authoritative=False)
            if self._transfer_allowed(client) and not tcp:
                header.tc = 1  # transfers only over TCP: tell the client to retry there
                lookup = Lookup(Rcode.NOERROR, authoritative=True)
            else:
                self.stats.problems["transfer_refused"] += 1
        else:
            lookup = self.snapshot.lookup(qtext, q.qtype, variant=variant)
            cacheable = cacheable and lookup.cacheable

        header.rcode = int(lookup.rcode)
        header.aa = int(lookup.authoritative)
        for section, add in ((lookup.answer, resp.add_answer), (lookup.authority, resp.add_auth),
                             (lookup.additional, resp.add_ar)):
            for rrset in section:
                # The qname's own RRsets take its labels as they are (a name the
                # wildcard answers may hold any byte).
                for rr in to_rrs(rrset, qname if rrset.name == qtext else None):
                    add(rr)
        if opt is not None:
            resp.add_ar(EDNS0(udp_len=OUR_UDP_SIZE, flags="do" if do else ""))
        out = self._finish(resp, data, limit)
        rcode_n = lookup.rcode.name
        if len(out) > limit:
            self.stats.problems["truncated"] += 1
            header.tc = 1
            resp.rr, resp.auth = [], []
            resp.ar = [rr for rr in resp.ar if rr.rtype == OPT]
            out = self._finish(resp, data, limit)
        elif cacheable and shape is not None and lookup.wildcard is not None:
            # One template per wildcard, qtype and EDNS shape, never an entry per
            # qname; as for cached answers, only for the types the zones serve.
            if lookup.answer and q.qtype in CACHED_QTYPES:
                self._learn_wildcard(out, shape, qtext, q.qtype, lookup)
        elif cacheable and shape is not None and lookup.answer and q.qtype in CACHED_QTYPES:
            # Admission by existence: a non-empty answer section means the qname
            # exists, so what enters is bounded by the zone (issue 15).
            key = shape[1]
            entry = _entry(out, shape[0], rcode_n, qtype_n)
            if key not in self._cache:
                if len(self._cache) >= MAX_CACHE:  # memory ceiling only: oldest out
                    _forget(next(iter(self._cache)), self._cache, self._deps,
                            self._dependents)
                deps = _dependencies(qtext, lookup)
                self._deps[key] = deps
                for name in deps:
                    self._dependents.setdefault(name, set()).add(key)
            if lookup.variant is None:
                self._cache[key] = entry
            else:
                group = self.snapshot.weighted[qtext]
                cached = self._cache.get(key)
                if not isinstance(cached, _Variants):
                    cached = _Variants(group, [None] * len(group.variants))
                    self._cache[key] = cached
                cached.wires[lookup.variant] = entry
        self.stats.answers[(rcode_n, qtype_n)] += 1
        return [out]

    def _learn_wildcard(self, out: bytes, shape: Shape, qname: str, qtype: int,
                        lookup: Lookup) -> None:
        """The template of the wildcard that answered ``qname``, for this qtype
        and EDNS shape, if this answer can serve as one (RFC 4592, issue 16)."""
        source = lookup.wildcard
        assert source is not None
        ce = source[len(WILDCARD):]
        dotted = "." + ce
        avoid = frozenset(n[:-len(dotted)].rsplit(".", 1)[-1] for n in _names_in(lookup)
                          if n != qname and n.endswith(dotted))
        below = qname[:-len(dotted)]
        if below[below.rfind(".") + 1:] in avoid:
            return  # this qname's bytes are its own; the next one may teach the template
        t = _Template.learn(out, shape[0], shape[0] - 4 - len(ce) - 1, wildcard=True,
                            avoid=avoid)
        if t is not None:
            self._templates[(source, qtype, shape[3])] = t

    @staticmethod
    def _finish(resp: DNSRecord, query: bytes, limit: int) -> bytes:
        """Pack, then splice the question exactly as asked over the lower-cased one."""
        out = bytes(resp.pack())
        qlen = _question_len(query)
        if qlen and out[12:12 + qlen].lower() == query[12:12 + qlen].lower():
            out = out[:12] + query[12:12 + qlen] + out[12 + qlen:]
        return out

    # ---- zone transfer (RFC 5936) -------------------------------------------

    def _transfer_allowed(self, client: str) -> bool:
        if not client or not self.allow_transfer:
            return False
        try:
            ip = ipaddress.ip_address(client)
        except ValueError:
            return False
        return any(ip in net for net in self.allow_transfer)

    def _transfer(self, data: bytes, client: str) -> list[bytes] | None:
        """AXFR (and IXFR, answered with a full transfer, RFC 1995 4) over TCP."""
        if len(data) < 12 or data[2] & 0xFE:
            return None
        try:
            req = DNSRecord.parse(data)
        except Exception:
            return None
        if len(req.questions) != 1 or req.questions[0].qtype not in (AXFR, IXFR):
            return None
        if not self._transfer_allowed(client):
            return None  # the normal path answers REFUSED and counts it
        q = req.questions[0]
        qname = str(q.qname).lower()
        zone = next((z for z in self.snapshot.zones if z.origin == qname), None)
        if zone is None or not self.snapshot.ready:
            header = DNSHeader(id=req.header.id, qr=1, rd=req.header.rd, ra=0,
                               rcode=int(Rcode.NOTAUTH))
            return [DNSRecord(header, q=q).pack()]
        records = [*self.snapshot.zone_records(zone), zone.soa]
        rrs = [rr for rrset in records for rr in to_rrs(rrset)]
        out = []
        for start in range(0, len(rrs), AXFR_RRS_PER_MESSAGE):
            header = DNSHeader(id=req.header.id, qr=1, aa=1, rd=req.header.rd, ra=0)
            msg = DNSRecord(header, q=q if start == 0 else None)
            for rr in rrs[start:start + AXFR_RRS_PER_MESSAGE]:
                msg.add_answer(rr)
            out.append(msg.pack())
        self.stats.answers[("NOERROR", qtype_name(q.qtype))] += 1
        return out


def _forget(key: bytes, cache: dict[bytes, Entry | _Variants],
            deps: dict[bytes, tuple[str, ...]], dependents: dict[str, set[bytes]]) -> None:
    """Drop one cached answer and its dependency edges."""
    cache.pop(key, None)
    for name in deps.pop(key, ()):
        keys = dependents.get(name)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del dependents[name]


def _dependencies(qname: str, lookup: Lookup) -> tuple[str, ...]:
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


def _names_in(lookup: Lookup) -> set[str]:
    """Every name written in an answer: owners and names in RDATA."""
    out: set[str] = set()
    for section in (lookup.answer, lookup.authority, lookup.additional):
        for rrset in section:
            out.add(rrset.name)
            for rd in rrset.rdata:
                if isinstance(rd, str) and rrset.rtype in (CNAME, NS):
                    out.add(rd)
                elif isinstance(rd, tuple):
                    out.add(rd[3])
                elif isinstance(rd, SoaData):
                    out.update((rd.mname, rd.rname))
    return out


def _question_len(data: bytes) -> int:
    """Length of the (uncompressed) first question, or 0 if it cannot be spliced."""
    n = len(data)
    i = 12
    while i < n:
        length = data[i]
        if length == 0:
            end = i + 5
            return end - 12 if end <= n else 0
        if length > 63:
            return 0
        i += length + 1
    return 0


def to_rrs(rrset: RRset, owner: DNSLabel | None = None) -> list[RR]:
    """dnslib RRs for one RRset (named ``owner`` if given)."""
    out = []
    for rd in rrset.rdata:
        if rrset.rtype == A:
            rdata = dnslib.A(rd)
        elif rrset.rtype == AAAA:
            rdata = dnslib.AAAA(rd)
        elif rrset.rtype == CNAME:
            rdata = dnslib.CNAME(rd)
        elif rrset.rtype == NS:
            rdata = dnslib.NS(rd)
        elif rrset.rtype == SRV:
            assert isinstance(rd, tuple)
            rdata = dnslib.SRV(priority=rd[0], weight=rd[1], port=rd[2], target=rd[3])
        elif rrset.rtype == SOA:
            assert isinstance(rd, SoaData)
            rdata = dnslib.SOA(rd.mname, rd.rname,
                           (rd.serial, rd.refresh, rd.retry, rd.expire, rd.minimum))
        else:  # pragma: no cover - the registry builds only the types above
            raise ValueError(f"unsupported rtype {rrset.rtype}")
        out.append(RR(owner or rrset.name, rrset.rtype, CLASS_IN, rrset.ttl, rdata))
    return out
