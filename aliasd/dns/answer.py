"""Turning query bytes into answer bytes for one snapshot (pure, CPU-only).

Two paths give byte-identical answers (a property test proves it):

* the **slow path** parses with dnslib, looks the name up in the snapshot and
  packs a response with dnslib;
* the **fast path** recognises the common query shape (one question, optional
  OPT, no other records) from the raw bytes, finds a wire-format answer that
  the slow path produced earlier for this snapshot, keyed by the lower-cased
  question, and patches in the message ID, the RD/CD bits and the question as
  asked (so 0x20 mixed case comes back exactly).

The slow path always builds its answer for the lower-cased question and then
splices the question bytes as asked back in; that is what makes the cached
template valid for every casing of the same name.
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

from aliasd.zone import (
    AAAA,
    ANY,
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
MAX_CACHE = 100_000
BADVERS = 16
AXFR_RRS_PER_MESSAGE = 500

_QR, _AA, _TC, _RD = 0x80, 0x04, 0x02, 0x01  # in header byte 2
_CD = 0x10  # in header byte 3
_COUNTS_NO_EDNS = b"\x00\x01\x00\x00\x00\x00\x00\x00"
_COUNTS_EDNS = b"\x00\x01\x00\x00\x00\x00\x00\x01"


LATENCY_BUCKETS = (0.00002, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01, 0.05)
LATENCY_SAMPLE = 16  # a power of two: the hot path tests a bit mask


@dataclass
class Stats:
    """Counters read by the metrics endpoint: answers by (rcode, qtype name),
    and every malformed or refused input by kind. Plain ints: the hot path
    pays a dict increment, not a lock."""

    answers: Counter[tuple[str, str]] = field(default_factory=Counter)
    problems: Counter[str] = field(default_factory=Counter)
    fast_hits: int = 0
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


@dataclass(frozen=True)
class _Shape:
    """What the fast parser learned about a query of the common shape."""

    qend: int
    key: bytes
    limit: int


def fast_shape(data: bytes, tcp: bool) -> _Shape | None:
    """Recognise ``QUERY, 1 question, [1 OPT v0]`` from the raw bytes, or None."""
    n = len(data)
    if n < 17 or data[2] & 0xFE or data[3] & 0x4F:
        # QR/opcode/AA/TC set, or Z/rcode bits set: not a plain query.
        return None
    counts = data[4:12]
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
    if counts == _COUNTS_NO_EDNS:
        if qend != n:
            return None
        return _Shape(qend, data[12:qend].lower(), MAX_TCP if tcp else 512)
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
    do = data[qend + 7] & 0x80
    limit = MAX_TCP if tcp else max(512, udp)
    return _Shape(qend, data[12:qend].lower() + (b"\x80" if do else b"\x00"), limit)


@dataclass
class _Variants:
    """Cached answers of a weighted name, one per variant, filled as drawn."""

    group: Weighted
    wires: list[tuple[bytes, str, str] | None]


class Answerer:
    """Answers queries from one snapshot. A new snapshot gets a new Answerer
    (and so an empty answer cache); nothing here is ever mutated by an update."""

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
        self._cache: dict[bytes, tuple[bytes, str, str] | _Variants] = {}

    # ---- entry points ------------------------------------------------------

    def respond(self, data: bytes, *, tcp: bool = False, client: str = "") -> bytes | None:
        """The answer to one query, or None when it must be dropped."""
        if type(data) is not bytes:
            data = bytes(data)
        shape = fast_shape(data, tcp)
        variant = None
        if shape is not None:
            entry = self._cache.get(shape.key)
            if isinstance(entry, _Variants):  # weighted: a fresh draw for every query
                variant = entry.group.pick(random.random())
                hit = entry.wires[variant]
            else:
                hit = entry
            if hit is not None and len(hit[0]) <= shape.limit:
                tmpl, rcode, qtype = hit
                self.stats.fast_hits += 1
                self.stats.answers[(rcode, qtype)] += 1
                return (data[:2] + bytes((tmpl[2] | (data[2] & _RD), tmpl[3] | (data[3] & _CD)))
                        + tmpl[4:12] + data[12:shape.qend] + tmpl[shape.qend:])
        try:
            out = self._slow(data, tcp=tcp, client=client, shape=shape, variant=variant)
        except Exception:  # no input may take the server down; count and drop
            log.exception("internal error answering a query")
            self.stats.problems["internal_error"] += 1
            return None
        return out[0] if out else None

    def answer_slow(self, data: bytes, *, tcp: bool = False, client: str = "") -> bytes | None:
        """The slow path alone, bypassing and not filling the wire cache."""
        out = self._slow(bytes(data), tcp=tcp, client=client, shape=None)
        return out[0] if out else None

    def respond_tcp(self, data: bytes, *, client: str = "") -> list[bytes]:
        """Like :meth:`respond`, but a zone transfer may take several messages."""
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

    def _slow(self, data: bytes, *, tcp: bool, client: str, shape: _Shape | None,
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
            lookup = self.snapshot.lookup(str(qname).lower(), q.qtype, variant=variant)
            cacheable = cacheable and lookup.cacheable

        header.rcode = int(lookup.rcode)
        header.aa = int(lookup.authoritative)
        for section, add in ((lookup.answer, resp.add_answer), (lookup.authority, resp.add_auth),
                             (lookup.additional, resp.add_ar)):
            for rrset in section:
                for rr in to_rrs(rrset):
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
        elif cacheable and shape is not None and len(self._cache) < MAX_CACHE:
            tmpl = b"\x00\x00" + bytes((out[2] & ~_RD & 0xFF, out[3] & ~_CD & 0xFF)) + out[4:]
            if lookup.variant is None:
                self._cache[shape.key] = (tmpl, rcode_n, qtype_n)
            else:
                group = self.snapshot.weighted[str(qname).lower()]
                cached = self._cache.get(shape.key)
                if not isinstance(cached, _Variants):
                    cached = _Variants(group, [None] * len(group.variants))
                    self._cache[shape.key] = cached
                cached.wires[lookup.variant] = (tmpl, rcode_n, qtype_n)
        self.stats.answers[(rcode_n, qtype_n)] += 1
        return [out]

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


def to_rrs(rrset: RRset) -> list[RR]:
    """dnslib RRs for one RRset."""
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
        out.append(RR(rrset.name, rrset.rtype, CLASS_IN, rrset.ttl, rdata))
    return out
