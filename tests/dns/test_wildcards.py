"""RFC 4592 wildcards against a running aliasd, asked by dnspython over UDP and
TCP: the section 2.2.1 example zone as aliases can express it, each of the
RFC's queries with its rcode, answer owner names and the SOA in the authority
section; a flood of names under a wildcard enters no cache."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from tests.support.dnsclient import dig, query
from tests.support.process import AliasdProcess, http_json, metric, run_aliasd
from tests.support.waiting import wait_for

# RFC 4592 2.2.1, with example. → example.internal. (a wildcard directly under
# a zone apex is refused), TXT/MX → A/AAAA (aliasd serves A, AAAA,
# CNAME and SRV), host2 an empty non-terminal through web.host2 (an alias
# cannot be an SRV RRset alone), subdel an alias (aliasd delegates nothing).
# sub.*.example. cannot be expressed: '*' is only valid as the leftmost label.
ZONE_FILE = """
aliases:
  "*.example.internal":               # *.example. TXT, MX
    addresses: [192.0.2.80, "2001:db8::80"]
  host1.example.internal:             # host1.example. A; _ssh._tcp.host1.example. SRV
    addresses: [192.0.2.1]
    ports: [{name: ssh, protocol: TCP, port: 22}]
  web.host2.example.internal:         # _ssh._tcp.host2.example. SRV (host2: empty non-terminal)
    addresses: [192.0.2.2]
  subdel.example.internal:            # subdel.example. NS (a zone cut)
    addresses: [192.0.2.3]
  "*.cn.example.internal":            # RFC 4592 4.3: a CNAME at a wildcard
    cname: host1.example.internal
