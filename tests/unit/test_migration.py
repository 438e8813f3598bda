"""Pure parts of a migration beyond weights: override parsing, overrides and
takeovers in the resolver, the state file format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aliasd import resolver
from aliasd.model import OVERRIDE_KIND, AliasClaim, Owner, Port
from aliasd.sources import overrides
from aliasd.state import StateFile, claim_to_json
from aliasd.zone import CNAME, A, Rcode
from aliasd.zoneconfig import TakeoverPolicy, ZoneConfig

ZONES = ZoneConfig.from_names(["internal"])
SVC = Owner(100.0, "shop", "api")
OLD = Owner(50.0, "shop", "old")


@pytest.mark.parametrize(("name", "body", "error"), [
    ("x.example.com", {"addresses": ["10.0.0.1"]}, "outside the served zones"),
    ("x", [], "must be a JSON object"),
    ("x", {}, "exactly one of"),
    ("x", {"addresses": ["10.0.0.1"], "cname": "y"}, "exactly one of"),
    ("x", {"addresses": []}, "non-empty list"),
    ("x", {"addresses": "10.0.0.1"}, "non-empty list"),
    ("x", {"addresses": ["10.0.0.300"]}, "'10.0.0.300' is not an IP address"),
    ("x", {"addresses": [7]}, "7 is not a string"),
    ("x", {"addresses": ["10.0.0.1"] * 65}, "at most 64"),
    ("x", {"addresses": ["10.0.0.1"], "ttl": 0}, "outside 1..86400"),
    ("x", {"addresses": ["10.0.0.1"], "ttl": "5"}, "whole number"),
    ("x", {"addresses": ["10.0.0.1"], "ttl": True}, "whole number"),
    ("x", {"addresses": ["10.0.0.1"], "adresses": []}, "unknown field(s) adresses"),
    ("x", {"cname": "x.internal"}, "cname to itself"),
    ("x", {"cname": "bad_name.example.com"}, "not a valid DNS label"),
    ("bad_name", {"addresses": ["10.0.0.1"]}, "not a valid DNS label"),
    ("internal.", {"addresses": ["10.0.0.1"]}, "zone apex"),
    (" x", {"addresses": ["10.0.0.1"]}, "contains whitespace"),  # schemathesis found these
    ("x", {"addresses": ["10.0.0.1"], "ttl": None}, "whole number"),
    ("x", {"addresses": None, "cname": "y"}, "exactly one of"),
    ("x", {"cname": None}, "must be a host name"),
    ("x", {"addresses": ["10.0.0.1 "]}, "contains whitespace"),
    ("x", {"cname": "y.example.com\n"}, "contains whitespace"),
    ("x", {"cname": "a" * 254}, "254 characters long (max 253)"),
])
def test_override_parse_rejects(name: str, body: object, error: str) -> None:
    with pytest.raises(ValueError, match=None) as e:
        overrides.parse(name, body, zones=ZONES)
    assert error in str(e.value)


def test_override_parse_normalizes() -> None:
    o = overrides.parse("Valkey-Master", {"addresses": ["10.0.0.7", "fd00::7", "10.0.0.7"],
                                          "ttl": 5}, zones=ZONES, updated="t", by="1.2.3.4")
    assert (o.name, o.addresses, o.cname, o.ttl) == (
        "valkey-master.internal.", ("10.0.0.7", "fd00::7"), None, 5)
    assert overrides.parse(o.key, o.stored(), zones=ZONES, updated="t", by="1.2.3.4") == o
    c = overrides.parse("db", {"cname": "db.example.com"}, zones=ZONES)
    assert (c.cname, c.ttl) == ("db.example.com.", 30)


def test_override_beats_every_claim_and_is_not_a_conflict() -> None:
    o = overrides.parse("api", {"addresses": ["10.0.0.7"], "ttl": 5}, zones=ZONES)
    claims = [AliasClaim("api", SVC, addresses=("10.96.0.1",)),
              AliasClaim("api", OLD, addresses=("10.96.0.2",), weight=1), o.claim()]
    res = resolver.build(claims, config=ZONES, serial=1)
    assert [(e.name, e.claim.owner.kind) for e in res.entries] == [
        ("api.internal.", OVERRIDE_KIND)]
    assert res.conflicts == ()
    assert sorted(c.loser.ref for c in res.overridden) == ["Service shop/api",
                                                            "Service shop/old"]
    look = res.snapshot.lookup("api.internal.", A)
    assert [r.rdata for r in look.answer] == [("10.0.0.7",)] and look.answer[0].ttl == 5


POLICY = TakeoverPolicy.parse(["example.com", "namespace=shop"])


def test_takeover_policy() -> None:
    assert POLICY.suffixes == ("example.com.",) and POLICY.namespaces == ("shop",)
    assert POLICY.refusal("legacy-lb.example.com.", "shop") is None
    assert "not under an allowed suffix" in (POLICY.refusal("lb.example.org.", "shop") or "")
    assert "namespace other may not" in (POLICY.refusal("lb.example.com.", "other") or "")
    assert "takeover is off" in (TakeoverPolicy().refusal("lb.example.com.", "shop") or "")
    only_ns = TakeoverPolicy.parse(["namespace=shop"])
    assert only_ns.refusal("anything.example.org.", "shop") is None
    with pytest.raises(ValueError, match="not a namespace name"):
        TakeoverPolicy.parse(["namespace=Bad_NS"])
    with pytest.raises(ValueError, match="give a name suffix"):
        TakeoverPolicy.parse(["exa mple.com"])


@pytest.mark.parametrize(("allow", "name", "why"), [
    # The allowed suffix itself would make every name below it NXDOMAIN.
    (["example.com"], "example.com", "example.com. is an allowed suffix itself; only names "
     "strictly below it may be taken over"),
    # Service discovery and reverse lookups, whatever the allowance.
    (["namespace=shop"], "svc.cluster.local", "svc.cluster.local. overlaps cluster.local., "
     "which the cluster DNS serves itself (Service discovery, reverse lookups); no allowance "
     "reaches it"),
    (["namespace=shop"], "cluster.local", "cluster.local. overlaps cluster.local., which"),
    (["namespace=shop"], "in-addr.arpa", "in-addr.arpa. overlaps in-addr.arpa., which"),
    (["namespace=shop"], "10.in-addr.arpa", "10.in-addr.arpa. overlaps in-addr.arpa., which"),
    (["namespace=shop"], "1.0.0.0.ip6.arpa", "1.0.0.0.ip6.arpa. overlaps ip6.arpa., which"),
    (["local", "namespace=shop"], "svc.cluster.local", "svc.cluster.local. overlaps "
     "cluster.local., which"),
    (["arpa"], "in-addr.arpa", "in-addr.arpa. overlaps in-addr.arpa., which"),
])
def test_takeover_never_reaches_the_suffix_itself_or_the_cluster_zones(
        allow: list[str], name: str, why: str) -> None:
    config = ZoneConfig.from_names(["internal"], takeover=TakeoverPolicy.parse(allow))
    res = resolver.build([AliasClaim(name, SVC, addresses=("192.0.2.10",), takeover=True)],
                         config=config, serial=1)
    assert res.takeovers == ()
    ((invalid),) = res.invalid
    assert invalid.event == "TakeoverNotAllowed"
    assert invalid.reason.startswith(f"takeover of {name}. refused: {why}")
    # Strictly below the suffix is still allowed.
    assert TakeoverPolicy.parse(["example.com"]).refusal("lb.example.com.", "shop") is None


def test_takeover_serves_exactly_that_name_as_its_own_zone() -> None:
    config = ZoneConfig.from_names(["internal"], takeover=POLICY)
    claims = [AliasClaim("legacy-lb.example.com", SVC, addresses=("192.0.2.10",),
                         takeover=True),
              AliasClaim("db.example.org", SVC, addresses=("192.0.2.11",), takeover=True),
              AliasClaim("x.internal", SVC, addresses=("192.0.2.12",), takeover=True)]
    res = resolver.build(claims, config=config, serial=7)
    assert res.takeovers == ("legacy-lb.example.com.",)
    assert [(i.claim.name, i.event) for i in res.invalid] == [
        ("db.example.org", "TakeoverNotAllowed"), ("x.internal", "InvalidAlias")]
    snap = res.snapshot
    assert snap.lookup("legacy-lb.example.com.", A).answer[0].rdata == ("192.0.2.10",)
    below = snap.lookup("www.legacy-lb.example.com.", A)
    assert below.rcode == Rcode.NXDOMAIN and below.authority[0].name == "legacy-lb.example.com."
    assert snap.lookup("other.example.com.", A).rcode == Rcode.REFUSED
    # A CNAME at the taken-over name (the datacenter's own name) is fine: no apex SOA RRset.
    res = resolver.build([AliasClaim("legacy-lb.example.com", SVC, cname="lb.dc.example.net",
                                     takeover=True)], config=config, serial=8)
    assert res.snapshot.lookup("legacy-lb.example.com.", A).answer[0].rtype == CNAME


def test_no_usable_target_is_servfail_fallback_answers() -> None:
    res = resolver.build([AliasClaim("empty", SVC), AliasClaim("fb", OLD, addresses=(
        "10.0.0.9",), fallback=True)], config=ZONES, serial=1)
    assert res.snapshot.lookup("empty.internal.", A).rcode == Rcode.SERVFAIL
    assert res.snapshot.lookup("fb.internal.", A).answer[0].rdata == ("10.0.0.9",)


def test_state_file_round_trip_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    sf = StateFile(path)
    assert sf.load() is None
    claims = [AliasClaim("a", SVC, addresses=("10.0.0.1",), ttl=7,
                         ports=(Port("http", "TCP", 80),), weight=3, takeover=True,
                         fallback=True),
              AliasClaim("b", OLD, cname="c.example.com")]
    sf.stage([("k/ab", claims)])
    sf.save(now=123.0)
    sf.save(now=124.0, overrides=[{"name": "x.internal.", "addresses": ["10.0.0.2"]}])
    state = StateFile(path).load()
    assert state is not None
    assert state.claims == tuple(claims)  # the overrides write kept the claims
    assert state.overrides == ({"name": "x.internal.", "addresses": ["10.0.0.2"]},)
    assert state.written == 124.0
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temporary left
    path.write_text('{"version": 1, "claims": [{"name": "a"}], "overrides": [], "written": 1}')
    with pytest.raises(ValueError, match=r"state.json: a stored claim is malformed"):
        StateFile(path).load()
    path.write_text("{not json")
    with pytest.raises(ValueError, match=r"state\.json"):
        StateFile(path).load()


def test_state_file_staged_saves_write_what_a_full_save_writes(tmp_path: Path) -> None:
    """The writer re-encodes only objects whose claims changed since the last
    save (staged); the file must be the one json.dumps writes of every claim."""
    staged_path, full_path = tmp_path / "staged.json", tmp_path / "full.json"
    staged = StateFile(staged_path)
    a = (AliasClaim("a", SVC, addresses=("10.0.0.1",)),)
    b = (AliasClaim("b", OLD, cname="c.example.com"), AliasClaim("b2", OLD, ttl=5))
    c = (AliasClaim("c", SVC, addresses=("fd00::1",), ports=(Port("dns", "UDP", 53),)),)
    d = tuple(AliasClaim(f"d{i}", SVC, addresses=(f"10.1.{i // 250}.{i % 250}",))
              for i in range(600))  # more objects than one write slice
    objects: dict[str, tuple[AliasClaim, ...]] = {}
    for changes in ({"k/a": a, "k/b": b}, {"k/c": c}, {"k/a": (), "k/b": b[:1]},
                    {f"k/d{i}": (x,) for i, x in enumerate(d)}, {"k/c": (), "k/d7": ()},
                    {k: () for k in list(objects)}):
        staged.stage(changes.items())
        objects.update(changes)
        staged.save(now=1.0)
        full = StateFile(full_path)  # every object staged afresh
        full.stage(objects.items())
        full.save(now=1.0)
        assert json.loads(staged_path.read_text()) == json.loads(full_path.read_text())
        expected = {"version": 1, "written": 1.0,
                    "claims": [claim_to_json(x) for cs in objects.values() for x in cs],
                    "overrides": [], "annotations": {}}
        assert staged_path.read_text() == json.dumps(expected, separators=(",", ":"))
        objects = {k: v for k, v in objects.items() if v}
    # A loaded file keeps its claims until the first stage, even an empty one.
    full = StateFile(full_path)
    full.stage([("k/b", b)])
    full.save(now=2.0)
    reloaded = StateFile(full_path)
    assert reloaded.load() is not None
    reloaded.save(now=3.0, overrides=[{"name": "x.internal."}])
    loaded = StateFile(full_path).load()
    assert loaded is not None and loaded.claims == b
    reloaded.stage(())
    reloaded.save(now=4.0)
    loaded = StateFile(full_path).load()
    assert loaded is not None and loaded.claims == ()
    assert loaded.overrides == ({"name": "x.internal."},)
