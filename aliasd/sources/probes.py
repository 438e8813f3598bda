"""Health probes: every replica probes the checked targets its claims carry,
for itself, so its answers never wait for the API server or the leader, and a
partitioned replica judges by what it can reach.

One schedule entry per distinct check (equal checks on many Aliases are one
probe), first due at a random point of its first interval so probes spread
out, at most ``limit`` probes in flight at once. A probe is a TCP connect, or
an HTTP/1.1 GET whose status line is all that is read, on a raw non-blocking
socket (:mod:`aliasd.sources.probe`): a few system calls on a tick of the
event loop, no DNS work waits behind them. Waking the loop costs more than
the probe itself, so probes share the wake-ups (:class:`Prober`). A change
of health (after the hysteresis of :mod:`aliasd.sources.health`) goes to
the engine like any other input (``on_health``, the inbox); the status
writer and the metrics read the states.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
import logging
import math
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from aliasd.model import Check
from aliasd.sources.health import STARTING, TargetHealth, observe
from aliasd.sources.probe import start_probe

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 64
"""Probes in flight at once (``--health-max-concurrent-probes``)."""


class Running(Protocol):
    """A probe in flight (as :class:`aliasd.sources.probe.Probe`)."""

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
