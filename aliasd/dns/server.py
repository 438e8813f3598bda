"""asyncio UDP and TCP listeners answering from the current snapshot.

The protocols parse and answer synchronously in the callback (answers are
CPU-only, no I/O, no Kubernetes call on the query path). The current
:class:`Answerer` is a single reference swapped whole on every snapshot change.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
import struct
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from aliasd.dns.answer import Answerer
from aliasd.dns.stats import LATENCY_SAMPLE, Stats
from aliasd.model import ConfigError
from aliasd.zone import Snapshot

log = logging.getLogger(__name__)

# A TCP connection's write buffer: past WRITE_HIGH bytes of answers the peer has
# not read, its queries are no longer read (asyncio's defaults, written down
# because the bound on memory per connection depends on them).
WRITE_HIGH, WRITE_LOW = 64 * 1024, 16 * 1024


@dataclass(frozen=True)
class ServerConfig:
    host: str = "0.0.0.0"
    port: int = 5353
    tcp_idle_timeout: float = 10.0  # RFC 7766 6.2.3: a few seconds
    tcp_max_connections: int = 256
    tcp_max_connections_per_client: int = 64
    allow_transfer: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()


class DnsServer:
    """Holds the current answerer; owns the UDP and TCP listeners."""

    def __init__(self, snapshot: Snapshot, config: ServerConfig, *, stats: Stats | None = None):
        self.config = config
        self.stats = stats or Stats()
        self.answerer = Answerer(snapshot, stats=self.stats,
                                 allow_transfer=config.allow_transfer)
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self.connections = _Connections(config, self.stats)

    @property
    def snapshot(self) -> Snapshot:
        return self.answerer.snapshot

    def swap(self, snapshot: Snapshot, changed: frozenset[str] | None = None) -> None:
        """Serve ``snapshot`` from the next query on (one reference assignment).

        ``changed``: the normalized owner names whose RRsets, weighted group or
        unusable status differ from the snapshot served until now; cached
        answers that depended on none of them survive. None (the default):
        anything may have changed, start with an empty cache."""
        self.answerer = self.answerer.evolve(snapshot, changed)

    @property
    def address(self) -> tuple[str, int]:
        assert self._udp is not None
        sockname = self._udp.get_extra_info("sockname")
        return sockname[0], sockname[1]

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        host, port = self.config.host, self.config.port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(host, port), family=family
            )
        except OSError as e:
            raise ConfigError(f"cannot listen on {host}:{port}/udp for DNS: {_why(e)}") from None
        self._udp = transport
        # Bind TCP to the port UDP got (matters when port 0 was asked for).
        port = self.address[1]
        try:
            self._tcp = await loop.create_server(
                lambda: _TcpProtocol(self), host=host, port=port, family=family,
                reuse_address=True, backlog=128,
            )
        except OSError as e:
            transport.close()
            raise ConfigError(f"cannot listen on {host}:{port}/tcp for DNS: {_why(e)}") from None
        log.info("DNS listening on %s:%d (UDP and TCP)", host, port)

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            self.connections.close_all()
            await self._tcp.wait_closed()
            self._tcp = None


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None
        self._n = 0  # queries seen, for latency sampling

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio's: no isinstance check.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self._n += 1
        if self._n & (LATENCY_SAMPLE - 1):
            out = self.server.answerer.respond(data, tcp=False, client=str(addr[0]))
        else:
            t0 = time.perf_counter()
            out = self.server.answerer.respond(data, tcp=False, client=str(addr[0]))
            self.server.stats.observe_latency(time.perf_counter() - t0)
        if out is not None and self.transport is not None:
            self.transport.sendto(out, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors from earlier sends; not fatal for a UDP server.
        self.server.stats.problems["udp_socket_error"] += 1


class _Connections:
    """The TCP connection manager: admits a connection under the global cap and
    the per-client cap, and closes them all on shutdown.

    The per-client cap keeps one address (a pod opening connections and
    holding them) from taking every slot: TCP fallback stays open to the others."""

    def __init__(self, config: ServerConfig, stats: Stats) -> None:
        self._max = config.tcp_max_connections
        self._per_client = config.tcp_max_connections_per_client
        self._stats = stats
        self._open: set[_TcpProtocol] = set()
        self._by_client: Counter[str] = Counter()

    def admit(self, conn: _TcpProtocol) -> bool:
        """Count ``conn`` in, or count the refusal and return False."""
        if len(self._open) >= self._max:
            self._stats.problems["tcp_connection_limit"] += 1
            return False
        if self._by_client[conn.client] >= self._per_client:
            self._stats.problems["tcp_client_connection_limit"] += 1
            return False
        self._open.add(conn)
        self._by_client[conn.client] += 1
        return True

    def release(self, conn: _TcpProtocol) -> None:
        if conn in self._open:
            self._open.discard(conn)
            left = self._by_client[conn.client] - 1
            if left:
                self._by_client[conn.client] = left
            else:
                del self._by_client[conn.client]

    def close_all(self) -> None:
        for conn in list(self._open):
            conn.close()


class _TcpProtocol(asyncio.Protocol):
    """RFC 7766: 2-byte length prefix, pipelined queries answered in order,
    idle timeout, and caps on concurrent connections.

    Backpressure the way aiohttp's ``web_protocol`` does it: while the peer
    does not read (the transport calls :meth:`pause_writing`), its queries are
    no longer read nor answered, so a client that pipelines and never reads
    holds at most one read's worth of queries and the write buffer's high-water
    mark of answers here; the rest waits in the kernel's socket buffers."""

    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.client = ""
        self._loop = asyncio.get_running_loop()
        self._idle: asyncio.TimerHandle | None = None
        self._last = 0.0  # loop time of the last complete message
        self._paused = False  # the peer is not reading our answers

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = self.transport.get_extra_info("peername")
        self.client = str(peer[0]) if peer else ""
        if not self.server.connections.admit(self):
            self.transport.abort()
            return
        self.transport.set_write_buffer_limits(high=WRITE_HIGH, low=WRITE_LOW)
        self._last = self._loop.time()
        self._idle = self._loop.call_at(self._last + self.server.config.tcp_idle_timeout,
                                        self._timeout)

    def _timeout(self) -> None:
        # RFC 7766 6.2.3: idle is the time since the last complete message, so
        # bytes that never make a message (a dribbler) do not keep a connection.
        # One timer a connection: a message only moves _last, and the timer,
        # when it fires early, is set again for what is left.
        deadline = self._last + self.server.config.tcp_idle_timeout
        if self._loop.time() < deadline:
            self._idle = self._loop.call_at(deadline, self._timeout)
            return
        self._idle = None
        self.server.stats.problems["tcp_idle_timeout"] += 1
        if self.transport is not None:
            # Not close(): answers a peer that stopped reading left in the
            # buffer would be kept waiting for it.
            self.transport.abort()

    def close(self) -> None:
        """Close after the answers already written; a peer that stopped reading
        them would hold the connection (and the shutdown) open: abort it."""
        if self.transport is not None:
            if self._paused:
                self.transport.abort()
            else:
                self.transport.close()

    def pause_writing(self) -> None:
        self._paused = True
        self.server.stats.problems["tcp_client_not_reading"] += 1
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._paused = False
        self._last = self._loop.time()  # the peer read: not idle
        self._answer()
        if not self._paused and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._answer()

    def _answer(self) -> None:
        """Answer the complete queries in the buffer until the peer stops reading."""
        buf = self.buf
        if len(buf) >= 2 and len(buf) >= 2 + (buf[0] << 8 | buf[1]):
            self._last = self._loop.time()  # a complete message: not idle
        while len(buf) >= 2 and not self._paused:
            length = buf[0] << 8 | buf[1]
            if len(buf) < 2 + length:
                return
            msg = bytes(buf[2:2 + length])
            del buf[:2 + length]
            if length == 0:
                self.server.stats.problems["dropped_short"] += 1
                continue
            transport = self.transport
            assert transport is not None
            for out in self.server.answerer.respond_tcp(msg, client=self.client):
                transport.write(struct.pack("!H", len(out)) + out)

    def eof_received(self) -> bool | None:
        return None  # close our side too once the client is done

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        self.server.connections.release(self)


def _why(e: OSError) -> str:
    """A short reason; uvloop's bind errors carry no errno, so probe for the usual one."""
    if e.errno == errno.EADDRINUSE or "bind" in str(e):
        return "address already in use (or not available); choose another port"
    if e.errno == errno.EACCES:
        return "permission denied (ports below 1024 need CAP_NET_BIND_SERVICE)"
    return e.strerror or str(e)


def parse_listen(text: str, *, flag: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` → (host, port); ``ValueError`` with the flag named."""
    host, sep, port_s = text.rpartition(":")
    if not sep or not port_s.isdigit() or not 0 <= int(port_s) <= 65535:
        raise ValueError(f"{flag} {text!r}: expected HOST:PORT, e.g. 0.0.0.0:5353")
    host = host.strip("[]") or "0.0.0.0"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{flag} {text!r}: {host!r} is not an IP address") from None
    return host, int(port_s)


def parse_networks(
    values: Sequence[str], *, flag: str
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    out = []
    for v in values:
        try:
            out.append(ipaddress.ip_network(v.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{flag} {v!r} is not a CIDR (e.g. 10.0.0.0/8)") from None
    return tuple(out)
