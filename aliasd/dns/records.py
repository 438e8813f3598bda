"""Snapshot RRsets as dnslib records, for the answers dnslib packs."""

from __future__ import annotations

import dnslib
from dnslib import RR, DNSLabel

from aliasd.zone import AAAA, CNAME, NS, SOA, SRV, A, RRset, SoaData

CLASS_IN = 1


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
        else:  # pragma: no cover - the resolver builds only the types above
            raise ValueError(f"unsupported rtype {rrset.rtype}")
        out.append(RR(owner or rrset.name, rrset.rtype, CLASS_IN, rrset.ttl, rdata))
    return out
