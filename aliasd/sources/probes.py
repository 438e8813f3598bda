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
import logging
import os
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import cast

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from aliasd.model import HTTP, Check
from aliasd.sources.health import STARTING, TargetHealth, observe

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 64
"""Probes in flight at once (``--health-max-concurrent-probes``)."""
MAX_STATUS_LINE = 4096


class _StatusLine(asyncio.Protocol):
    """Sends one request and resolves to the response's status line."""

    def __init__(self, request: bytes, done: asyncio.Future[bytes]) -> None:
        self._request = request
        self._done = done
        self._buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: uvloop's TCP transport implements
        # asyncio.Transport without subclassing it (Fatal1ty/aioapns#58).
        cast(asyncio.Transport, transport).write(self._request)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if (b"\n" in self._buf or len(self._buf) > MAX_STATUS_LINE) and not self._done.done():
            self._done.set_result(self._buf.split(b"\n", 1)[0])

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._done.done():
            self._done.set_exception(exc or ConnectionError("closed before a status line"))


async def probe(check: Check) -> str | None:
    """Probe ``check`` once: None when it passes, else why it failed."""
    loop = asyncio.get_running_loop()
    transport: asyncio.Transport | None = None
    try:
        async with asyncio.timeout(check.timeout):
            if check.kind != HTTP:
                transport, _ = await loop.create_connection(asyncio.Protocol, check.host,
                                                            check.port)
                return None
            host = f"[{check.host}]" if ":" in check.host else check.host
            request = (f"GET {check.path} HTTP/1.1\r\nHost: {host}:{check.port}\r\n"
                       f"User-Agent: aliasd-health\r\nConnection: close\r\n\r\n").encode()
            done: asyncio.Future[bytes] = loop.create_future()
            transport, _ = await loop.create_connection(
                lambda: _StatusLine(request, done), check.host, check.port)
            line = await done
    except TimeoutError:
        return f"no answer within {check.timeout:g} s"
    except OSError as e:  # asyncio words a refused connect as "Connect call failed"
        return os.strerror(e.errno) if e.errno else str(e) or type(e).__name__
    finally:
        if transport is not None:
            transport.abort()
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return "the answer is not HTTP"
    status = int(parts[1])
    if any(lo <= status <= hi for lo, hi in check.expect):
        return None
    return f"HTTP {status}"


class Prober:
    """Runs one probe loop per check in :meth:`reconcile`'s set."""

    name = "health-probes"

    def __init__(self, *, on_health: Callable[[Check, bool], None], limit: int = DEFAULT_LIMIT,
                 clock: Callable[[], float] = time.time,
                 probe: Callable[[Check], Awaitable[str | None]] = probe,
                 rng: random.Random | None = None) -> None:
        self._on_health = on_health  # a verdict changed: to the engine (the inbox)
        self._limit = asyncio.Semaphore(limit)
        self._clock = clock
        self._probe = probe
        self._rng = rng or random.Random()
        self._tasks: dict[Check, asyncio.Task[None]] = {}
        self._states: dict[Check, TargetHealth] = {}
        self._results: Counter[tuple[str, str]] = Counter()  # (kind, passed|failed)

    @property
    def states(self) -> Mapping[Check, TargetHealth]:
        """Each probed check's health now."""
        return self._states

    def reconcile(self, checks: frozenset[Check]) -> None:
        """Probe exactly ``checks`` (a committer reporter passes the engine's):
        new ones start healthy, gone ones stop."""
        for gone in self._tasks.keys() - checks:
            self._tasks.pop(gone).cancel()
            self._states.pop(gone, None)
        for new in checks - self._tasks.keys():
            self._states[new] = STARTING
            self._tasks[new] = asyncio.get_running_loop().create_task(
                self._loop(new), name=f"probe {new.target}")

    async def run(self) -> None:
        try:
            await asyncio.Future()  # until cancelled: the loops are reconcile's
        finally:
            for task in self._tasks.values():
                task.cancel()
            self._tasks.clear()

    async def _loop(self, check: Check) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + self._rng.uniform(0, check.interval)  # spread the probes
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            due += check.interval  # on schedule, however long the probe took
            async with self._limit:
                error = await self._run_probe(check)
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
            if due < loop.time():  # fell behind (a stalled loop): no burst to catch up
                due = loop.time() + check.interval

    async def _run_probe(self, check: Check) -> str | None:
        try:
            return await self._probe(check)
        except Exception as e:  # a probe bug must not stop the loop
            log.exception("probe of %s failed", check.target)
            return f"probe error: {type(e).__name__}"

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
