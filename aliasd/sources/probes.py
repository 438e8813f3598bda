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
import math
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
_CONNECTING, _ANSWERING = 1, 2


class Probe:
    """One probe in flight on a raw non-blocking socket: no transport,
    protocol, task or future per probe, and no address lookup (the host is an
    IP address). ``on_done`` gets None when the probe passed, else why it
    failed, exactly once unless :meth:`cancel` comes first.

    Until :meth:`wait`, the probe only goes as far as it can without waiting
    (the kernel often completes a handshake within ``connect()`` itself: a
    loopback or same-host peer answers in the same softirq); from then on the
    loop wakes it when its socket is ready, and at its timeout.

    The socket closes with a reset (SO_LINGER 0), as HAProxy ends its checks:
    a probe that closed normally would leave a TIME_WAIT socket behind each
    time, some 12,000 of them at 1,000 targets every 5 s."""

    __slots__ = ("_buf", "_check", "_deadline", "_fd", "_loop", "_on_done", "_phase", "_sock",
                 "_timer", "_waking", "_watched")

    def __init__(self, check: Check, on_done: Callable[[str | None], None], *,
                 loop: asyncio.AbstractEventLoop) -> None:
        self._check = check
        self._loop = loop
        self._on_done: Callable[[str | None], None] | None = on_done
        self._sock: socket.socket | None = None
        self._fd = -1
        self._buf = b""
        self._phase = _CONNECTING
        self._waking = False  # wait() was called
        self._watched = 0  # the phase whose readiness the loop watches (0: none)
        self._deadline = loop.time() + check.timeout
        self._timer: asyncio.TimerHandle | None = None
        self._guard(self._connect)

    def wait(self) -> None:
        """From now on, let the loop wake this probe: when its socket is ready
        (after one more try without waiting), and at its timeout."""
        if self._sock is None or self._waking:
            return  # over, or waiting already
        self._waking = True
        if self._loop.time() >= self._deadline:
            self._timed_out()
            return
        self._timer = self._loop.call_at(self._deadline, self._timed_out)
        self._guard(self._advance)

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
        self._advance()

    def _advance(self) -> None:
        """As far as the socket goes now; where it must wait, watch it if waking."""
        sock = self._sock
        if sock is None:
            return
        if self._phase == _CONNECTING:
            try:
                sock.getpeername()
            except OSError:
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    self._finish(os.strerror(err))
                else:
                    self._watch()
                return
            if self._check.kind != HTTP:
                self._finish(None)
                return
            try:  # a fresh socket's send buffer takes a request line and a few headers
                sock.send(self._request())
            except OSError as e:
                self._finish(_why(e))
                return
            self._phase = _ANSWERING
            self._watch()  # the answer has not come yet: no read before it is due
            return
        try:
            data = sock.recv(MAX_STATUS_LINE + 1)
        except (BlockingIOError, InterruptedError):
            self._watch()
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
        else:
            self._watch()

    def _request(self) -> bytes:
        check = self._check
        host = f"[{check.host}]" if ":" in check.host else check.host
        return (f"GET {check.path} HTTP/1.1\r\nHost: {host}:{check.port}\r\n"
                f"User-Agent: aliasd-health\r\nConnection: close\r\n\r\n").encode()

    def _watch(self) -> None:
        if not self._waking or self._watched == self._phase:
            return
        self._unwatch()
        if self._phase == _CONNECTING:
            self._loop.add_writer(self._fd, self._guard, self._advance)
        else:
            self._loop.add_reader(self._fd, self._guard, self._advance)
        self._watched = self._phase

    def _unwatch(self) -> None:
        if self._watched == _CONNECTING:
            self._loop.remove_writer(self._fd)
        elif self._watched == _ANSWERING:
            self._loop.remove_reader(self._fd)
        self._watched = 0

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
        self._unwatch()
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
    running.wait()
    try:
        return await done
    finally:
        running.cancel()


class Running(Protocol):
    """A probe in flight (as :class:`Probe`)."""

    def wait(self) -> None: ...

    def cancel(self) -> None: ...


StartProbe = Callable[[Check, Callable[[str | None], None]], Running]
"""Starts one probe of a check, calling back with its result (as :func:`start_probe`)."""
TICK = 0.02
"""Seconds between the prober's wake-ups while probes are due."""


class Prober:
    """Probes every check in :meth:`reconcile`'s set once an interval.

    One scheduler for all checks, not a task sleeping per check: a heap of
    when each is next due, and one timer that wakes on a grid of ``TICK``.
    A tick starts the checks due by then (at most ``limit`` in flight, the
    rest wait in line) and takes the answers of the probes the tick before
    started: a peer that answers within a tick costs no wake-up of its own,
    so 1,000 checks every 5 s wake the loop 50 times a second, not 300.
    A probe still unanswered at the next tick asks the loop to wake it."""

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
        self._fresh: list[Running] = []  # started by the last tick
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._ticking = False

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
            self._fresh.clear()
            self._line.clear()
            self._heap.clear()
            self._scheduled.clear()

    def _schedule(self, check: Check, due: float) -> None:
        entry = next(self._entries)
        self._scheduled[check] = entry
        heapq.heappush(self._heap, (due, entry, check))

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        """The timer at the next tick with work: moved only when that changes."""
        heap = self._heap
        while heap and self._scheduled.get(heap[0][2]) != heap[0][1]:
            heapq.heappop(heap)  # reconciled away
        at = math.ceil(heap[0][0] / TICK) * TICK if heap else math.inf
        if self._fresh or (self._line and len(self._running) < self._limit):
            at = min(at, (math.floor(loop.time() / TICK) + 1) * TICK)
        if self._timer is not None:
            if self._timer_at == at:
                return
            self._timer.cancel()
            self._timer = None
        if at != math.inf:
            self._timer, self._timer_at = loop.call_at(at, self._tick, loop), at

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        self._ticking = True
        try:
            fresh, self._fresh = self._fresh, []
            for running in fresh:
                running.wait()  # done now if its answer came
            heap, now = self._heap, max(loop.time(), self._timer_at)
            while heap and heap[0][0] <= now:
                due, entry, check = heapq.heappop(heap)
                if self._scheduled.get(check) == entry:
                    del self._scheduled[check]
                    self._line.append((due, check))
            self._start_due()
        finally:
            self._ticking = False
        self._arm(loop)

    def _start_due(self) -> None:
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
                self._fresh.append(started)

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
        if not self._ticking:
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
