"""Health probes: every replica probes the checked targets its claims carry,
for itself, so its answers never wait for the API server or the leader, and a
partitioned replica judges by what it can reach.

One task per distinct check (equal checks on many Aliases are one probe),
started at a random point of its first interval so probes spread out, at most
``limit`` probes in flight at once. A probe is a TCP connect, or an HTTP/1.1
GET whose status line is all that is read: a handful of callbacks on the
event loop, no DNS work waits behind them. A change of health (after the
hysteresis of :mod:`aliasd.sources.health`) goes to the engine like any other
input (``on_health``, the inbox); the status writer and the metrics read
the states.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import heapq
import itertools
import logging
import os
import random
import socket
import struct
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from aliasd.model import HTTP, Check
from aliasd.sources.health import STARTING, TargetHealth, observe

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 64
"""Probes in flight at once (``--health-max-concurrent-probes``)."""
MAX_STATUS_LINE = 4096


_LINGER_0 = struct.pack("ii", 1, 0)
_IN_PROGRESS = (errno.EINPROGRESS, errno.EAGAIN)


class Probe:
    """One probe in flight, driven by readiness callbacks on a raw non-blocking
    socket: no transport, protocol, task or future per probe, and no address
    lookup (the host is an IP address). ``on_done`` gets None when the probe
    passed, else why it failed, exactly once unless :meth:`cancel` comes first.

    The socket closes with a reset (SO_LINGER 0), as HAProxy ends its checks:
    a probe that closed normally would leave a TIME_WAIT socket behind each
    time, some 12,000 of them at 1,000 targets every 5 s."""

    __slots__ = ("_buf", "_check", "_deadline", "_fd", "_loop", "_on_done", "_sock", "_timer",
                 "_waiting")

    def __init__(self, check: Check, on_done: Callable[[str | None], None], *,
                 loop: asyncio.AbstractEventLoop) -> None:
        self._check = check
        self._loop = loop
        self._on_done: Callable[[str | None], None] | None = on_done
        self._sock: socket.socket | None = None
        self._fd = -1
        self._buf = b""
        self._waiting = 0  # 1: for the connect (writable), 2: for the answer (readable)
        self._deadline = loop.time() + check.timeout
        self._timer: asyncio.TimerHandle | None = None  # armed only when there is a wait
        self._guard(self._connect)

    def cancel(self) -> None:
        """Stop without an answer: ``on_done`` is not called."""
        self._on_done = None
        self._close()

    def _connect(self) -> None:
        family = socket.AF_INET6 if ":" in self._check.host else socket.AF_INET
        sock = self._sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        self._fd = sock.fileno()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_0)
        err = sock.connect_ex((self._check.host, self._check.port))
        if err not in (0, *_IN_PROGRESS):
            self._finish(os.strerror(err))
            return
        # The kernel often completes a handshake within connect() itself (a
        # loopback or same-host peer answers in the same softirq): then there
        # is nothing to wait for.
        try:
            sock.getpeername()
        except OSError:
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self._finish(os.strerror(err))
            else:
                self._wait(1)
                self._loop.add_writer(self._fd, self._guard, self._connected)
            return
        self._connected()

    def _connected(self) -> None:
        assert self._sock is not None
        if self._waiting == 1:
            self._loop.remove_writer(self._fd)
            self._waiting = 0
            err = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self._finish(os.strerror(err))
                return
        if self._check.kind != HTTP:
            self._finish(None)
            return
        host = f"[{self._check.host}]" if ":" in self._check.host else self._check.host
        request = (f"GET {self._check.path} HTTP/1.1\r\nHost: {host}:{self._check.port}\r\n"
                   f"User-Agent: aliasd-health\r\nConnection: close\r\n\r\n").encode()
        try:  # a fresh socket's send buffer takes a request of one line and a few headers
            self._sock.send(request)
        except OSError as e:
            self._finish(_why(e))
            return
        self._wait(2)
        self._loop.add_reader(self._fd, self._guard, self._readable)

    def _readable(self) -> None:
        assert self._sock is not None
        try:
            data = self._sock.recv(MAX_STATUS_LINE + 1)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._finish(_why(e))
            return
        if not data:
            self._finish("closed before a status line")
            return
        self._buf += data
        if b"\n" in self._buf or len(self._buf) > MAX_STATUS_LINE:
            self._finish(_status_error(self._check, self._buf.split(b"\n", 1)[0]))

    def _wait(self, what: int) -> None:
        self._waiting = what
        if self._timer is None:
            self._timer = self._loop.call_at(self._deadline, self._timed_out)

    def _timed_out(self) -> None:
        self._finish(f"no answer within {self._check.timeout:g} s")

    def _guard(self, step: Callable[[], None]) -> None:
        try:
            step()
        except Exception as e:  # a probe bug must not leave the check unprobed
            log.exception("probe of %s failed", self._check.target)
            self._finish(f"probe error: {type(e).__name__}")

    def _finish(self, error: str | None) -> None:
        self._close()
        on_done, self._on_done = self._on_done, None
        if on_done is not None:
            on_done(error)

    def _close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._sock is None:
            return
        if self._waiting == 1:
            self._loop.remove_writer(self._fd)
        elif self._waiting == 2:
            self._loop.remove_reader(self._fd)
        self._waiting = 0
        self._sock.close()
        self._sock = None


def _why(e: OSError) -> str:
    return os.strerror(e.errno) if e.errno else str(e) or type(e).__name__


def _status_error(check: Check, line: bytes) -> str | None:
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return "the answer is not HTTP"
    status = int(parts[1])
    if any(lo <= status <= hi for lo, hi in check.expect):
        return None
    return f"HTTP {status}"


def start_probe(check: Check, on_done: Callable[[str | None], None]) -> Probe:
    """Probe ``check`` once, from the running loop; ``on_done`` as :class:`Probe`'s."""
    return Probe(check, on_done, loop=asyncio.get_running_loop())


