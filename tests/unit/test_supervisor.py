"""The one task supervisor: stops on ``until`` or the first failure, re-raises
that failure unwrapped, and leaves no task behind."""

from __future__ import annotations

import asyncio

import pytest

from aliasd.model import ConfigError
from aliasd.supervisor import supervise


async def forever(started: list[str], stopped: list[str], name: str) -> None:
    started.append(name)
    try:
        await asyncio.Event().wait()
    finally:
        stopped.append(name)


def test_until_stops_every_task() -> None:
    started: list[str] = []
    stopped: list[str] = []

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_soon(stop.set)
        await supervise({"a": forever(started, stopped, "a"), "b": forever(started, stopped, "b")},
                        until=stop.wait())

    asyncio.run(main())
    assert sorted(started) == sorted(stopped) == ["a", "b"]


def test_first_failure_is_reraised_as_is() -> None:
    started: list[str] = []
    stopped: list[str] = []

    async def fail() -> None:
        await asyncio.sleep(0)
        raise ConfigError("cannot listen")

    async def main() -> None:
        await supervise({"a": forever(started, stopped, "a"), "bad": fail()},
                        until=asyncio.Event().wait())

    with pytest.raises(ConfigError, match="cannot listen"):
        asyncio.run(main())
    assert stopped == ["a"]


def test_a_task_may_return_early() -> None:
    done: list[str] = []

    async def quick() -> None:
        done.append("quick")

    async def slow() -> None:
        for _ in range(3):
            await asyncio.sleep(0)
        done.append("slow")

    asyncio.run(supervise({"quick": quick(), "slow": slow()}))
    assert done == ["quick", "slow"]


def test_cancelling_the_supervisor_cancels_the_tasks() -> None:
    started: list[str] = []
    stopped: list[str] = []

    async def main() -> None:
        running = asyncio.Event()

        async def task() -> None:
            running.set()
            await forever(started, stopped, "a")

        outer = asyncio.ensure_future(supervise({"a": task()}))
        await running.wait()
        outer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await outer

    asyncio.run(main())
    assert stopped == ["a"]
