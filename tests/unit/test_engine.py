"""The incremental engine equals a build from scratch, answer for answer, over
random sequences of adds, updates, deletes, conflicts, weights, overrides,
takeovers, whole-source replacements (relists), name policy changes on
namespaces, holds on names whose winner went away (made and expiring as the
clock moves), priorities, target health changes and readiness flips; and the
names it reports as unchanged really answer the same."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from aliasd import resolver
from aliasd.engine import KEY_SEP, Engine, differences
from aliasd.model import HTTP, OVERRIDE_KIND, TCP, AliasClaim, Check, Owner, Port
from aliasd.policy import NamePolicy
from aliasd.runtime.statewriter import stored_claims
from aliasd.state import StateFile
from aliasd.status import AliasesRenderer, aliases_document
from aliasd.zone import AAAA, ANY, CNAME, NS, SOA, SRV, A, Lookup, Snapshot
from aliasd.zoneconfig import TakeoverPolicy, ZoneConfig

CFG = ZoneConfig.from_names(["internal", "corp.example"], ns_addresses=["10.0.0.53"],
                            takeover=TakeoverPolicy.parse(["example.com"]),
                            names=NamePolicy.parse(["*.{namespace}.internal", "web", "b.internal",
                                                    "db.corp.example", "legacy.example.com"]),
                            name_hold=500.0)  # commits move the clock 0, 1 or 1000 s
NAMES = ["web", "api.internal", "db.corp.example", "a.b.internal", "b.internal",
         "legacy.example.com", "x.other.org", "bad_label.internal", "ns.internal",
         "*.b.internal", "*.a.b.internal", "*.internal", "x.*.b.internal"]
OWNERS = [Owner(1.0, "a", "web"), Owner(1.0, "b", "web"), Owner(2.0, "a", "api"),
          Owner(0.0, "", "sw", OVERRIDE_KIND), Owner(3.0, "c", "se", "ServiceEntry"),
          Owner(1.0, "a", "web", "Alias")]  # ties with the Service a/web but for the kind
KEYS = [f"kubernetes{KEY_SEP}svc/{i}" for i in range(5)] + [
    f"kubernetes{KEY_SEP}se/{i}" for i in range(2)]
PROBES = ["nothere.internal.", "b.internal.", "deep.a.b.internal.", "legacy.example.com.",
          "sub.legacy.example.com.", "internal.", "corp.example.", "ns.internal.",
          "x.b.internal.", "y.x.b.internal.", "q.a.b.internal.", "zz.b.internal."]
QTYPES = (A, AAAA, CNAME, SRV, NS, SOA, ANY)
CHECKS = [Check(TCP, "10.0.0.1", 5432), Check(HTTP, "10.0.0.2", 8080, "/healthz"),
          Check(TCP, "fd00::1", 53)]

claims_st = st.builds(
    AliasClaim,
    name=st.sampled_from(NAMES),
    owner=st.sampled_from(OWNERS),
    addresses=st.lists(st.sampled_from(["10.0.0.1", "10.0.0.2", "fd00::1"]), max_size=2,
                       unique=True).map(tuple),
    cname=st.sampled_from([None, None, "b.internal", "db.corp.example.", "ext.example.org.",
                           "zz.b.internal"]),
    ttl=st.sampled_from([5, 30]),
    ports=st.lists(st.builds(Port, st.sampled_from(["http", "dns"]),
                             st.sampled_from(["TCP", "UDP"]), st.sampled_from([53, 80])),
                   max_size=2).map(tuple),
    weight=st.sampled_from([None, None, 0, 1, 3]),
    takeover=st.booleans(),
    fallback=st.booleans(),
    priority=st.sampled_from([0, 0, 1, 2]),
    check=st.sampled_from([None, None, *CHECKS]),
)


def answers(snap: Snapshot, name: str) -> list[tuple[object, ...]]:
    """Every answer for ``name`` (each weighted variant), without the SOA of
    negative answers (its serial moves on every change, by design)."""
    out: list[tuple[object, ...]] = []
    group = snap.weighted.get(name)
    for variant in range(len(group.variants)) if group else [None]:
        for qtype in QTYPES:
            r: Lookup = snap.lookup(name, qtype, variant=variant, rnd=lambda: 0.0)
            out.append((r.rcode, r.answer, r.additional, r.cacheable, bool(r.authority)))
    return out


def synthesis(snap: Snapshot, name: str) -> set[str]:
    """The names the answers for ``name`` read because a wildcard answered."""
    out: set[str] = set()
    for qtype in QTYPES:
        out.update(snap.lookup(name, qtype, rnd=lambda: 0.0).depends)
    return out


class EngineMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.engine = Engine(CFG, serial=100, track_changes=True)
        self.now = 0.0
        self.ready = False
        self.renderer = AliasesRenderer()
        self.renderer.SLICE = 2  # many slices of the few names
        self.dir = Path(tempfile.mkdtemp(prefix="aliasd-engine-"))
        self.state = StateFile(self.dir / "staged.json")

    def teardown(self) -> None:
        for f in self.dir.iterdir():
            f.unlink()
        self.dir.rmdir()

    @rule(key=st.sampled_from(KEYS), claims=st.lists(claims_st, max_size=3))
    def set_object(self, key: str, claims: list[AliasClaim]) -> None:
        self.engine.set(key, claims)

    @rule(key=st.sampled_from(KEYS))
    def delete_object(self, key: str) -> None:
        self.engine.set(key, ())

    @rule(source=st.sampled_from(["file", "overrides"]), claims=st.lists(claims_st, max_size=4))
    def replace_source(self, source: str, claims: list[AliasClaim]) -> None:
        self.engine.replace(source, claims)

    @rule(namespace=st.sampled_from(["a", "b", "c"]),
          annotation=st.sampled_from([None, "*", "", "*.internal", "web, a.b.internal",
                                      "bad_label*, b.internal, *.example.com"]))
    def set_namespace_policy(self, namespace: str, annotation: str | None) -> None:
        self.engine.set_namespace(namespace, annotation)

    @rule(check=st.sampled_from(CHECKS), healthy=st.booleans())
    def set_health(self, check: Check, healthy: bool) -> None:
        self.engine.set_health(check, healthy)
        # Only a check some valid claim carries is kept, and it is unhealthy
        # exactly when the last verdict said so.
        assert self.engine.unhealthy <= self.engine.checks
        if check in self.engine.checks:
            assert (check in self.engine.unhealthy) == (not healthy)

    @rule(key=st.sampled_from(KEYS))
    def relist_same(self, key: str) -> None:
        # A resync hands over the same claims again: nothing to do.
        before = self.engine.serial
        self.engine.set(key, self.engine.claims.get(key, ()))
        assert not self.engine.pending or self.engine.serial == before

    @rule(ready=st.booleans(), dt=st.sampled_from([0.0, 1.0, 1000.0]))
    def commit(self, ready: bool, dt: float) -> None:
        self.now += dt
        previous = self.engine.result
        before = previous.snapshot
        commit = self.engine.commit(now=self.now, ready=ready)
        after = self.engine.result.snapshot
        if commit is not None:
            # The delta names every name whose resolution or conflicts moved and
            # every object whose invalid claims did (the status writer looks
            # at those alone).
            result, delta = commit.result, commit.result.delta
            assert delta is not None and delta.since == previous.number
            for name in {*previous.resolutions, *result.resolutions}:
                if (previous.resolutions.get(name) != result.resolutions.get(name)
                        or previous.conflicted.get(name) != result.conflicted.get(name)):
                    assert name in delta.names, name
            for key in {*previous.invalid_by_key, *result.invalid_by_key}:
                if previous.invalid_by_key.get(key) != result.invalid_by_key.get(key):
                    assert key in delta.keys, key
        if commit is None or not commit.new_snapshot:
            assert after is before
            return
        assert after.serial > before.serial
        if commit.changed is None:
            return
        # Every name not reported as changed answers exactly as before, unless a
        # wildcard answered it (or a name it chased) before or after: then a name
        # that answer read changed (Lookup.depends: what the answer cache
        # drops its entries by; the synthesized names themselves are countless).
        for name in {*before.names, *after.names, *PROBES} - commit.changed:
            read = synthesis(before, name) | synthesis(after, name)
            if not read & commit.changed:
                assert answers(before, name) == answers(after, name), name

    @rule()
    def rebuild_from_scratch_check(self) -> None:
        # An engine fed every claim afresh (the safety net's reset) agrees.
        if self.engine.pending:
            return
        snap = self.engine.result.snapshot
        fresh = Engine(CFG, serial=snap.serial - 1, ready=not snap.ready)
        fresh.holds = self.engine.holds
        for namespace, annotation in self.engine.annotations.items():
            fresh.set_namespace(namespace, annotation)
        for key, claims in self.engine.claims.items():
            fresh.set(key, claims)
        for check in self.engine.unhealthy:
            fresh.set_health(check, False)
        fresh.commit(now=0.0, ready=snap.ready)
        assert differences(fresh.result.snapshot, snap) == []

    @rule()
    def state_file_staged_equals_whole(self) -> None:
        # The writer stages only the objects the engine marked as changed; the
        # file must hold what storing every object afresh holds.
        keys = sorted(self.engine.changed_keys)
        self.engine.changed_keys.clear()
        self.state.stage(stored_claims(self.engine.claims, self.engine.invalid, keys))
        self.state.save(now=1.0)
        whole = StateFile(self.dir / "whole.json")
        whole.stage(stored_claims(self.engine.claims, self.engine.invalid,
                                  self.engine.claims.keys()))
        whole.save(now=1.0)
        staged, fresh = (StateFile(self.dir / f).load() for f in ("staged.json", "whole.json"))
        assert staged is not None and fresh is not None
        assert sorted(staged.claims, key=repr) == sorted(fresh.claims, key=repr)

    @invariant()
    def equals_build_from_scratch(self) -> None:
        if self.engine.pending:
            return
        result = self.engine.result
        snap = result.snapshot
        scratch = resolver.build_keyed(self.engine.claims, config=CFG, serial=snap.serial,
                                       ready=snap.ready, annotations=self.engine.annotations,
                                       holds=self.engine.holds,
                                       unhealthy=self.engine.unhealthy)
        assert differences(snap, scratch.snapshot) == []
        for name in {*snap.names, *PROBES}:
            assert answers(snap, name) == answers(scratch.snapshot, name), name
        assert result.entries == scratch.entries
        assert result.conflicts == scratch.conflicts
        assert result.overridden == scratch.overridden
        assert result.invalid == scratch.invalid
        assert result.takeovers == scratch.takeovers
        assert result.entry_count == len(scratch.entries)
        # /v1/aliases, re-rendering only the names whose resolution changed,
        # is the document of a build from scratch, byte for byte.
        assert b"".join(self.renderer.pieces(result)) == json.dumps(
            aliases_document(scratch)).encode()


EngineMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("ENGINE_EXAMPLES", "300")), stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
TestEngine = EngineMachine.TestCase


def test_changed_objects_are_tracked_only_for_a_state_file() -> None:
    # Nothing takes the marks without a state file: they must not pile up.
    claim = AliasClaim("api.internal", OWNERS[0], addresses=("10.0.0.1",))
    for track, expected in ((False, set()), (True, {"k\0a"})):
        engine = Engine(CFG, serial=1, track_changes=track)
        engine.set("k\0a", [claim])
        assert engine.changed_keys == expected


def test_a_name_is_held_for_its_namespace_after_its_claim_goes_away() -> None:
    """The owner (team-b) deletes and recreates its Service: the older claim
    from team-a, waiting, does not win in between, nor beat the recreated
    (younger) claim while the hold lasts; once it ends, the conflict rule
    applies again. A namespace with no hold is unaffected (name_hold 0)."""
    cfg = ZoneConfig.from_names(["internal"], name_hold=600.0)
    owner = Owner(1.0, "team-b", "pay", uid="u1")
    squat = AliasClaim("pay.internal", Owner(2.0, "team-a", "sq"), addresses=("10.6.6.6",))
    mine = AliasClaim("pay.internal", owner, addresses=("10.0.0.1",))
    again = AliasClaim("pay.internal", Owner(50.0, "team-b", "pay", uid="u2"),
                       addresses=("10.0.0.2",))
    eng = Engine(cfg, serial=1)
    eng.set("kubernetes\0svc/team-b/pay", [mine])
    eng.set("kubernetes\0svc/team-a/sq", [squat])
    eng.commit(now=10.0, ready=True)

    def served() -> list[str]:
        return [e.claim.addresses[0] for e in eng.result.entries]

    assert served() == ["10.0.0.1"]
    eng.set("kubernetes\0svc/team-b/pay", [])  # deleted...
    eng.commit(now=20.0, ready=True)
    assert served() == []
    assert eng.result.conflicts == (
        resolver.Conflict("pay.internal.", owner, squat.owner, until=620.0),)
    assert eng.next_expiry == 620.0
    eng.set("kubernetes\0svc/team-b/pay", [again])  # ...and recreated, younger
    eng.commit(now=50.0, ready=True)
    assert served() == ["10.0.0.2"]
    assert [c.loser.namespace for c in eng.result.conflicts] == ["team-a"]
    scratch = resolver.build_keyed(eng.claims, config=cfg, serial=eng.serial,
                                   holds=eng.holds)
    assert scratch.entries == eng.result.entries
    assert scratch.conflicts == eng.result.conflicts
    # The hold ends: the older claim wins again, by the conflict rule.
    assert eng.commit(now=619.0, ready=True) is None
    eng.commit(now=620.0, ready=True)
    assert served() == ["10.6.6.6"] and eng.next_expiry is None
    # Without a hold the waiting claim wins at once.
    eng = Engine(ZoneConfig.from_names(["internal"]), serial=1)
    eng.set("kubernetes\0svc/team-b/pay", [mine])
    eng.set("kubernetes\0svc/team-a/sq", [squat])
    eng.commit(now=10.0, ready=True)
    eng.set("kubernetes\0svc/team-b/pay", [])
    eng.commit(now=20.0, ready=True)
    assert served() == ["10.6.6.6"]
