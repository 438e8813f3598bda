"""Alias objects → claims, and the status they get from a build (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from aliasd import resolver
from aliasd.events import Budget
from aliasd.model import AliasClaim, Owner
from aliasd.policy import NamePolicy
from aliasd.runtime.aliasstatus import desired, engine_key, same, status_body, transitions
from aliasd.sources.aliases import AliasInfo, alias_info, trim_alias
from aliasd.zoneconfig import TakeoverPolicy, ZoneConfig

ZONES = ZoneConfig.from_names(["internal"], takeover=TakeoverPolicy(("example.org",)))
SVC = {"metadata": {"name": "api", "namespace": "shop"},
       "spec": {"clusterIP": "10.96.0.7", "clusterIPs": ["10.96.0.7"],
                "ports": [{"name": "http", "protocol": "TCP", "port": 80},
                          {"name": "grpc", "protocol": "TCP", "port": 9090}]}}
HEADLESS = {"metadata": {"name": "pods", "namespace": "shop"},
            "spec": {"clusterIP": "None", "clusterIPs": ["None"], "ports": []}}


def alias(spec: dict[str, Any], *, name: str = "a", generation: int = 1,
          created: str = "2024-01-01T00:00:00Z") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "shop", "uid": f"u-{name}",
                         "generation": generation, "creationTimestamp": created},
            "spec": spec}


def services(namespace: str, name: str) -> tuple[Mapping[str, Any], list[Any]] | None:
    found = {"api": SVC, "pods": HEADLESS}.get(name)
    return (found, []) if found is not None else None


def info(spec: dict[str, Any], **kw: Any) -> AliasInfo:
    return alias_info(alias(spec, **kw), services=services,
                      in_zone=lambda h: h.rstrip(".").endswith("internal") or "." not in h)


def test_service_ref_gives_the_annotation_semantics() -> None:
    got = info({"hostnames": ["api.internal", "api2"], "serviceRef": {"name": "api",
                                                                      "port": "http"}})
    assert [(c.name, c.addresses, [p.name for p in c.ports]) for c in got.claims] == [
        ("api.internal", ("10.96.0.7",), ["http"]), ("api2", ("10.96.0.7",), ["http"])]
    assert (got.refs.ok, got.refs.reason, got.generation) == (True, "ResolvedRefs", 1)
    assert info({"hostnames": ["x"], "serviceRef": {"name": "gone"}}).refs.reason == (
        "ServiceNotFound")
    assert info({"hostnames": ["x"], "serviceRef": {"name": "gone"}}).claims == ()
    fb = info({"hostnames": ["x"], "serviceRef": {"name": "gone"}, "fallback": ["192.0.2.1"]})
    assert [(c.addresses, c.fallback) for c in fb.claims] == [(("192.0.2.1",), True)]
    empty = info({"hostnames": ["x"], "serviceRef": {"name": "pods"}})
    assert empty.refs.reason == "NoReadyEndpoints"
    assert [(c.addresses, c.cname) for c in empty.claims] == [((), None)]


def test_targets_static_weighted_and_refused() -> None:
    got = info({"hostnames": ["db"], "targets": [{"address": "10.0.0.1"},
                                                {"address": "fd00::1"}], "ttl": 7})
    assert [(c.addresses, c.ttl, c.weight) for c in got.claims] == [
        (("10.0.0.1", "fd00::1"), 7, None)]
    cname = info({"hostnames": ["db"], "targets": [{"cname": "db.example.com"}]})
    assert [c.cname for c in cname.claims] == ["db.example.com"]
    weighted = info({"hostnames": ["db"], "targets": [{"address": "10.0.0.1", "weight": 3},
                                                      {"cname": "lb.example.com"}]})
    assert [(c.addresses, c.cname, c.weight) for c in weighted.claims] == [
        (("10.0.0.1",), None, 3), ((), "lb.example.com", 1)]
    mixed = info({"hostnames": ["db"], "targets": [{"address": "10.0.0.1"},
                                                   {"cname": "lb.example.com"}]})
    assert mixed.claims == () and mixed.invalid is not None
    bad = info({"hostnames": ["db"], "targets": [{"address": "10.0.0.300"}]})
    assert bad.claims == () and bad.invalid is not None
    takeover = info({"hostnames": ["x.example.org", "in.internal"], "takeover": True,
                     "targets": [{"address": "10.0.0.1"}]})
    assert [(c.name, c.takeover) for c in takeover.claims] == [
        ("x.example.org", True), ("in.internal", False)]


def test_trim_keeps_what_is_read_and_the_status_written() -> None:
    obj = alias({"hostnames": ["a"], "targets": [{"address": "10.0.0.1"}]})
    obj["metadata"]["managedFields"] = [{"manager": "kubectl"}]
    obj["status"] = {"observedGeneration": 1, "conditions": [], "other": 1}
    assert trim_alias(obj) == {"metadata": {k: v for k, v in obj["metadata"].items()
                                            if k != "managedFields"},
                               "spec": obj["spec"],
                               "status": {"observedGeneration": 1, "conditions": []}}


def status_of(infos: list[AliasInfo], *extra: AliasClaim, config: ZoneConfig = ZONES,
              annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    objects = {engine_key("kubernetes", f"shop/{i.owner.name}"): i.claims for i in infos}
    objects.update({f"x{n}": (c,) for n, c in enumerate(extra)})
    result = resolver.build_keyed(objects, config=config, serial=42,
                                  annotations=annotations or {})
    out = {}
    for i in infos:
        want = desired(i, result, config, engine_key("kubernetes", f"shop/{i.owner.name}"))
        out[i.owner.name] = ({c.type: (c.status, c.reason) for c in want.conditions},
                             want.addresses, want.cname)
    return out


def test_conditions_name_each_refusal() -> None:
    older = AliasClaim("taken.internal", Owner(0.0, "other", "old"), addresses=("10.1.1.1",))
    target = {"targets": [{"address": "10.0.0.1"}]}
    got = status_of([info({"hostnames": ["ok.internal"], **target}, name="ok"),
                     info({"hostnames": ["bad_label.internal"], **target}, name="bad"),
                     info({"hostnames": ["x.example.com"], **target}, name="out"),
                     info({"hostnames": ["x.example.com"], "takeover": True, **target},
                          name="tk"),
                     info({"hostnames": ["taken.internal"], **target}, name="lost"),
                     info({"hostnames": ["x"], "serviceRef": {"name": "gone"}}, name="ref")],
                    older)
    assert got["ok"] == ({"Accepted": (True, "Accepted"), "ResolvedRefs": (True, "ResolvedRefs"),
                          "Ready": (True, "Ready")}, ("10.0.0.1",), None)
    for name, reason in (("bad", "InvalidHostname"), ("out", "NotInZone"),
                         ("tk", "TakeoverNotAllowed"), ("lost", "Conflicted")):
        assert got[name][0]["Accepted"] == (False, reason), name
        assert got[name][0]["Ready"] == (False, reason), name
        assert got[name][1:] == ((), None), name
    assert got["ref"][0]["ResolvedRefs"] == (False, "ServiceNotFound")
    assert got["ref"][0]["Ready"] == (False, "ServiceNotFound")
    policy = ZoneConfig.from_names(["internal"], names=NamePolicy.parse(["*.{namespace}"]))
    denied = status_of([info({"hostnames": ["ok.internal"], **target}, name="ok")],
                       config=policy)
    assert denied["ok"][0]["Accepted"] == (False, "NotAllowedByPolicy")


def test_status_written_only_on_change_and_transitions_kept() -> None:
    i = info({"hostnames": ["ok.internal"], "targets": [{"address": "10.0.0.1"}]}, name="ok")
    key = engine_key("kubernetes", "shop/ok")
    result = resolver.build_keyed({key: i.claims}, config=ZONES, serial=42)
    want = desired(i, result, ZONES, key)
    assert not same(want, {}, 1)
    body = status_body(want, {}, generation=1, serial=42, now=0.0)
    assert same(want, body, 1) and not same(want, body, 2)
    # Another serial (a restart, a new leader) is no change.
    assert same(want, {**body, "serial": 99}, 1)
    assert [c.type for c in transitions(want, {})] == ["Accepted", "ResolvedRefs", "Ready"]
    assert transitions(want, body) == []
    later = status_body(want, body, generation=2, serial=43, now=1000.0)
    assert [c["lastTransitionTime"] for c in later["conditions"]] == [
        "1970-01-01T00:00:00Z"] * 3  # kept: no condition changed status


@pytest.mark.parametrize(("rate", "burst", "waits"), [
    (10.0, 2, [0.0, 0.0, 0.1, 0.2]),
    (100.0, 1, [0.0, 0.01, 0.02, 0.03]),
])
def test_the_write_budget_queues(rate: float, burst: int, waits: list[float]) -> None:
    bucket = Budget(burst, 1 / rate, clock=lambda: 0.0)
    assert [pytest.approx(bucket.delay()) for _ in waits] == waits
