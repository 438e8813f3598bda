"""The pure core: name validation, conflicts, snapshots, serials."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aliasd import resolver, zoneconfig
from aliasd.model import AliasClaim, Owner
from aliasd.zone import AAAA, CNAME, SOA, A, Rcode

CFG = zoneconfig.ZoneConfig.from_names(["internal", "corp.example"])


def claim(name: str, *, created: float = 1.0, ns: str = "a", owner: str = "svc",
          **kw: object) -> AliasClaim:
    kw.setdefault("addresses", ("10.0.0.1",))
    return AliasClaim(name, Owner(created, ns, owner), **kw)  # type: ignore[arg-type]


def draws(r: float) -> Callable[[], float]:
    """A ``rnd`` for ``Snapshot.lookup`` that always draws ``r``."""
    return lambda: r


@pytest.mark.parametrize(("raw", "want"), [
    ("fruits", "fruits.internal."),
    ("My-Fruits.Internal", "my-fruits.internal."),
    ("api.team.corp.example.", "api.team.corp.example."),
])
def test_qualify(raw: str, want: str) -> None:
    assert resolver.qualify(raw, CFG)[0] == want


@pytest.mark.parametrize(("raw", "why"), [
    ("x.example.com", "outside the served zones"),
    ("bad_label.internal", "not a valid DNS label"),
    ("-lead.internal", "not a valid DNS label"),
    ("a" * 64 + ".internal", "(max 63)"),
    (".".join(["abcdefghi"] * 25) + ".internal", "(max 253)"),
    ("internal.", "zone apex"),
    ("ns.internal", "reserved"),
    ("", "empty"),
])
def test_invalid_names(raw: str, why: str) -> None:
    with pytest.raises(ValueError, match=why.replace("(", r"\(").replace(")", r"\)")):
        resolver.qualify(raw, CFG)


def test_oldest_claim_wins_ties_by_namespace_name() -> None:
    claims = [claim("x", created=5, ns="b", owner="late"),
              claim("x", created=2, ns="z", owner="old", addresses=("10.0.0.2",)),
              claim("x", created=2, ns="a", owner="old-too", addresses=("10.0.0.3",))]
    for order in (claims, claims[::-1]):
        res = resolver.build(order, config=CFG, serial=1)
        assert [e.claim.owner.name for e in res.entries] == ["old-too"]
        assert sorted(c.loser.name for c in res.conflicts) == ["late", "old"]
        assert res.snapshot.lookup("x.internal.", A).answer[0].rdata == ("10.0.0.3",)


def test_snapshot_records_and_negative_answers() -> None:
    res = resolver.build([claim("web", addresses=("10.0.0.1", "fd00::1")),
                          claim("alias", cname="web", addresses=())], config=CFG, serial=7)
    snap = res.snapshot
    assert snap.lookup("web.internal.", AAAA).answer[0].rdata == ("fd00::1",)
    chased = snap.lookup("alias.internal.", A)
    assert [r.rtype for r in chased.answer] == [CNAME, A]
    nx = snap.lookup("nope.internal.", A)
    assert nx.rcode == Rcode.NXDOMAIN and nx.authority[0].rtype == SOA
    assert nx.authority[0].ttl == 5
    assert snap.lookup("web.example.", A).rcode == Rcode.REFUSED
    assert snap.lookup("internal.", SOA).answer[0].rdata[0].serial == 7  # type: ignore[union-attr]


def test_invalid_claims_reported_not_served() -> None:
    res = resolver.build([claim("ok"), claim("no_way"), claim("both", cname="x.example.com")],
                         config=CFG, serial=1)
    assert [e.name for e in res.entries] == ["ok.internal."]
    assert sorted(i.claim.name for i in res.invalid) == ["both", "no_way"]


def test_not_ready_is_servfail() -> None:
    snap = resolver.build([claim("ok")], config=CFG, serial=1, ready=False).snapshot
    assert snap.lookup("ok.internal.", A).rcode == Rcode.SERVFAIL
    assert snap.lookup("example.com.", A).rcode == Rcode.REFUSED


@given(st.lists(st.floats(min_value=0, max_value=4e9), min_size=1, max_size=50))
def test_serial_always_grows(clock: list[float]) -> None:
    serial = 0
    for now in clock:
        nxt = resolver.next_serial(serial, now)
        assert nxt > serial
        serial = nxt


@given(st.permutations([claim("x", created=float(i), ns=f"n{i % 3}", owner=f"o{i}")
                        for i in range(6)]))
def test_conflict_resolution_is_order_independent(claims: list[AliasClaim]) -> None:
    res = resolver.build(claims, config=CFG, serial=1)
    assert res.entries[0].claim.owner.name == "o0"
    assert len(res.conflicts) == 5


def test_weighted_group_only_when_every_claimant_has_a_weight() -> None:
    blue = claim("shop", created=1, owner="blue", addresses=("10.0.0.1",), weight=10, ttl=30)
    green = claim("shop", created=2, owner="green", addresses=("10.0.0.2",), weight=90, ttl=5)
    res = resolver.build([green, blue], config=CFG, serial=1)
    assert res.conflicts == ()
    assert [(e.claim.owner.name, e.claim.weight) for e in res.entries] == [("blue", 10),
                                                                           ("green", 90)]
    group = res.snapshot.weighted["shop.internal."]
    assert group.weights == (10, 90)
    # The draw: [0, 0.1) → blue, [0.1, 1) → green; both answer with the group's smallest TTL.
    for rnd, want in ((0.0, "10.0.0.1"), (0.0999, "10.0.0.1"), (0.1, "10.0.0.2"),
                      (0.9999, "10.0.0.2")):
        got = res.snapshot.lookup("shop.internal.", A, rnd=draws(rnd))
        assert (got.answer[0].rdata, got.answer[0].ttl) == ((want,), 5)
    assert res.snapshot.lookup("shop.internal.", A, variant=0).answer[0].rdata == ("10.0.0.1",)
    # One claimant without a weight: the usual conflict rule (oldest wins).
    plain = claim("shop", created=3, owner="plain", addresses=("10.0.0.3",))
    res = resolver.build([blue, green, plain], config=CFG, serial=1)
    assert "shop.internal." not in res.snapshot.weighted
    assert [c.loser.name for c in res.conflicts] == ["green", "plain"]


def test_weights_are_shared_within_one_namespace_only() -> None:
    blue = claim("pay", created=1, ns="team-b", owner="blue", addresses=("10.0.0.1",),
                 weight=50)
    green = claim("pay", created=2, ns="team-b", owner="green", addresses=("10.0.0.2",),
                  weight=50)
    hijack = claim("pay", created=3, ns="team-a", owner="hijack", addresses=("10.0.0.66",),
                   weight=10000)
    res = resolver.build([hijack, green, blue], config=CFG, serial=1)
    # team-b's blue/green stays a group of two; team-a's claim is a conflict.
    assert res.snapshot.weighted["pay.internal."].weights == (50, 50)
    assert [e.claim.owner.name for e in res.entries] == ["blue", "green"]
    assert [(c.winner.name, c.loser.name) for c in res.conflicts] == [("blue", "hijack")]
    assert {snap_a(res, "pay.internal.", r / 10) for r in range(10)} == {"10.0.0.1", "10.0.0.2"}
    # The other way round, the older namespace keeps the name: one weighted
    # claim alone is no group, and the newer namespace's group loses whole.
    squat = claim("pay", created=0.5, ns="team-a", owner="squat", addresses=("10.0.0.66",),
                  weight=1)
    res = resolver.build([blue, green, squat], config=CFG, serial=1)
    assert "pay.internal." not in res.snapshot.weighted
    assert [e.claim.owner.name for e in res.entries] == ["squat"]
    assert [c.loser.name for c in res.conflicts] == ["blue", "green"]


def snap_a(res: resolver.Result, name: str, r: float) -> str:
    return str(res.snapshot.lookup(name, A, rnd=draws(r)).answer[0].rdata[0])


def test_drained_variant_is_never_drawn_and_all_drained_spreads_evenly() -> None:
    old = claim("lb", owner="old", cname="legacy.example.com", addresses=(), weight=0)
    new = claim("lb", created=2, owner="new", addresses=("10.0.0.2",), weight=100)
    snap = resolver.build([old, new], config=CFG, serial=1).snapshot
    assert {snap.lookup("lb.internal.", A, rnd=draws(r / 100)).answer[0].rdata
            for r in range(100)} == {("10.0.0.2",)}
    drained = [claim("lb", owner="old", weight=0),
               claim("lb", created=2, owner="new", addresses=("10.0.0.2",), weight=0)]
    snap = resolver.build(drained, config=CFG, serial=1).snapshot
    assert [snap.lookup("lb.internal.", A, rnd=draws(r)).answer[0].rdata
            for r in (0.2, 0.7)] == [("10.0.0.1",), ("10.0.0.2",)]
