"""One Event recorder for the process: reporters do not clear each other."""

from __future__ import annotations

import pytest

from aliasd import resolver
from aliasd.events import (
    API_VERSIONS,
    Admitted,
    Event,
    EventBudget,
    EventRecorder,
    event_body,
    resolver_problems,
)
from aliasd.model import OVERRIDE_KIND, AliasClaim, Owner
from aliasd.sources.mapping import Problem
from aliasd.zoneconfig import ZoneConfig


def test_each_reporter_syncs_its_own_set() -> None:
    svc = Problem(Owner(1.0, "shop", "web", "Service", "u1"), "AliasConflict", "taken")
    cm = Problem(Owner(0.0, "kube-system", "coredns", "ConfigMap", "u2"),
                 "CorefileConflict", "zone corp")
    sent: list[Event] = []
    r = EventRecorder(sent.append)
    corefile = r.reporter("corefile")
    r.sync([svc])
    corefile([cm])
    r.sync([svc])  # the resolver's set does not clear the patcher's problem...
    corefile([cm])  # ...so neither is sent again while it persists
    corefile([])
    corefile([cm])  # gone and back: a new Event
    assert [(e.owner.ref, e.reason) for e in sent] == [
        ("Service shop/web", "AliasConflict"),
        ("ConfigMap kube-system/coredns", "CorefileConflict"),
        ("ConfigMap kube-system/coredns", "CorefileConflict")]


def test_objects_without_events_are_skipped() -> None:
    sent: list[Event] = []
    r = EventRecorder(sent.append)
    r.sync([Problem(Owner(0.0, "", "aliases.yaml", "File"), "InvalidAlias", "bad"),
            Problem(Owner(0.0, "", "shop", "Namespace", "u3"), "InvalidPolicy", "bad")])
    assert [(e.owner.kind, e.reason) for e in sent] == [("Namespace", "InvalidPolicy")]


@pytest.mark.parametrize("kind", sorted(API_VERSIONS))
def test_event_body(kind: str) -> None:
    body = event_body(Event(Owner(1.0, "shop" if kind != "Namespace" else "", "web", kind, "u1"),
                            "AliasConflict", "x" * 2000, warning=False),
                      now=0.0, instance="aliasd-0")
    assert body["involvedObject"] == {
        "kind": kind, "namespace": "shop" if kind != "Namespace" else "", "name": "web",
        "uid": "u1", "apiVersion": API_VERSIONS[kind]}
    assert body["metadata"]["namespace"] == ("shop" if kind != "Namespace" else "default")
    assert (body["type"], body["reportingInstance"], len(body["message"])) == (
        "Normal", "aliasd-0", 1024)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_budget_per_object_and_reason_then_one_per_interval() -> None:
    clock = Clock()
    budget = EventBudget(clock=clock, object_burst=2, object_every=60.0, global_burst=100)
    web = Owner(1.0, "shop", "web", "Service", "u1")
    api = Owner(1.0, "shop", "api", "Service", "u2")
    admitted = [budget.admit(Event(web, "InvalidTTL", f"bad {i}")) for i in range(5)]
    assert [a.message if a else None for a in admitted] == ["bad 0", "bad 1", None, None, None]
    # Another object, or another reason on the same one, has its own bucket.
    assert budget.admit(Event(api, "InvalidTTL", "bad")) == Admitted("bad")
    assert budget.admit(Event(web, "InvalidWeight", "bad")) == Admitted("bad")
    clock.now = 60.0  # one more, saying how many were left out
    got = budget.admit(Event(web, "InvalidTTL", "bad 5"))
    assert got == Admitted("bad 5 (and 3 more InvalidTTL Events on this object before it, "
                           "not recorded: at most 2 at once, then one per 60 s)")
    assert budget.admit(Event(web, "InvalidTTL", "bad 6")) is None


def test_budget_for_the_process() -> None:
    clock = Clock()
    budget = EventBudget(clock=clock, global_burst=3, global_every=1.0)
    owners = [Owner(1.0, "shop", f"s{i}", "Service", f"u{i}") for i in range(5)]
    got = [budget.admit(Event(o, "InvalidTTL", "bad")) for o in owners]
    assert [a is not None for a in got] == [True, True, True, False, False]
    clock.now = 1.0
    assert budget.admit(Event(owners[4], "InvalidTTL", "bad")) is not None


def test_a_repeated_event_counts_the_recorded_one() -> None:
    budget = EventBudget(clock=Clock())
    web = Owner(1.0, "shop", "web", "Service", "u1")
    event = Event(web, "AliasConflict", "taken")
    assert budget.admit(event) == Admitted("taken")
    budget.recorded(event, "shop", "web.abc", 1)
    assert budget.admit(event) == Admitted("taken", ("shop", "web.abc", 1))
    budget.recorded(event, "shop", "web.abc", 2)
    assert budget.admit(Event(web, "AliasConflict", "other")) == Admitted("other")
    budget.forget(event)  # expired
    assert budget.admit(event) == Admitted("taken")


def test_an_override_is_a_problem_of_the_claim_it_shadows() -> None:
    svc = Owner(1.0, "shop", "web", "Service", "u1")
    result = resolver.build([
        AliasClaim("web.internal", svc, addresses=("10.0.0.1",)),
        AliasClaim("web.internal", Owner(0.0, "", "web.internal", OVERRIDE_KIND),
                   addresses=("10.0.0.9",))], config=ZoneConfig.from_names(["internal"]),
        serial=1)
    assert [(p.owner, p.reason) for p in resolver_problems(result)] == [
        (svc, "AliasOverridden")]
