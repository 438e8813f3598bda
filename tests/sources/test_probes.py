"""The health probes against real loopback servers: a target that stops, comes
back, answers too slowly or fails one probe in three. Each probe is counted,
so the tests assert after which probe the verdict changes (a dead target
leaves after ``unhealthy`` failed probes: within interval x threshold plus
the interval it died in), not how long it took."""

from __future__ import annotations

import asyncio
import random
import subprocess
from collections.abc import Callable, Iterator

import pytest
import uvloop

from aliasd.model import HTTP, TCP, Check
from aliasd.sources.probe import probe, start_probe
from aliasd.sources.probes import TICK, Prober, Running
from tests.support.targets import TargetServer


@pytest.fixture
def target() -> Iterator[TargetServer]:
    server = TargetServer("127.0.0.2")
    try:
        yield server
    finally:
        server.close()


LOOPS = [pytest.param(asyncio.new_event_loop, id="asyncio"),
         pytest.param(uvloop.new_event_loop, id="uvloop")]  # aliasd runs on uvloop


def run_probes(check: Check, script: Callable[[int], None], *, probes: int,
               loop: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
               ) -> tuple[list[str | None], list[tuple[int, bool]]]:
    """Probe ``check`` ``probes`` times with a real Prober, ``script(n)``
    setting the target up for probe n (1-based) first: every probe's
    result, and each change of verdict with the probe that made it."""
    results: list[str | None] = []
    verdicts: list[tuple[int, bool]] = []

    async def main() -> None:
        done = asyncio.Event()

        def counted(c: Check, on_done: Callable[[str | None], None]) -> Running:
            script(len(results) + 1)

            def record(got: str | None) -> None:
                results.append(got)
                if len(results) == probes:
                    done.set()
                on_done(got)

            return start_probe(c, record)

        prober = Prober(on_health=lambda c, ok: verdicts.append((len(results), ok)),
                        probe=counted)
        task = asyncio.create_task(prober.run())
        prober.reconcile(frozenset({check}))
        await asyncio.wait_for(done.wait(), timeout=120)
        prober.reconcile(frozenset())
        task.cancel()

    with asyncio.Runner(loop_factory=loop) as runner:
        runner.run(main())
    return results[:probes], verdicts


def check(kind: str, target: TargetServer, **kw: float) -> Check:
    return Check(kind, target.host, target.port, "/healthz", interval=0.05,
                 timeout=kw.pop("timeout", 1.0), healthy=2, unhealthy=3)


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("kind", [TCP, HTTP])
def test_a_dead_target_leaves_after_the_unhealthy_threshold_and_returns(
        target: TargetServer, kind: str, loop: Callable[[], asyncio.AbstractEventLoop]) -> None:
    # Up for probes 1-4, down for 5-12, up again from 13.
    def script(n: int) -> None:
        if n == 5:
            target.stop()
        elif n == 13:
            target.start()

    results, verdicts = run_probes(check(kind, target), script, probes=20, loop=loop)
    assert [r is None for r in results] == [True] * 4 + [False] * 8 + [True] * 8
    assert results[4] is not None and "refused" in results[4].lower()
    # Unhealthy on the third failure in a row (probe 7), healthy on the
    # second success in a row (probe 14): no sooner, no later.
    assert verdicts == [(7, False), (14, True)]


def test_a_target_answering_past_the_timeout_is_unhealthy(target: TargetServer) -> None:
    def script(n: int) -> None:
        target.delay = 0.5 if 3 <= n <= 6 else 0.0

    results, verdicts = run_probes(check(HTTP, target, timeout=0.2), script, probes=10)
    assert results[2:6] == ["no answer within 0.2 s"] * 4
    assert [r is None for r in results[:2] + results[6:]] == [True] * 6
    assert verdicts == [(5, False), (8, True)]


