"""The Programmed condition's pure decisions: what a replica publishes, which
serial a status carries, and when every live replica serves an answer."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from aliasd import resolver
from aliasd.runtime.aliasstatus import (
    PROGRAMMED,
    Desired,
    desired,
    engine_key,
    programmed,
    serial_to_write,
    serves,
    status_body,
    status_patch,
    watermark,
    with_condition,
)
from aliasd.runtime.replicas import SERIAL, lease_name, live_watermarks
from tests.unit.test_aliases import ZONES, info


def _want(address: str = "10.0.0.1") -> Desired:
    i = info({"hostnames": ["ok.internal"], "targets": [{"address": address}]}, name="ok")
    key = engine_key("kubernetes", "shop/ok")
    result = resolver.build_keyed({key: i.claims}, config=ZONES, serial=42)
    return desired(i, result, ZONES, key)


def test_a_status_keeps_the_serial_that_first_carried_its_answer() -> None:
    want = _want()
    assert serial_to_write(want, {}, generation=1, serial=42) == (42, True)
    body = status_body(want, {}, generation=1, serial=42, now=0.0)
    assert serves(want, body, 1)
    # Only a condition changes (Programmed turns True): the serial stays, so
    # the replicas' confirmations of it stay valid.
    assert serial_to_write(want, body, generation=1, serial=57) == (42, False)
    # Another answer or another generation: the current serial, a new answer.
    other = _want("10.0.0.2")
    assert not serves(other, body, 1)
    assert serial_to_write(other, body, generation=1, serial=57) == (57, True)
    assert serial_to_write(want, body, generation=2, serial=57) == (57, True)


def test_watermark_stops_below_the_oldest_status_not_served() -> None:
    assert watermark({}, 0) == 0
    assert watermark({}, 120) == 120
    assert watermark({"shop/a": 100, "shop/b": 110}, 120) == 99


def test_programmed_when_every_live_replica_reached_the_serial() -> None:
    want = _want()
    got = programmed(want, 100, {"a": 100, "b": 130})
    assert (got.type, got.status, got.reason) == (PROGRAMMED, True, "Programmed")
    got = programmed(want, 100, {"a": 100, "b": 99, "c": 42})
    assert (got.status, got.reason) == (False, "Pending")
    assert got.message.startswith("2 of 3 replicas")
    fresh = programmed(want, None, {"a": 200, "b": 300})  # a new answer: nobody has it
    assert (fresh.reason, fresh.message) == (
        "Pending", programmed(want, 400, {"a": 200, "b": 300}).message)
    assert programmed(want, 100, {}).reason == "Pending"  # no replica heard yet
    nothing = with_condition(want, programmed(want, 1, {"a": 1}))
    refused = desired(info({"hostnames": ["bad_label.internal"],
                            "targets": [{"address": "10.0.0.1"}]}, name="bad"),
                      resolver.build_keyed({}, config=ZONES, serial=1), ZONES,
                      engine_key("kubernetes", "shop/bad"))
    assert programmed(refused, 1, {"a": 5}).reason == "NotServed"
    assert [c.type for c in nothing.conditions] == ["Accepted", "ResolvedRefs", PROGRAMMED,
                                                    "Ready"]


def test_the_writing_replica_counts_as_serving_what_it_writes() -> None:
    want = _want()
    # Alone (its own Lease not heard yet, or behind): Programmed as it is written.
    assert programmed(want, None, {}, me="a").status
    assert programmed(want, 100, {"a": 42}, me="a").status
    # Another replica must still reach the serial; a new answer it cannot have.
    fresh = programmed(want, None, {"a": 42, "b": 500}, me="a")
    assert (fresh.status, fresh.message) == (False, "1 of 2 replicas do not serve this "
                                                    "answer yet")
    assert fresh == programmed(want, 100, {"a": 42, "b": 99}, me="a")
    assert programmed(want, 100, {"a": 42, "b": 100}, me="a").status


def test_a_status_patch_carries_only_what_changed() -> None:
    want = _want()
    body = status_body(want, {}, generation=1, serial=42, now=0.0)
    # Nothing yet: everything but the empty fields (absent is the same as empty).
    assert set(status_patch(body, {})) == {"observedGeneration", "hostnames", "addresses",
                                           "serial", "conditions"}
    assert status_patch(body, body) == {}
    again = status_body(_want("10.0.0.2"), body, generation=1, serial=57, now=1.0)
    assert set(status_patch(again, body)) == {"addresses", "serial"}  # conditions kept
    gone = {**body, "cname": "old.example.com."}
    assert status_patch(body, gone) == {"cname": None}  # RFC 7396: null removes it


_VALUES: st.SearchStrategy[Any] = st.one_of(st.none(), st.just([]), st.just({}), st.integers(0, 3),
                    st.lists(st.sampled_from("ab"), max_size=2))
_FIELDS = ["serial", "hostnames", "cname", "targets"]
_OBSERVED = st.dictionaries(st.sampled_from(_FIELDS), _VALUES)
_BODIES = st.fixed_dictionaries({k: _VALUES for k in _FIELDS})  # status_body: every field


@given(_OBSERVED, _BODIES)
def test_a_status_patch_applied_gives_the_status(observed: dict[str, Any],
                                                 body: dict[str, Any]) -> None:
    """RFC 7396 at the top level: null removes a field, anything else replaces it."""
    merged = dict(observed)
    for k, v in status_patch(body, observed).items():
        if v is None:
            merged.pop(k, None)
        else:
            merged[k] = v

    def meaning(status: dict[str, Any]) -> dict[str, Any]:  # absent == empty
        return {k: v for k, v in status.items() if v not in (None, [], {})}

    assert meaning(merged) == meaning(body)


def test_live_watermarks_skip_released_expired_and_unreadable_leases() -> None:
    def lease(holder: str | None, serial: str | None, duration: int = 3) -> dict[str, object]:
        ann = {SERIAL: serial} if serial is not None else {}
        return {"metadata": {"annotations": ann},
                "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration}}

    leases = {"ns/a": lease("a", "120"), "ns/b": lease("b", "99"), "ns/gone": lease(None, "5"),
              "ns/old": lease("old", "1"), "ns/odd": lease("odd", "x"),
              "ns/new": lease("new", None)}
    seen = {"ns/a": 10.0, "ns/b": 11.0, "ns/gone": 11.0, "ns/old": 5.0, "ns/odd": 11.0,
            "ns/new": 11.0}
    assert live_watermarks(leases, seen, now=12.0) == {"a": 120, "b": 99}
    assert live_watermarks(leases, seen, now=13.5) == {"b": 99}  # a expired at 13


def test_lease_names_are_dns_subdomains() -> None:
    assert lease_name("aliasd", "aliasd-7c9f-x2x") == "aliasd-aliasd-7c9f-x2x"
    assert lease_name("aliasd", "Host_Name.local") == "aliasd-host-name.local"
    assert len(lease_name("aliasd", "x" * 400)) == 253
