"""The slow path: any query, parsed and answered with dnslib.

It answers what the fast path does not recognise (errors, EDNS versions,
transfers over UDP, truncation) and everything the first time, which is where
the fast path learns its cached answers and templates from. It always builds
the answer for the lower-cased question, then splices the question bytes as
asked back in: that is what makes a cached answer valid for every casing of
the same name (0x20 mixed case comes back exactly).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from dnslib import EDNS0, DNSHeader, DNSLabel, DNSQuestion, DNSRecord

from aliasd.dns.records import CLASS_IN, to_rrs
from aliasd.dns.stats import Stats, qtype_name
from aliasd.dns.wire import MAX_TCP, MAX_UDP, QR, question_len, udp_limit
from aliasd.dns.xfr import Networks, transfer_allowed
from aliasd.zone import AXFR, IXFR, OPT, Lookup, Rcode, Snapshot

CLASS_ANY = 255
# RFC 6891 6.2.5 / DNS flag day 2020: advertise what we send, to avoid fragmentation.
OUR_UDP_SIZE = MAX_UDP
BADVERS = 16


class SlowAnswer(NamedTuple):
    """What the slow path answered."""

    wire: bytes | None  # None: drop the query
    qname: str = ""  # lower-cased text, dnslib's escapes included
    qtype: int = 0
    # The lookup the answer was built from, when the answer may be reused
    # (cached or templated): not truncated, no random draw but the qname's own.
    lookup: Lookup | None = None


def answer(snapshot: Snapshot, data: bytes, *, tcp: bool, client: str, allow: Networks,
           stats: Stats, variant: int | None = None) -> SlowAnswer:
    """The answer to ``data``; ``variant``: the one to give a weighted qname."""
    stats.slow += 1
    req = _parse(data, stats)
    if not isinstance(req, DNSRecord):
        return SlowAnswer(req)
    q = req.questions[0]
    opt = next((rr for rr in req.ar if rr.rtype == OPT), None)
    do = bool(opt is not None and opt.ttl & 0x8000)
    limit = MAX_TCP if tcp else udp_limit(opt.rclass if opt is not None else 0)
    qname = DNSLabel([label.lower() for label in q.qname.label])
    qtext = str(qname).lower()  # odd bytes escaped (\ddd, \.)
    header = DNSHeader(id=req.header.id, qr=1, rd=req.header.rd, ra=0)
    header.cd = req.header.cd
    resp = DNSRecord(header, q=DNSQuestion(qname, q.qtype, q.qclass))
    qtype_n = qtype_name(q.qtype)

    if opt is not None and (opt.ttl >> 16) & 0xFF != 0:
        # RFC 6891 6.1.3: unknown version -> BADVERS, answered with version 0.
        stats.problems["badvers"] += 1
        resp.add_ar(EDNS0(udp_len=OUR_UDP_SIZE, ext_rcode=BADVERS >> 4,
                          flags="do" if do else ""))
        stats.answers[("BADVERS", qtype_n)] += 1
        return SlowAnswer(_finish(resp, data), qtext, q.qtype)

    reusable = True
    if q.qclass not in (CLASS_IN, CLASS_ANY):
        lookup = Lookup(Rcode.REFUSED, authoritative=False)
    elif q.qtype in (AXFR, IXFR):
        reusable = False
        lookup = Lookup(Rcode.REFUSED, authoritative=False)
        if transfer_allowed(client, allow) and not tcp:
            header.tc = 1  # transfers only over TCP: tell the client to retry there
            lookup = Lookup(Rcode.NOERROR, authoritative=True)
        else:
            stats.problems["transfer_refused"] += 1
    else:
        lookup = snapshot.lookup(qtext, q.qtype, variant=variant)
        reusable = lookup.cacheable

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
    out = _finish(resp, data)
    if len(out) > limit:
        stats.problems["truncated"] += 1
        header.tc = 1
        resp.rr, resp.auth = [], []
        resp.ar = [rr for rr in resp.ar if rr.rtype == OPT]
        out = _finish(resp, data)
        reusable = False
    stats.answers[(lookup.rcode.name, qtype_n)] += 1
    return SlowAnswer(out, qtext, q.qtype, lookup if reusable else None)


def _error(data: bytes, rcode: Rcode, kind: str, stats: Stats) -> bytes:
    """A header-only error answer (FORMERR, NOTIMP) keeping ID, opcode and RD."""
    stats.problems[kind] += 1
    flags = ((data[2] & 0x79) | QR) << 8 | int(rcode)  # opcode + RD copied
    return data[:2] + struct.pack("!HHHHH", flags, 0, 0, 0, 0)


def _parse(data: bytes, stats: Stats) -> DNSRecord | bytes | None:
    """The query, or the error answer to send instead (None: drop it)."""
    if len(data) < 12:
        stats.problems["dropped_short"] += 1
        return None
    try:
        req = DNSRecord.parse(data)
    except Exception:
        return _error(data, Rcode.FORMERR, "formerr_unparsable", stats)
    if data[2] & QR:
        return _error(data, Rcode.FORMERR, "formerr_qr_set", stats)
    if (data[2] >> 3) & 0xF != 0:
        return _error(data, Rcode.NOTIMP, "notimp_opcode", stats)
    if len(req.questions) != 1:
        return _error(data, Rcode.FORMERR, "formerr_question_count", stats)
    if sum(1 for rr in req.ar if rr.rtype == OPT) > 1:
        return _error(data, Rcode.FORMERR, "formerr_multiple_opt", stats)
    return req


def _finish(resp: DNSRecord, query: bytes) -> bytes:
    """Pack, then splice the question exactly as asked over the lower-cased one."""
    out = bytes(resp.pack())
    qlen = question_len(query)
    if qlen and out[12:12 + qlen].lower() == query[12:12 + qlen].lower():
        out = out[:12] + query[12:12 + qlen] + out[12 + qlen:]
    return out
