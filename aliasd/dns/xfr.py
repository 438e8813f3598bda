"""Zone transfer: AXFR over TCP (RFC 5936), and IXFR answered with a full
transfer (RFC 1995 4), to the clients an allow-list names."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from dnslib import DNSHeader, DNSRecord

from aliasd.dns.records import to_rrs
from aliasd.dns.stats import Stats, qtype_name
from aliasd.zone import AXFR, IXFR, Rcode, Snapshot

AXFR_RRS_PER_MESSAGE = 500
Networks = Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]


def transfer_allowed(client: str, allow: Networks) -> bool:
    """Whether ``client`` (an IP address as text) may transfer a zone."""
    if not client or not allow:
        return False
    try:
        ip = ipaddress.ip_address(client)
    except ValueError:
        return False
    return any(ip in net for net in allow)


def transfer(snapshot: Snapshot, data: bytes, *, client: str, allow: Networks,
             stats: Stats) -> list[bytes] | None:
    """The messages of a zone transfer asked for by ``data``; None when ``data``
    is not a transfer that ``client`` may have (the normal path answers it:
    REFUSED, counted)."""
    if len(data) < 12 or data[2] & 0xFE:
        return None
    try:
        req = DNSRecord.parse(data)
    except Exception:
        return None
    if len(req.questions) != 1 or req.questions[0].qtype not in (AXFR, IXFR):
        return None
    if not transfer_allowed(client, allow):
        return None
    q = req.questions[0]
    qname = str(q.qname).lower()
    zone = next((z for z in snapshot.zones if z.origin == qname), None)
    if zone is None or not snapshot.ready:
        header = DNSHeader(id=req.header.id, qr=1, rd=req.header.rd, ra=0,
                           rcode=int(Rcode.NOTAUTH))
        return [DNSRecord(header, q=q).pack()]
    records = [*snapshot.zone_records(zone), zone.soa]
    rrs = [rr for rrset in records for rr in to_rrs(rrset)]
    out = []
    for start in range(0, len(rrs), AXFR_RRS_PER_MESSAGE):
        header = DNSHeader(id=req.header.id, qr=1, aa=1, rd=req.header.rd, ra=0)
        msg = DNSRecord(header, q=q if start == 0 else None)
        for rr in rrs[start:start + AXFR_RRS_PER_MESSAGE]:
            msg.add_answer(rr)
        out.append(msg.pack())
    stats.answers[("NOERROR", qtype_name(q.qtype))] += 1
    return out
