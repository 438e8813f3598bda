"""Who holds the leader-election Lease, after a handover settles
(``settled_holder``): a fake Lease, clock and sleep, no API server."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

from aliasd.coredns.lease import (
    DEFAULT_DURATION,
    HANDOVER_POLL,
    LeaseError,
    handover_left,
    live_holder,
    settled_holder,
)

T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


def stamp(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def held(by: str, renewed: dt.datetime) -> dict[str, Any]:
    return {"spec": {"holderIdentity": by, "leaseDurationSeconds": 15,
                     "renewTime": stamp(renewed)}}


def released(renewed: dt.datetime) -> dict[str, Any]:
    return {"spec": {"leaseDurationSeconds": 1, "renewTime": stamp(renewed)}}


class World:
    """The Lease as a function of the fake time; sleeping advances the time."""

    def __init__(self, lease_at: Any) -> None:
        self.now = T0
        self.lease_at = lease_at
        self.reads = 0
        self.sleeps: list[float] = []
        self.waits: list[float] = []

    async def read(self) -> dict[str, Any] | None:
        self.reads += 1
        lease: dict[str, Any] | None = self.lease_at(self.now)
        return lease

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += dt.timedelta(seconds=seconds)

    def holder(self) -> str | None:
        return asyncio.run(settled_holder(self.read, on_wait=self.waits.append,
                                          clock=lambda: self.now, sleep=self.sleep))


def test_no_lease_nobody_runs() -> None:
    world = World(lambda now: None)
    assert world.holder() is None
    assert (world.reads, world.sleeps, world.waits) == (1, [], [])


def test_a_live_holder_is_named_at_once() -> None:
    world = World(lambda now: held("aliasd-1", T0 - dt.timedelta(seconds=3)))
    assert world.holder() == "aliasd-1"
    assert (world.sleeps, world.waits) == ([], [])


def test_a_stale_holder_is_nobody() -> None:
    world = World(lambda now: held("aliasd-1", T0 - dt.timedelta(seconds=31)))
    assert world.holder() is None
    assert world.sleeps == []


def test_a_just_released_lease_taken_by_another_replica() -> None:
    taken_at = T0 + dt.timedelta(seconds=2)

    def lease(now: dt.datetime) -> dict[str, Any]:
        return held("aliasd-2", now) if now >= taken_at else released(T0)

    world = World(lease)
    assert world.holder() == "aliasd-2"
    assert world.waits == [DEFAULT_DURATION]  # said once, before the first sleep
    assert world.sleeps == [HANDOVER_POLL] * 4


def test_a_released_lease_nobody_takes_is_waited_out() -> None:
    world = World(lambda now: released(T0 - dt.timedelta(seconds=13)))
    assert world.holder() is None
    assert world.waits == [pytest.approx(2.0)]
    assert sum(world.sleeps) == pytest.approx(2.0)
    assert max(world.sleeps) <= HANDOVER_POLL
    assert world.now - T0 == dt.timedelta(seconds=2)


def test_an_unreadable_lease_is_an_error() -> None:
    async def refuse() -> dict[str, Any] | None:
        raise LeaseError("read Lease aliasd-system/aliasd: HTTP 403: forbidden")

    with pytest.raises(LeaseError):
        asyncio.run(settled_holder(refuse))


def test_holder_and_handover_judge_the_renewal() -> None:
    assert live_holder(held("a", T0), now=T0 + dt.timedelta(seconds=29)) == "a"
    assert live_holder(held("a", T0), now=T0 + dt.timedelta(seconds=30)) is None
    assert handover_left(released(T0), now=T0 + dt.timedelta(seconds=5)) == 10.0
    assert handover_left(held("a", T0), now=T0) == 0.0
