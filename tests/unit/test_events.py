"""One Event recorder for the process: reporters do not clear each other."""

from __future__ import annotations

import pytest

from aliasd.events import API_VERSIONS, Event, EventRecorder, event_body
from aliasd.model import Owner
from aliasd.sources.mapping import Problem


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