async def probe(check: Check) -> str | None:
    """Probe ``check`` once: None when it passes, else why it failed."""
    done: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()

    def answer(error: str | None) -> None:
        if not done.done():
            done.set_result(error)

    running = start_probe(check, answer)
    try:
        return await done
    finally:
        running.cancel()


class Running(Protocol):
    """A probe in flight."""

    def cancel(self) -> None: ...


StartProbe = Callable[[Check, Callable[[str | None], None]], Running]
"""Starts one probe of a check, calling back with its result (as :func:`start_probe`)."""
_SLACK = 0.001  # seconds: a timer may fire this much before its time (the loop's clock resolution)


class Prober:
    """Probes every check in :meth:`reconcile`'s set once an interval.

    One scheduler for all checks: a heap of when each is next due and one
    timer for the earliest, rather than a task sleeping per check; a due
    check waits in line while ``limit`` probes are in flight."""

    name = "health-probes"

    def __init__(self, *, on_health: Callable[[Check, bool], None], limit: int = DEFAULT_LIMIT,
                 clock: Callable[[], float] = time.time, probe: StartProbe = start_probe,
                 rng: random.Random | None = None) -> None:
        self._on_health = on_health  # a verdict changed: to the engine (the inbox)
        self._limit = limit
        self._clock = clock
        self._probe = probe
        self._rng = rng or random.Random()
        self._states: dict[Check, TargetHealth] = {}
        self._results: Counter[tuple[str, str]] = Counter()  # (kind, passed|failed)
        self._heap: list[tuple[float, int, Check]] = []  # (due, entry, check)
        self._entries = itertools.count()
        self._scheduled: dict[Check, int] = {}  # check -> its live heap entry
        self._line: deque[tuple[float, Check]] = deque()  # due, waiting for a slot
        self._running: dict[Check, tuple[float, Running | None]] = {}  # check -> (due, probe)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._starting = False

    @property
    def states(self) -> Mapping[Check, TargetHealth]:
        """Each probed check's health now."""
        return self._states

    def reconcile(self, checks: frozenset[Check]) -> None:
        """Probe exactly ``checks`` (a committer reporter passes the engine's):
        new ones start healthy, gone ones stop."""
        loop = asyncio.get_running_loop()
        for gone in self._states.keys() - checks:
            del self._states[gone]
            self._scheduled.pop(gone, None)  # its heap entry is skipped when it comes up
            _, running = self._running.pop(gone, (0.0, None))
            if running is not None:
                running.cancel()
        now = loop.time()
        for new in checks - self._states.keys():
            self._states[new] = STARTING
            self._schedule(new, now + self._rng.uniform(0, new.interval))  # spread the probes
        self._arm(loop)

    async def run(self) -> None:
        try:
            await asyncio.Future()  # until cancelled: the probes are reconcile's
        finally:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            for _, running in self._running.values():
                if running is not None:
                    running.cancel()
            self._running.clear()
            self._line.clear()
            self._heap.clear()
            self._scheduled.clear()

    def _schedule(self, check: Check, due: float) -> None:
        entry = next(self._entries)
        self._scheduled[check] = entry
        heapq.heappush(self._heap, (due, entry, check))

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        """One timer, at the earliest due check: moved only when that changes."""
        heap = self._heap
        while heap and self._scheduled.get(heap[0][2]) != heap[0][1]:
            heapq.heappop(heap)  # reconciled away
        if not heap:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return
        due = heap[0][0]
        if self._timer is not None:
            if self._timer_at == due:
                return
            self._timer.cancel()
        self._timer, self._timer_at = loop.call_at(due, self._wake, loop), due

    def _wake(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        heap, now = self._heap, loop.time() + _SLACK
        while heap and heap[0][0] <= now:
            due, entry, check = heapq.heappop(heap)
            if self._scheduled.get(check) == entry:
                del self._scheduled[check]
                self._line.append((due, check))
        self._start_due()
        self._arm(loop)

    def _start_due(self) -> None:
        if self._starting:
            return  # a probe that ended at once, inside the loop below
        self._starting = True
        try:
            line, running = self._line, self._running
            while line and len(running) < self._limit:
                due, check = line.popleft()
                if check not in self._states:
                    continue  # reconciled away while in line
                running[check] = (due, None)
                try:
                    started = self._probe(check, functools.partial(self._done, check))
                except Exception as e:  # a probe bug must not stop the others
                    log.exception("probe of %s failed", check.target)
                    self._done(check, f"probe error: {type(e).__name__}")
                    continue
                if check in running:  # not over already
                    running[check] = (due, started)
        finally:
            self._starting = False

    def _done(self, check: Check, error: str | None) -> None:
        due, _ = self._running.pop(check, (0.0, None))
        self._results[(check.kind, "failed" if error else "passed")] += 1
        before = self._states.get(check)
        if before is None:
            return  # reconciled away meanwhile
        after = observe(check, before, ok=error is None, error=error, now=self._clock())
        self._states[check] = after
        if after.healthy != before.healthy:
            log.info("target %s is %s%s", check.target,
                     "healthy" if after.healthy else "unhealthy",
                     f": {error}" if error else "")
            self._on_health(check, after.healthy)
        loop = asyncio.get_running_loop()
        due += check.interval  # on schedule, however long the probe took
        now = loop.time()
        if due < now:  # fell behind (a stalled loop): no burst to catch up
            due = now + check.interval
        self._schedule(check, due)
        self._start_due()  # its slot is free
        if not self._starting:
            self._arm(loop)

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        probes = CounterMetricFamily("aliasd_health_probes", "Health probes by result",
                                     labels=["protocol", "result"])
        for (kind, result), n in sorted(self._results.items()):
            probes.add_metric([kind, result], n)
        yield probes
        healthy = GaugeMetricFamily("aliasd_target_healthy",
                                    "Whether a checked target answers (1) or not (0), "
                                    "as this replica's probes see it", labels=["target"])
        by_target: dict[str, bool] = {}
        for check, state in self._states.items():  # two checks of one target: both must pass
            by_target[check.target] = by_target.get(check.target, True) and state.healthy
        for target, ok in sorted(by_target.items()):
            healthy.add_metric([target], 1.0 if ok else 0.0)
        yield healthy