def test_one_failure_in_three_never_flaps_the_answer(target: TargetServer) -> None:
    target.fail_every = 3  # 503 on requests 3, 6, 9, ...
    results, verdicts = run_probes(check(HTTP, target), lambda n: None, probes=30)
    assert results.count("HTTP 503") == 10
    assert [i + 1 for i, r in enumerate(results) if r is not None] == list(range(3, 31, 3))
    assert verdicts == []


def test_an_unexpected_status_fails_an_http_check(target: TargetServer) -> None:
    ok = Check(HTTP, target.host, target.port, "/", expect=((503, 503),), timeout=1.0)
    target.fail_every = 1
    assert asyncio.run(probe(ok)) is None
    default = Check(HTTP, target.host, target.port, "/", timeout=1.0)
    assert asyncio.run(probe(default)) == "HTTP 503"


def test_a_server_that_is_not_http_fails_an_http_check() -> None:
    async def main() -> str | None:
        async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"SSH-2.0-OpenSSH_9.2\r\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(garbage, "127.0.0.2", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            return await probe(Check(HTTP, "127.0.0.2", port, "/", timeout=1.0))

    assert asyncio.run(main()) == "the answer is not HTTP"


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("kind", [TCP, HTTP])
def test_probes_leave_no_time_wait_sockets_behind(
        target: TargetServer, kind: str, loop: Callable[[], asyncio.AbstractEventLoop]) -> None:
    c = Check(kind, target.host, target.port, "/", timeout=1.0)

    async def main() -> list[str | None]:
        return [await probe(c) for _ in range(20)]

    with asyncio.Runner(loop_factory=loop) as runner:
        assert runner.run(main()) == [None] * 20
    # The prober's ends of the 20 connections (to the target's address).
    waiting = subprocess.run(["ss", "-Htan", "state", "time-wait", "dst",
                              f"{target.host}:{target.port}"],
                             capture_output=True, text=True, check=True).stdout
    assert waiting.splitlines() == []


@pytest.mark.parametrize("loop", LOOPS)
def test_probes_wait_a_tick_before_the_loop_wakes_them_and_keep_to_the_limit(
        loop: Callable[[], asyncio.AbstractEventLoop]) -> None:
    # 12 checks due at once, a limit of 3, each probe answering 0.05 s after
    # it starts waiting: never more than 3 in flight, and a probe's first
    # wait comes a tick after its start (its answer is looked for then).
    starts: dict[Check, float] = {}
    waits: list[float] = []
    in_flight = [0, 0]  # now, most
    ended: list[Check] = []
    all_ended = asyncio.Event()

    class Slow:
        def __init__(self, c: Check, on_done: Callable[[str | None], None]) -> None:
            self._c, self._on_done = c, on_done
            in_flight[0] += 1
            in_flight[1] = max(in_flight)
            starts[c] = asyncio.get_running_loop().time()

        def wait(self) -> None:
            loop = asyncio.get_running_loop()
            waits.append(loop.time() - starts[self._c])
            loop.call_later(0.05, self._end)

        def _end(self) -> None:
            in_flight[0] -= 1
            ended.append(self._c)
            if len(ended) == len(checks):
                all_ended.set()
            self._on_done(None)

        def cancel(self) -> None:
            pass

    class AtOnce(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return a  # every check's first probe due now

    checks = frozenset(Check(TCP, f"127.0.0.{i}", 80, interval=10.0) for i in range(1, 13))

    async def main() -> None:
        prober = Prober(on_health=lambda c, ok: None, limit=3, probe=Slow,
                        rng=AtOnce())
        task = asyncio.create_task(prober.run())
        prober.reconcile(checks)
        await asyncio.wait_for(all_ended.wait(), timeout=30)
        task.cancel()

    with asyncio.Runner(loop_factory=loop) as runner:
        runner.run(main())
    assert in_flight[1] == 3
    assert len(waits) == len(checks)
    assert min(waits) >= TICK - 0.002  # uvloop's clock is in milliseconds
