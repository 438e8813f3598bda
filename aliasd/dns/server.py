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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from aliasd.dns.answer import Answerer
from aliasd.dns.stats import LATENCY_SAMPLE, Stats
from aliasd.model import ConfigError
from aliasd.zone import Snapshot

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerConfig:
    host: str = "0.0.0.0"
    port: int = 5353
    tcp_idle_timeout: float = 10.0  # RFC 7766 6.2.3: a few seconds
    tcp_max_connections: int = 256
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
        self._tcp_conns: set[_TcpProtocol] = set()

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
            for conn in list(self._tcp_conns):
                conn.close()
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


class _TcpProtocol(asyncio.Protocol):
    """RFC 7766: 2-byte length prefix, pipelined queries answered in order,
    idle timeout, and a cap on concurrent connections."""

    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.client = ""
        self._idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = self.transport.get_extra_info("peername")
        self.client = str(peer[0]) if peer else ""
        conns = self.server._tcp_conns
        if len(conns) >= self.server.config.tcp_max_connections:
            self.server.stats.problems["tcp_connection_limit"] += 1
            self.transport.abort()
            return
        conns.add(self)
        self._arm()

    def _arm(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        loop = asyncio.get_running_loop()
        self._idle = loop.call_later(self.server.config.tcp_idle_timeout, self._timeout)

    def _timeout(self) -> None:
        self.server.stats.problems["tcp_idle_timeout"] += 1
        self.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._arm()
        while len(self.buf) >= 2:
            (length,) = struct.unpack_from("!H", self.buf)
            if len(self.buf) < 2 + length:
                if len(self.buf) > 2 + 65535:  # cannot happen with a 16-bit length
                    self.close()
                return
            msg = bytes(self.buf[2:2 + length])
            del self.buf[:2 + length]
            if length == 0:
                self.server.stats.problems["dropped_short"] += 1
                continue
            for out in self.server.answerer.respond_tcp(msg, client=self.client):
                assert self.transport is not None
                self.transport.write(struct.pack("!H", len(out)) + out)

    def eof_received(self) -> bool | None:
        return None  # close our side too once the client is done

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self.server._tcp_conns.discard(self)


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
