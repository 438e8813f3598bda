"""The DNS server, as a real process, asked by real clients (dnspython and dig)."""

from __future__ import annotations

import itertools
import random
import socket
import struct
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.dnsclient import answers, dig, query
from tests.support.process import AliasdProcess, replace_file, run_aliasd
from tests.support.waiting import wait_for

MANY_V6 = [f"fd00::{i:x}" for i in range(1, 41)]  # 40 AAAA: > 512 bytes

ZONE_FILE = f"""
aliases:
  my-fruits.internal:
    addresses: [10.96.0.10, "fd00::10"]
    ttl: 42
    ports:
      - {{name: http, protocol: TCP, port: 80}}
  legacy-db:
    cname: db.example.com.
  fruits-v2.internal:
    cname: my-fruits.internal
  loop-a.internal: {{cname: loop-b.internal}}
  loop-b.internal: {{cname: loop-a.internal}}
  dangling.internal: {{cname: nothing-here.internal}}
  big.internal:
    addresses: {MANY_V6}
  api.team.corp.example:
    addresses: [10.96.7.7]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AliasdProcess]:
    tmp = tmp_path_factory.mktemp("dns")
    f = tmp / "aliases.yaml"
    f.write_text(ZONE_FILE)
    with run_aliasd(["--zone", "internal", "--zone", "corp.example", "--aliases-file", str(f),
                     "--ns-address", "127.0.0.1", "--allow-transfer", "127.0.0.1/32",
                     "--tcp-idle-timeout", "1", "--tcp-max-connections", "4"], tmp=tmp) as p:
        yield p


def soa_serial(p: AliasdProcess, zone: str = "internal.") -> int:
    r = query(p.dns, zone, "SOA")
    return int(r.answer[0][0].serial)


# (qname, qtype) -> (rcode, answer texts by type, authority types)
CASES = [
    ("my-fruits.internal.", "A", "NOERROR", {"A": ["10.96.0.10"]}, []),
    ("my-fruits.internal.", "AAAA", "NOERROR", {"AAAA": ["fd00::10"]}, []),
    ("legacy-db.internal.", "A", "NOERROR", {"CNAME": ["db.example.com."]}, []),
    ("fruits-v2.internal.", "A", "NOERROR",
     {"CNAME": ["my-fruits.internal."], "A": ["10.96.0.10"]}, []),
    ("fruits-v2.internal.", "AAAA", "NOERROR",
     {"CNAME": ["my-fruits.internal."], "AAAA": ["fd00::10"]}, []),
    ("fruits-v2.internal.", "CNAME", "NOERROR", {"CNAME": ["my-fruits.internal."]}, []),
    ("dangling.internal.", "A", "NXDOMAIN", {"CNAME": ["nothing-here.internal."]}, ["SOA"]),
    ("_http._tcp.my-fruits.internal.", "SRV", "NOERROR",
     {"SRV": ["0 100 80 my-fruits.internal."]}, []),
    ("nope.internal.", "A", "NXDOMAIN", {}, ["SOA"]),
    ("deeper.nope.internal.", "AAAA", "NXDOMAIN", {}, ["SOA"]),
    ("my-fruits.internal.", "MX", "NOERROR", {}, ["SOA"]),
    ("_tcp.my-fruits.internal.", "A", "NOERROR", {}, ["SOA"]),  # empty non-terminal
    ("team.corp.example.", "A", "NOERROR", {}, ["SOA"]),  # empty non-terminal
    ("api.team.corp.example.", "A", "NOERROR", {"A": ["10.96.7.7"]}, []),
    ("internal.", "NS", "NOERROR", {"NS": ["ns.internal."]}, []),
    ("ns.internal.", "A", "NOERROR", {"A": ["127.0.0.1"]}, []),
    ("example.com.", "A", "REFUSED", {}, []),
    ("kubernetes.default.svc.cluster.local.", "A", "REFUSED", {}, []),
    ("internal.example.", "A", "REFUSED", {}, []),
]


@pytest.mark.parametrize(("qname", "qtype", "rcode", "expected", "authority"), CASES,
                         ids=[f"{c[0]}{c[1]}" for c in CASES])
@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_answer_table(server: AliasdProcess, qname: str, qtype: str, rcode: str,
                      expected: dict[str, list[str]], authority: list[str], tcp: bool) -> None:
    r = query(server.dns, qname, qtype, tcp=tcp)
    assert dns.rcode.to_text(r.rcode()) == rcode
    got = {dns.rdatatype.to_text(rs.rdtype): sorted(rd.to_text() for rd in rs) for rs in r.answer}
    assert got == expected
    assert [dns.rdatatype.to_text(rs.rdtype) for rs in r.authority] == authority
    # Authoritative for our zones, never recursive; not authoritative when refusing.
    assert bool(r.flags & dns.flags.AA) == (rcode != "REFUSED")
    assert not r.flags & dns.flags.RA
    assert r.flags & dns.flags.RD  # copied from the query


def test_negative_answers_carry_soa_with_rfc2308_ttl(server: AliasdProcess) -> None:
    for name, qtype in (("nope.internal.", "A"), ("my-fruits.internal.", "TXT")):
        r = query(server.dns, name, qtype)
        soa = r.authority[0]
        assert soa.name.to_text() == "internal."
        # min(SOA TTL 30, SOA MINIMUM 5)
        assert soa.ttl == min(soa.ttl, soa[0].minimum) == 5
        assert soa[0].mname.to_text() == "ns.internal."


def test_ttl_comes_from_the_alias(server: AliasdProcess) -> None:
    r = query(server.dns, "my-fruits.internal.", "A")
    assert r.answer[0].ttl == 42
    assert query(server.dns, "legacy-db.internal.", "A").answer[0].ttl == 30


def test_cname_loop_is_cut(server: AliasdProcess) -> None:
    r = query(server.dns, "loop-a.internal.", "A")
    assert r.rcode() == dns.rcode.NOERROR
    names = [rs.name.to_text() for rs in r.answer]
    assert names == ["loop-a.internal.", "loop-b.internal."]


def test_srv_additional_has_target_addresses(server: AliasdProcess) -> None:
    r = query(server.dns, "_http._tcp.my-fruits.internal.", "SRV")
    extra = {dns.rdatatype.to_text(rs.rdtype): [rd.to_text() for rd in rs] for rs in r.additional}
    assert extra == {"A": ["10.96.0.10"], "AAAA": ["fd00::10"]}


def test_mixed_case_question_echoed_byte_for_byte(server: AliasdProcess) -> None:
    for name in ("My-FrUiTs.InTeRnAl.", "NOPE.internal.", "Legacy-DB.Internal.", "EXAMPLE.com."):
        for use_edns in (False, 0):
            q = dns.message.make_query(name, "A", use_edns=use_edns)
            wire = q.to_wire()
            qlen = len(dns.message.make_query(name, "A").to_wire()) - 12
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(3)
                s.sendto(wire, server.dns)
                resp = s.recv(4096)
            assert resp[:2] == wire[:2]  # id
            assert resp[12:12 + qlen] == wire[12:12 + qlen]  # question as asked


def test_serial_and_apex(server: AliasdProcess) -> None:
    r = query(server.dns, "internal.", "SOA")
    soa = r.answer[0][0]
    assert soa.serial > 1_700_000_000  # derived from the clock: survives restarts
    assert (soa.refresh, soa.retry, soa.expire, soa.minimum) == (60, 10, 1_209_600, 5)
    r = query(server.dns, "internal.", "NS")
    assert answers(r, "NS") == ["ns.internal."]
    assert [rd.to_text() for rs in r.additional for rd in rs] == ["127.0.0.1"]


def test_any_is_minimal_rfc8482(server: AliasdProcess) -> None:
    r = query(server.dns, "my-fruits.internal.", "ANY")
    assert r.rcode() == dns.rcode.NOERROR
    assert len(r.answer) == 1  # one RRset, not everything
    assert answers(r, "A") == ["10.96.0.10"]
    r = query(server.dns, "_tcp.my-fruits.internal.", "ANY")
    assert r.answer == [] and r.authority[0].rdtype == dns.rdatatype.SOA


# ---- EDNS0 (RFC 6891) ----------------------------------------------------------


def test_edns_echoed_only_when_asked(server: AliasdProcess) -> None:
    r = query(server.dns, "my-fruits.internal.", "A", use_edns=0, payload=4096)
    assert r.edns == 0 and r.payload == 1232
    r = query(server.dns, "my-fruits.internal.", "A", use_edns=False)
    assert r.edns == -1


def test_do_bit_copied(server: AliasdProcess) -> None:
    r = query(server.dns, "my-fruits.internal.", "A", use_edns=0, ednsflags=dns.flags.DO)
    assert r.ednsflags & dns.flags.DO
    r = query(server.dns, "my-fruits.internal.", "A", use_edns=0)
    assert not r.ednsflags & dns.flags.DO


def test_truncation_and_tcp_retry(server: AliasdProcess) -> None:
    # 40 AAAA records do not fit 512 bytes: TC set, answer empty.
    r = query(server.dns, "big.internal.", "AAAA", use_edns=False)
    assert r.flags & dns.flags.TC
    assert r.answer == [] and r.rcode() == dns.rcode.NOERROR
    # Same with EDNS but a small buffer; the OPT is still there.
    r = query(server.dns, "big.internal.", "AAAA", use_edns=0, payload=512)
    assert r.flags & dns.flags.TC and r.answer == [] and r.edns == 0
    # A big enough EDNS buffer gets everything over UDP...
    r = query(server.dns, "big.internal.", "AAAA", use_edns=0, payload=4096)
    assert not r.flags & dns.flags.TC
    assert answers(r, "AAAA") == sorted(MANY_V6)
    # ...and TCP always does.
    r = query(server.dns, "big.internal.", "AAAA", tcp=True)
    assert answers(r, "AAAA") == sorted(MANY_V6)
    # dig falls back to TCP by itself on TC.
    out = dig(server.dns, "big.internal.", "AAAA", "+noedns", "+short")
    assert sorted(out.split()) == sorted(MANY_V6)


def test_unknown_edns_version_is_badvers(server: AliasdProcess) -> None:
    r = query(server.dns, "my-fruits.internal.", "A", use_edns=1)
    assert r.rcode() == dns.rcode.BADVERS
    assert r.edns == 0
    assert r.answer == []


def test_unknown_options_and_cookies_tolerated(server: AliasdProcess) -> None:
    opts: list[dns.edns.Option] = [
        dns.edns.GenericOption(dns.edns.OptionType(65001), b"\x01\x02\x03"),
        dns.edns.GenericOption(dns.edns.COOKIE, bytes(range(1, 9)))]
    r = query(server.dns, "my-fruits.internal.", "A", use_edns=0, options=opts)
    assert r.rcode() == dns.rcode.NOERROR
    assert answers(r, "A") == ["10.96.0.10"]
    out = dig(server.dns, "my-fruits.internal.", "+cookie", "+short")
    assert out.split() == ["10.96.0.10"]


# ---- malformed and unusual queries ------------------------------------------------


def raw_udp(server: AliasdProcess, payload: bytes, timeout: float = 1.0) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(payload, server.dns)
        try:
            return s.recv(65535)
        except TimeoutError:
            return None


def test_opcode_other_than_query_is_notimp(server: AliasdProcess) -> None:
    q = dns.message.make_query("my-fruits.internal.", "SOA")
    q.set_opcode(dns.opcode.NOTIFY)
    resp = raw_udp(server, q.to_wire())
    assert resp is not None
    r = dns.message.from_wire(resp)
    assert r.rcode() == dns.rcode.NOTIMP and r.id == q.id
    assert r.opcode() == dns.opcode.NOTIFY


def test_two_questions_is_formerr(server: AliasdProcess) -> None:
    q = dns.message.make_query("my-fruits.internal.", "A").to_wire()
    extra = dns.message.make_query("nope.internal.", "A").to_wire()[12:]
    wire = q[:4] + b"\x00\x02" + q[6:] + extra
    resp = raw_udp(server, wire)
    assert resp is not None
    assert resp[:2] == wire[:2]
    assert resp[3] & 0x0F == dns.rcode.FORMERR


def test_qr_set_is_formerr(server: AliasdProcess) -> None:
    wire = bytearray(dns.message.make_query("my-fruits.internal.", "A").to_wire())
    wire[2] |= 0x80
    resp = raw_udp(server, bytes(wire))
    assert resp is not None and resp[3] & 0x0F == dns.rcode.FORMERR


def test_garbage_with_header_is_formerr_and_short_is_dropped(server: AliasdProcess) -> None:
    wire = dns.message.make_query("my-fruits.internal.", "A").to_wire()
    truncated = wire[:-3]  # question cut short
    resp = raw_udp(server, truncated)
    assert resp is not None and resp[:2] == wire[:2]
    assert resp[3] & 0x0F == dns.rcode.FORMERR
    assert raw_udp(server, b"\x12\x34\x01", timeout=0.5) is None  # no header: dropped
    # ...and the server is fine.
    assert answers(query(server.dns, "my-fruits.internal.", "A"), "A") == ["10.96.0.10"]
    _, metrics = server.http("/metrics")
    assert 'aliasd_dns_bad_queries_total{kind="dropped_short"}' in metrics
    assert 'aliasd_dns_bad_queries_total{kind="formerr_unparsable"}' in metrics


# ---- TCP (RFC 7766) ---------------------------------------------------------------


def tcp_connect(server: AliasdProcess) -> socket.socket:
    s = socket.create_connection(server.dns, timeout=5)
    return s


def read_msg(s: socket.socket) -> dns.message.Message | None:
    head = b""
    while len(head) < 2:
        chunk = s.recv(2 - len(head))
        if not chunk:
            return None
        head += chunk
    (n,) = struct.unpack("!H", head)
    body = b""
    while len(body) < n:
        chunk = s.recv(n - len(body))
        assert chunk, "connection closed mid-message"
        body += chunk
    return dns.message.from_wire(body)


def test_tcp_pipelined_queries_answered_in_order(server: AliasdProcess) -> None:
    names = ["my-fruits.internal.", "nope.internal.", "fruits-v2.internal.", "example.com."]
    queries = [dns.message.make_query(n, "A") for n in names]
    with tcp_connect(server) as s:
        # all queries in one write, the last one split across two writes
        blob = b"".join(struct.pack("!H", len(w)) + w for w in (q.to_wire() for q in queries))
        s.sendall(blob[:-5])
        time.sleep(0.05)
        s.sendall(blob[-5:])
        got = [read_msg(s) for _ in queries]
    assert [r.id for r in got if r] == [q.id for q in queries]
    assert [dns.rcode.to_text(r.rcode()) for r in got if r] == [
        "NOERROR", "NXDOMAIN", "NOERROR", "REFUSED"]


def test_tcp_idle_connection_is_closed(server: AliasdProcess) -> None:
    with tcp_connect(server) as s:
        s.settimeout(10)
        q = dns.message.make_query("my-fruits.internal.", "A").to_wire()
        s.sendall(struct.pack("!H", len(q)) + q)
        assert read_msg(s) is not None
        # --tcp-idle-timeout 1: the server closes an idle connection (recv -> EOF).
        assert s.recv(10) == b""


def test_tcp_connection_cap(server: AliasdProcess) -> None:
    q = dns.message.make_query("my-fruits.internal.", "A").to_wire()
    framed = struct.pack("!H", len(q)) + q
    def four_served() -> list[socket.socket] | None:
        # --tcp-max-connections 4; an earlier test's closed connections may not
        # have been reaped by the server yet, so poll until four are served.
        conns = [tcp_connect(server) for _ in range(4)]
        try:
            for c in conns:
                c.sendall(framed)
                if read_msg(c) is None:
                    raise ConnectionResetError
        except OSError:
            for c in conns:
                c.close()
            return None
        return conns

    conns: list[socket.socket] = wait_for(four_served, timeout=10, what="four TCP slots")
    try:
        extra = tcp_connect(server)
        extra.settimeout(5)
        try:
            extra.sendall(framed)
            assert read_msg(extra) is None  # closed by the server, unanswered
        except ConnectionResetError:
            pass
        finally:
            extra.close()
    finally:
        for c in conns:
            c.close()
    # Slots free again: a new connection is served.
    def served() -> bool:
        with tcp_connect(server) as s:
            s.sendall(framed)
            return read_msg(s) is not None
    assert wait_for(served, timeout=10, what="a TCP slot")


# ---- zone transfer ----------------------------------------------------------------


def test_axfr_allowed_client(server: AliasdProcess) -> None:
    out = dig(server.dns, "internal.", "AXFR", "+noall", "+answer")
    lines = [ln.split() for ln in out.splitlines() if ln and not ln.startswith(";")]
    types = [ln[3] for ln in lines]
    assert types[0] == "SOA" and types[-1] == "SOA"
    owners = {ln[0] for ln in lines}
    assert {"internal.", "my-fruits.internal.", "_http._tcp.my-fruits.internal.",
            "legacy-db.internal.", "big.internal."} <= owners
    assert "api.team.corp.example." not in owners  # other zone
    assert ["my-fruits.internal.", "42", "IN", "A", "10.96.0.10"] in lines


def test_axfr_refused_for_other_clients(server: AliasdProcess) -> None:
    # 127.0.0.2 is loopback too, but not in --allow-transfer 127.0.0.1/32.
    out = dig(server.dns, "-b", "127.0.0.2", "internal.", "AXFR")
    assert "Transfer failed" in out
    q = dns.message.make_query("internal.", "AXFR")
    r = dns.query.tcp(q, "127.0.0.1", port=server.dns_port, timeout=3, source="127.0.0.2")
    assert r.rcode() == dns.rcode.REFUSED
    r = query(server.dns, "internal.", "IXFR")  # UDP from an allowed client: retry on TCP
    assert r.flags & dns.flags.TC


# ---- dig, the client people actually use -------------------------------------------


def test_dig_short(server: AliasdProcess) -> None:
    assert dig(server.dns, "my-fruits.internal", "+short").split() == ["10.96.0.10"]
    assert dig(server.dns, "my-fruits.internal", "AAAA", "+short", "+tcp").split() == ["fd00::10"]
    out = dig(server.dns, "nope.internal")
    assert "status: NXDOMAIN" in out and "flags: qr aa rd;" in out


# ---- fuzz --------------------------------------------------------------------------


FUZZ_SEED = 20261121  # the whole run (packets, mutations) follows from it
FUZZ_PACKETS = 100_000
FUZZ_BATCH = 50  # bounded so neither side's UDP receive buffer can overflow and drop


def mutate(rng: random.Random, seed: bytes) -> bytes:
    b = bytearray(seed)
    for _ in range(rng.randint(1, 6)):
        op = rng.randrange(4)
        if op == 0 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 1 and b:
            del b[rng.randrange(len(b)):]
        elif op == 2:
            b.insert(rng.randrange(len(b) + 1), rng.randrange(256))
        else:
            b += rng.randbytes(rng.randrange(8))
    return bytes(b)


def metric_samples(p: AliasdProcess, name: str) -> dict[str, float]:
    """Every sample of one counter from /metrics, keyed by its label values."""
    _, text = p.http("/metrics")
    return {",".join(s.labels.values()): s.value
            for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == name}


def bad_queries(p: AliasdProcess) -> Counter[str]:
    return Counter({k: int(v) for k, v in
                    metric_samples(p, "aliasd_dns_bad_queries_total").items()})


def queries_answered(p: AliasdProcess) -> int:
    return int(sum(metric_samples(p, "aliasd_dns_queries_total").values()))


ERROR_RCODES = (dns.rcode.FORMERR, dns.rcode.NOTIMP)  # header-only answers to bad input


def test_fuzz_100k_packets_server_survives(server: AliasdProcess) -> None:
    rng = random.Random(FUZZ_SEED)
    seeds = [dns.message.make_query(n, t, use_edns=e, id=0x5EED + i).to_wire()
             for i, (n, t, e) in enumerate(itertools.product(
                 ("my-fruits.internal.", "big.internal.", "nope.internal.", "example.com."),
                 ("A", "AAAA", "SRV", "ANY", "AXFR"), (False, 0)))]
    # The probe comes from its own socket: no fuzzed packet's answer can be taken
    # for the probe's, whatever ID or question a mutation produces.
    probe = dns.message.make_query("my-fruits.internal.", "A", id=0xA11A).to_wire()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as fuzz, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as prober:
        fuzz.settimeout(5)
        prober.settimeout(5)
        prober.sendto(probe, server.dns)
        expected = prober.recv(65535)
        r = dns.message.from_wire(expected)
        assert (r.id, r.rcode(), r.flags & dns.flags.AA, r.question[0].to_text()) == (
            0xA11A, dns.rcode.NOERROR, dns.flags.AA, "my-fruits.internal. IN A")
        assert [rs.to_text() for rs in r.answer] == ["my-fruits.internal. 42 IN A 10.96.0.10"]
        bad_before, answered_before = bad_queries(server), queries_answered(server)
        sent = short = errors = answered = probes = 0
        while sent < FUZZ_PACKETS:
            ids = []
            for _ in range(FUZZ_BATCH):
                if rng.random() < 0.3:
                    pkt = rng.randbytes(rng.randrange(0, 600))
                else:
                    pkt = mutate(rng, rng.choice(seeds))
                fuzz.sendto(pkt, server.dns)
                sent += 1
                if len(pkt) < 12:
                    short += 1  # no header to answer: dropped and counted
                else:
                    ids.append(pkt[:2])
            # UDP is answered in arrival order, so once the probe's answer is here,
            # every answer to the batch has been sent.
            prober.sendto(probe, server.dns)
            probes += 1
            assert prober.recv(65535) == expected, f"after {sent} packets"
            got = [fuzz.recv(65535) for _ in ids]
            fuzz.setblocking(False)
            with pytest.raises(BlockingIOError):  # one answer per packet, not more
                fuzz.recv(65535)
            fuzz.settimeout(5)
            assert [a[:2] for a in got] == ids, f"an answer per packet, in order ({sent})"
            n_errors = sum(1 for a in got if a[3] & 0x0F in ERROR_RCODES)
            errors += n_errors
            answered += len(got) - n_errors
    assert server.proc.poll() is None
    # Every bad input was counted, each where it belongs; nothing raised.
    bad = bad_queries(server) - bad_before
    assert bad["dropped_short"] == short
    assert sum(n for kind, n in bad.items()
               if kind.startswith(("formerr_", "notimp_"))) == errors
    assert short + errors > 10_000
    assert "internal_error" not in bad_queries(server)
    assert queries_answered(server) - answered_before == answered + probes
    # Still answers, correctly, over both transports.
    assert answers(query(server.dns, "my-fruits.internal.", "A"), "A") == ["10.96.0.10"]
    assert answers(query(server.dns, "big.internal.", "AAAA", tcp=True), "AAAA") == sorted(MANY_V6)
    assert query(server.dns, "nope.internal.", "A").rcode() == dns.rcode.NXDOMAIN


# ---- reload ------------------------------------------------------------------------


def test_file_reload_and_bad_file_keeps_last_good_zone(tmp_path: Path) -> None:
    f = tmp_path / "aliases.yaml"
    f.write_text("aliases:\n  web: {addresses: [192.0.2.1]}\n")
    with run_aliasd(["--aliases-file", str(f)], tmp=tmp_path) as p:
        assert answers(query(p.dns, "web.internal.", "A"), "A") == ["192.0.2.1"]
        serial = soa_serial(p)
        replace_file(f, "aliases:\n  web: {addresses: [192.0.2.2]}\n  new: {cname: web}\n")
        wait_for(lambda: answers(query(p.dns, "web.internal.", "A"), "A") == ["192.0.2.2"],
                 what="reload")
        assert answers(query(p.dns, "new.internal.", "A"), "A") == ["192.0.2.2"]
        assert soa_serial(p) > serial
        serial = soa_serial(p)
        # A broken file: the last good zone keeps being served, the log says why.
        replace_file(f, "aliases:\n  web: {addresses: [not-an-ip]}\n")
        wait_for(lambda: "not-an-ip" in p.logs(), what="the error to be logged")
        assert answers(query(p.dns, "web.internal.", "A"), "A") == ["192.0.2.2"]
        assert soa_serial(p) == serial
        assert f"{f}: alias 'web': 'not-an-ip' is not an IP address" in p.logs()
        # Fixed again: picked up.
        replace_file(f, "aliases:\n  web: {addresses: [192.0.2.3]}\n")
        wait_for(lambda: answers(query(p.dns, "web.internal.", "A"), "A") == ["192.0.2.3"],
                 what="reload after fix")
