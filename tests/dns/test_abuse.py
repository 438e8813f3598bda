"""Clients that try to exhaust the DNS server, against a running aliasd: a TCP
client that pipelines and never reads, a dribbler, one address opening many
connections, and a large EDNS buffer asked over UDP. Each asserts facts (bytes,
flags, counters, peak memory), never how long something took."""

from __future__ import annotations

import asyncio
import contextlib
import re
import select
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import pytest

from aliasd import resolver
from aliasd.dns.server import DnsServer, ServerConfig
from aliasd.model import AliasClaim, ConfigError, Owner
from aliasd.zoneconfig import ZoneConfig
from tests.support.dnsclient import answers, query
from tests.support.process import AliasdProcess, metric_or_none, run_aliasd
from tests.support.waiting import wait_for

WIDE = [f"fd00::1:{i:x}" for i in range(1, 21)]  # 20 AAAA: an answer of ~600 bytes
MANY = [f"fd00::2:{i:x}" for i in range(1, 101)]  # 100 AAAA: ~2.9 KB, more than 1232
PER_CLIENT = 3
IDLE = 2  # --tcp-idle-timeout, seconds

ZONE_FILE = f"""
aliases:
  one.internal: {{addresses: [10.96.0.1]}}
  wide.internal: {{addresses: {WIDE}}}
  many.internal: {{addresses: {MANY}}}
  "*.lots.internal": {{addresses: {MANY}}}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AliasdProcess]:
    tmp = tmp_path_factory.mktemp("abuse")
    f = tmp / "aliases.yaml"
    f.write_text(ZONE_FILE)
    with run_aliasd(["--zone", "internal", "--aliases-file", str(f),
                     "--tcp-idle-timeout", str(IDLE), "--tcp-max-connections", "64",
                     "--tcp-max-connections-per-client", str(PER_CLIENT)], tmp=tmp) as p:
        yield p


def bad(p: AliasdProcess, kind: str) -> float:
    return metric_or_none(p, "aliasd_dns_bad_queries_total", kind=kind) or 0.0


def status_kib(p: AliasdProcess, field: str) -> int:
    """A memory figure of the aliasd process from /proc (VmRSS, VmHWM: the peak)."""
    text = Path(f"/proc/{p.proc.pid}/status").read_text()
    m = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    assert m, field
    return int(m.group(1))


def framed(name: str, rdtype: str, qid: int) -> bytes:
    wire = dns.message.make_query(name, rdtype, id=qid).to_wire()
    return struct.pack("!H", len(wire)) + wire


def pipeline(name: str, rdtype: str, n: int) -> bytes:
    """``n`` framed queries for the same question, IDs 0, 1, 2... (modulo 2**16)."""
    one = framed(name, rdtype, 0)
    return b"".join(one[:2] + (i % 65536).to_bytes(2, "big") + one[4:] for i in range(n))


def connect(p: AliasdProcess, source: str, *, rcvbuf: int | None = None) -> socket.socket:
    """A TCP connection to aliasd from ``source`` (any of 127/8: Linux routes it to lo)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(5)
    s.bind((source, 0))
    s.connect(p.dns)
    return s


def ask(s: socket.socket, qid: int) -> dns.message.Message | None:
    """One query on ``s``; its answer, or None when the server closed the connection."""
    try:
        s.sendall(framed("one.internal.", "A", qid))
        head = s.recv(2, socket.MSG_WAITALL)
        if len(head) < 2:
            return None
        body = s.recv(head[0] << 8 | head[1], socket.MSG_WAITALL)
    except (ConnectionResetError, BrokenPipeError):
        return None
    return dns.message.from_wire(body)


def closed_by_server(s: socket.socket) -> bool:
    """True once the server has closed ``s`` (EOF or reset), without waiting."""
    try:
        readable, _, _ = select.select([s], [], [], 0)
        return bool(readable) and s.recv(1) == b""
    except OSError:
        return True


def test_a_client_that_pipelines_and_never_reads_is_not_read(server: AliasdProcess) -> None:
    queries = 100_000
    blob = pipeline("wide.internal.", "AAAA", queries)
    peak_before = status_kib(server, "VmHWM")
    not_reading = bad(server, "tcp_client_not_reading")
    idle = bad(server, "tcp_idle_timeout")
    # A small receive buffer: the kernel holds few of the answers it never reads.
    flooder = connect(server, "127.0.0.6", rcvbuf=4096)
    flooder.settimeout(None)

    def flood() -> None:
        with contextlib.suppress(OSError):  # reset by aliasd
            flooder.sendall(blob)  # blocks while aliasd does not read

    sender = threading.Thread(target=flood, daemon=True)
    sender.start()
    try:
        # aliasd stops reading the flooder once its answers pile up (or, if it
        # did not, the flooder sends everything)...
        wait_for(lambda: bad(server, "tcp_client_not_reading") > not_reading
                 or not sender.is_alive(), timeout=30, what="the flood to stall or end")
        # ...while every other client is answered, over UDP and TCP.
        assert answers(query(server.dns, "one.internal.", "A"), "A") == ["10.96.0.1"]
        assert answers(query(server.dns, "one.internal.", "A", tcp=True), "A") == ["10.96.0.1"]
        # With no complete query read, the flooder is idle: cut off, its answers dropped.
        wait_for(lambda: bad(server, "tcp_idle_timeout") > idle, timeout=30,
                 what="the flooder's idle timeout")
        sender.join(timeout=30)
        assert not sender.is_alive()
    finally:
        flooder.close()
    # Answered in full, 100k answers of ~600 bytes would be ~60 MB; the peak
    # grew by at most one read's worth of queries and a write buffer.
    grown = status_kib(server, "VmHWM") - peak_before
    print(f"\npeak RSS grew by {grown / 1024:.1f} MiB under {queries} unread pipelined queries")
    assert grown < 16 * 1024
    assert bad(server, "tcp_client_not_reading") > not_reading
    assert answers(query(server.dns, "one.internal.", "A", tcp=True), "A") == ["10.96.0.1"]


