"""The trail's budget for refused writes (pure: a fake clock, no API server)."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from aliasd.access import Decisions, KubernetesAuth, LogTrail, Refused, Write
from aliasd.events import Budget


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def refused(i: int) -> Write:
    return Write(f"caller-{i}", "update", "db.internal.", "none", "10.0.0.1",
                 refused=Refused(401, "the bearer token is wrong"))


def test_budget_burst_then_one_per_interval() -> None:
    clock = Clock()
    b = Budget(3, 10.0, clock=clock)
    assert [b.take() for _ in range(5)] == [True, True, True, False, False]
    clock.now += 9.9
    assert b.take() is False
    clock.now += 0.1
    assert [b.take(), b.take()] == [True, False]
    clock.now += 1000  # refills to the burst, not beyond
    assert [b.take() for _ in range(4)] == [True, True, True, False]


def test_allowed_writes_always_recorded_refused_ones_within_the_budget() -> None:
    clock = Clock()
    trail = LogTrail(budget=Budget(2, 10.0, clock=clock))
    texts = [trail.admit(refused(i)) for i in range(5)]
    assert texts[:2] == [refused(0).message(), refused(1).message()]
    assert texts[2:] == [None, None, None]
    allowed = Write("ops", "update", "db.internal.", "none", "10.0.0.9 (ttl 30)")
    assert trail.admit(allowed) == "ops set the override of db.internal.: none -> 10.0.0.9 (ttl 30)"
    clock.now += 10
    assert trail.admit(refused(5)) == (
        refused(5).message() + " (and 3 more refused writes before it, not recorded: "
        "at most 2 at once, then one per 10 s)")
    clock.now += 10
    assert trail.admit(refused(6)) == refused(6).message()  # the count starts again


def test_reviews_beyond_the_limit_get_429_without_asking_the_api_server() -> None:
    auth = KubernetesAuth.__new__(KubernetesAuth)  # no API client: it must not be used
    auth.max_reviews, auth.reviewing = 2, 2
    auth.users, auth.access, auth.reviews, auth.clock = Decisions(), Decisions(), Counter(), Clock()
    with pytest.raises(Refused) as e:
        asyncio.run(auth.authorize("token", verb="update", name="db.internal", remote="x"))
    assert (e.value.status, e.value.text) == (
        429, "2 writes are being authorized; retry later")
    assert auth.reviewing == 2


def test_decisions_expire_and_are_bounded() -> None:
    cache = Decisions(size=2)
    cache.put("a", {"username": "a"}, now=0.0, ttl=10.0)
    cache.put("b", Refused(401, "no", who="b"), now=0.0, ttl=5.0)
    assert cache.get("a", now=9.9) == {"username": "a"}
    with pytest.raises(Refused) as refused:
        cache.get("b", now=4.9)
    assert (refused.value.status, refused.value.text, refused.value.who) == (401, "no", "b")
    assert cache.get("b", now=5.0) is None  # expired
    cache.put("c", True, now=6.0, ttl=10.0)
    cache.put("d", True, now=6.0, ttl=10.0)  # "a", the least recent, goes
    assert [cache.get(k, now=7.0) for k in "acd"] == [None, True, True]