"""

W4, W6 = "192.0.2.80", "2001:db8::80"
Row = tuple[str, str, str, str, list[tuple[str, str, str]]]
# (RFC 4592 query, qname, qtype, rcode, answer (owner, type, rdata)); an answer
# with no records carries the zone's SOA in the authority section.
TABLE: list[Row] = [
    # Synthesized (the RFC's first list):
    ("host3.example. MX: host3.example. MX",
     "host3.example.internal.", "A", "NOERROR", [("host3.example.internal.", "A", W4)]),
    ("host3.example. A: NODATA, no A at *.example.",
     "host3.example.internal.", "TXT", "NOERROR", []),
    ("foo.bar.example. TXT: foo.bar.example. TXT (bar.example. does not exist)",
     "foo.bar.example.internal.", "AAAA", "NOERROR", [("foo.bar.example.internal.", "AAAA", W6)]),
    # Not synthesized (the RFC's second list):
    ("host1.example. MX: host1.example. exists",
     "host1.example.internal.", "AAAA", "NOERROR", []),
    ("sub.*.example. MX: sub.*.example. exists (not expressible: NXDOMAIN here)",
     "sub.*.example.internal.", "A", "NXDOMAIN", []),
    ("_telnet._tcp.host1.example. SRV: _tcp.host1.example. exists",
     "_telnet._tcp.host1.example.internal.", "SRV", "NXDOMAIN", []),
    ("host.subdel.example. A: subdel.example. exists (a referral there: NXDOMAIN here)",
     "host.subdel.example.internal.", "A", "NXDOMAIN", []),
    ("ghost.*.example. MX: *.example. exists",
     "ghost.*.example.internal.", "A", "NXDOMAIN", []),
    # Beyond the RFC's list:
    ("owner name = qname, its case as asked",
     "HoSt3.ExAmPlE.internal.", "A", "NOERROR", [("HoSt3.ExAmPlE.internal.", "A", W4)]),
    ("host2.example.: an empty non-terminal blocks the wildcard",
     "host2.example.internal.", "A", "NOERROR", []),
    ("x.host2.example.: closest encloser host2.example., no *.host2.example.",
     "x.host2.example.internal.", "A", "NXDOMAIN", []),
    ("example.: the wildcard's parent is not matched",
     "example.internal.", "A", "NOERROR", []),
    ("*.example. itself",
     "*.example.internal.", "A", "NOERROR", [("*.example.internal.", "A", W4)]),
    ("_ssh._tcp.host1.example. SRV",
     "_ssh._tcp.host1.example.internal.", "SRV", "NOERROR",
     [("_ssh._tcp.host1.example.internal.", "SRV", "0 100 22 host1.example.internal.")]),
    ("a wildcard CNAME: owner = qname, chased",
     "x.cn.example.internal.", "A", "NOERROR",
     [("x.cn.example.internal.", "CNAME", "host1.example.internal."),
      ("host1.example.internal.", "A", "192.0.2.1")]),
    ("ANY: one RRset (RFC 8482), synthesized",
     "host9.example.internal.", "ANY", "NOERROR", [("host9.example.internal.", "A", W4)]),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AliasdProcess]:
    tmp = tmp_path_factory.mktemp("wild")
    f = tmp / "aliases.yaml"
    f.write_text(ZONE_FILE)
    with run_aliasd(["--zone", "internal", "--aliases-file", str(f),
                     "--ns-address", "127.0.0.1"], tmp=tmp) as p:
        yield p


def records(msg: dns.message.Message) -> list[tuple[str, str, str]]:
    return [(rs.name.to_text(), dns.rdatatype.to_text(rs.rdtype), rd.to_text())
            for rs in msg.answer for rd in rs]


@pytest.mark.parametrize("row", TABLE, ids=[r[1] + r[2] for r in TABLE])
@pytest.mark.parametrize(("tcp", "edns"), [(False, False), (False, 0), (True, False)],
                         ids=["udp", "udp-edns", "tcp"])
def test_rfc4592_table(server: AliasdProcess, row: Row, tcp: bool, edns: int | bool) -> None:
    _, qname, qtype, rcode, answer = row
    serial = query(server.dns, "internal.", "SOA").answer[0][0].serial
    # Twice: the first answer may be the slow path's, the second the template's.
    for _ in range(2):
        r = query(server.dns, qname, qtype, tcp=tcp, use_edns=edns)
        assert dns.rcode.to_text(r.rcode()) == rcode
        assert r.flags & dns.flags.AA
        assert records(r) == answer
        assert r.question[0].name.to_text() == qname  # as asked, byte for byte
        if answer:
            assert r.authority == []
        else:
            (soa,) = r.authority
            assert (soa.name.to_text(), soa.rdtype, soa.ttl) == ("internal.",
                                                                  dns.rdatatype.SOA, 5)
            assert soa[0].mname.to_text() == "ns.internal." and soa[0].serial == serial


def test_table_with_dig(server: AliasdProcess) -> None:
    out = dig(server.dns, "MiXeD.example.internal.", "A", "+noall", "+answer")
    assert out.split() == ["MiXeD.example.internal.", "30", "IN", "A", W4]
    out = dig(server.dns, "example.internal.", "A")
    assert "status: NOERROR" in out and "ANSWER: 0, AUTHORITY: 1" in out


def test_flood_under_a_wildcard_fills_no_cache(server: AliasdProcess) -> None:
    """Under a wildcard, 5,000 random names are answered from the wildcard's
    template, with no cache entry, every answer right."""
    rng = random.Random(16)
    entries = metric(server, "aliasd_dns_cache_entries")
    templates = metric(server, "aliasd_dns_template_hits_total")
    names = [f"r{rng.getrandbits(40):x}.example.internal." for _ in range(5000)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        for i, name in enumerate(names):
            q = dns.message.make_query(name, "A", id=i)
            s.sendto(q.to_wire(), server.dns)
            r = dns.message.from_wire(s.recv(4096))
            assert r.id == i and records(r) == [(name, "A", W4)]
    assert metric(server, "aliasd_dns_cache_entries") == entries
    assert metric(server, "aliasd_dns_template_hits_total") >= templates + 4999


def test_an_override_on_a_wildcard_switches_every_name_it_answers(
        tmp_path: Path) -> None:
    """The wildcard's owner name is a name like any other: an HTTP override of
    *.example.internal beats the file for every name the wildcard answers,
    not for names that exist; deleting it puts the file's answer back."""
    (tmp_path / "aliases.yaml").write_text(ZONE_FILE)
    (tmp_path / "token").write_text("wild-token\n")
    with run_aliasd(["--zone", "internal", "--aliases-file", str(tmp_path / "aliases.yaml"),
                     "--api-token-file", str(tmp_path / "token"),
                     "--state-file", str(tmp_path / "state.json")], tmp=tmp_path) as p:
        assert records(query(p.dns, "a.example.internal.", "A")) == [
            ("a.example.internal.", "A", W4)]
        status, body = http_json(p, "PUT", "/v1/overrides/*.example.internal",
                                 {"addresses": ["198.51.100.7"], "ttl": 5}, token="wild-token")
        assert (status, body["name"]) == (201, "*.example.internal.")  # created
        wait_for(lambda: records(query(p.dns, "a.example.internal.", "A"))
                 == [("a.example.internal.", "A", "198.51.100.7")], what="the override")
        assert records(query(p.dns, "host1.example.internal.", "A")) == [
            ("host1.example.internal.", "A", "192.0.2.1")]
        status, _ = http_json(p, "PUT", "/v1/overrides/*.internal",
                              {"addresses": ["198.51.100.7"]}, token="wild-token")
        assert status == 400  # no wildcard at the apex
        status, _ = http_json(p, "DELETE", "/v1/overrides/*.example.internal",
                              token="wild-token")
        assert status == 200
        wait_for(lambda: records(query(p.dns, "b.example.internal.", "A"))
                 == [("b.example.internal.", "A", W4)], what="the file's answer back")