def test_a_dribbler_is_cut_off_after_the_idle_timeout(server: AliasdProcess) -> None:
    idle = bad(server, "tcp_idle_timeout")
    with connect(server, "127.0.0.3") as s:
        s.sendall(b"\xff\xff")  # announces 65535 bytes, of which it sends one at a time

        def dribble() -> bool:
            if closed_by_server(s):
                return True
            try:
                s.send(b"\x00")
            except OSError:
                return True
            return False

        # A byte every 0.2 s, ten times a timeout: every byte used to re-arm it.
        wait_for(dribble, timeout=10 * IDLE, interval=0.2, what="the dribbler to be cut off")
    assert bad(server, "tcp_idle_timeout") > idle


def test_one_client_cannot_take_every_connection(server: AliasdProcess) -> None:
    # 127.0.0.4's connections from an earlier run of this test may not be reaped yet.
    conns: list[socket.socket] = []

    def all_served() -> bool:
        for c in conns:
            c.close()
        conns[:] = [connect(server, "127.0.0.4") for _ in range(PER_CLIENT)]
        return all(ask(c, 1) is not None for c in conns)

    wait_for(all_served, timeout=10, what=f"{PER_CLIENT} connections from 127.0.0.4")
    refused = bad(server, "tcp_client_connection_limit")
    try:
        with connect(server, "127.0.0.4") as extra:
            assert ask(extra, 2) is None  # closed by the server, unanswered
        assert bad(server, "tcp_client_connection_limit") == refused + 1
        # Another address is served meanwhile, and the first one's are still open.
        with connect(server, "127.0.0.5") as other:
            r = ask(other, 3)
            assert r is not None and answers(r, "A") == ["10.96.0.1"]
        assert all(ask(c, 4) is not None for c in conns)
    finally:
        for c in conns:
            c.close()

    def served_again() -> bool:
        with connect(server, "127.0.0.4") as s:
            return ask(s, 5) is not None

    wait_for(served_again, timeout=10, what="a slot for 127.0.0.4 once its connections closed")


def udp_raw(p: AliasdProcess, name: str, *, payload: int) -> bytes:
    q = dns.message.make_query(name, "AAAA", use_edns=0, payload=payload, id=4242)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(q.to_wire(), p.dns)
        return s.recv(65535)


@pytest.mark.parametrize("name", ["many.internal.", "x.lots.internal."],
                         ids=["cached name", "wildcard template"])
def test_udp_answers_are_capped_at_1232_bytes(server: AliasdProcess, name: str) -> None:
    # Three times: the slow path answers first; TCP fills the answer cache (or
    # the wildcard's template); the third is asked where the fast path would answer.
    for step in ("slow", "tcp", "fast"):
        if step == "tcp":
            r = query(server.dns, name, "AAAA", tcp=True, use_edns=0, payload=65000)
            assert not r.flags & dns.flags.TC
            assert answers(r, "AAAA") == sorted(MANY)
            continue
        wire = udp_raw(server, name, payload=65000)
        assert len(wire) <= 1232, step
        r = dns.message.from_wire(wire)
        assert r.flags & dns.flags.TC, step
        assert r.rcode() == dns.rcode.NOERROR and r.answer == []
        assert r.edns == 0 and r.payload == 1232  # what the OPT advertises
    # An answer under the cap still comes whole over UDP.
    r = dns.message.from_wire(udp_raw(server, "wide.internal.", payload=65000))
    assert not r.flags & dns.flags.TC and answers(r, "AAAA") == sorted(WIDE)


async def test_backpressure_on_the_asyncio_loop() -> None:
    """The same flood in process, on asyncio's own loop (aliasd's without uvloop):
    answering stops once the client stops reading, and the idle timeout ends it."""
    config = ZoneConfig.from_names(["internal"], ns_addresses=["127.0.0.1"])
    claims = [AliasClaim("wide.internal", Owner(1, "a", "wide"), addresses=tuple(WIDE))]
    server = DnsServer(resolver.build(claims, config=config, serial=1).snapshot,
                       ServerConfig(host="127.0.0.1", port=0, tcp_idle_timeout=1))
    for attempt in range(3):  # TCP binds the port UDP got, which another socket may hold
        try:
            await server.start()
            break
        except ConfigError:
            if attempt == 2:
                raise
    try:
        queries = 100_000
        blob = pipeline("wide.internal.", "AAAA", queries)
        _, writer = await asyncio.open_connection(*server.address, limit=1024)
        writer.transport.set_write_buffer_limits(high=len(blob))  # never wait for aliasd
        writer.write(blob)  # and never read
        problems = server.stats.problems
        deadline = asyncio.get_running_loop().time() + 20
        while not problems["tcp_idle_timeout"]:
            assert asyncio.get_running_loop().time() < deadline, dict(problems)
            await asyncio.sleep(0.05)
        assert server.stats.answers[("NOERROR", "AAAA")] < queries // 2
        assert problems["tcp_client_not_reading"] == 1
        writer.close()
    finally:
        await server.stop()
