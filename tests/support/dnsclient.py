"""Ask a DNS server with real clients: dnspython and the real ``dig``."""

from __future__ import annotations

import subprocess
from typing import Any

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from tests.support.process import AliasdProcess


def query(server: tuple[str, int], name: str, rdtype: dns.rdatatype.RdataType | str = "A", *,
          tcp: bool = False, use_edns: int | bool = False, payload: int = 1232,
          timeout: float = 3.0, **kw: Any) -> dns.message.Message:
    """One query with dnspython (RD set, as a stub resolver sends it); no retries."""
    q = dns.message.make_query(name, rdtype, use_edns=use_edns, payload=payload, **kw)
    if tcp:
        return dns.query.tcp(q, server[0], port=server[1], timeout=timeout)
    return dns.query.udp(q, server[0], port=server[1], timeout=timeout, ignore_trailing=False)


def answers(msg: dns.message.Message, rdtype: str) -> list[str]:
    t = dns.rdatatype.from_text(rdtype)
    return sorted(rd.to_text() for rrset in msg.answer if rrset.rdtype == t for rd in rrset)


def dig_short(server: tuple[str, int], *args: str) -> list[str]:
    """``dig +short``'s answer lines; [] when dig reports an error (``;;`` lines)."""
    out = dig(server, "+short", *args)
    return [] if ";;" in out else out.split()


def dig(server: tuple[str, int], *args: str) -> str:
    """Run the real ``dig`` and return its stdout."""
    out = subprocess.run(
        ["dig", f"@{server[0]}", "-p", str(server[1]), "+tries=1", "+time=3", *args],
        capture_output=True, text=True, timeout=30, check=False,
    )
    return out.stdout


def rcode(p: AliasdProcess, name: str) -> str:
    """The rcode of an A query, as text (``NOERROR``, ``NXDOMAIN``...)."""
    return str(dns.rcode.to_text(query(p.dns, name, "A").rcode()))


def a_records(p: AliasdProcess, name: str) -> list[str]:
    return answers(query(p.dns, name, "A"), "A")
