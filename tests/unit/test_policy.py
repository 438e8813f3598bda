"""The name policy: pattern matching, malformed patterns failing
closed, the default with {namespace}, who is subject to it, and the engine
re-validating only the namespace whose policy changed."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from aliasd import engine as engine_module
from aliasd import resolver
from aliasd.engine import KEY_SEP, Engine
from aliasd.model import OVERRIDE_KIND, AliasClaim, Owner
from aliasd.policy import NamePolicy, Pattern, parse_allowed, parse_pattern
from aliasd.runtime.statewriter import stored_claims
from aliasd.state import StateFile
from aliasd.zoneconfig import TakeoverPolicy, ZoneConfig
from tests.support import ROOT

ZONE = "internal."


@pytest.mark.parametrize(("pattern", "name", "match"), [
    ("shop.internal", "shop.internal.", True),
    ("shop.internal", "a.shop.internal.", False),
    ("shop.internal.", "shop.internal.", True),          # the trailing dot is optional
    ("Shop.Internal", "shop.internal.", True),           # names are case-insensitive
    ("*.shop.internal", "a.shop.internal.", True),
    ("*.shop.internal", "a.b.shop.internal.", True),     # any depth
    ("*.shop.internal", "shop.internal.", False),        # not the suffix itself (RFC 4592)
    ("*.shop.internal", "myshop.internal.", False),      # whole labels only
    ("*.shop.internal", "*.shop.internal.", True),       # a wildcard claim strictly under it
    ("shop", "shop.internal.", True),                    # a bare label gets the default zone
    ("*.shop", "a.shop.internal.", True),
    ("*.example.com", "legacy.example.com.", True),      # outside the zones (takeovers)
    ("*", "anything.internal.", True),
    ("*", "legacy.example.com.", True),
])
def test_pattern_matching(pattern: str, name: str, match: bool) -> None:
    assert parse_pattern(pattern, ZONE).matches(name) is match


@pytest.mark.parametrize(("pattern", "why"), [
    ("*shop.internal", "'*' is allowed only as the whole first label"),
    ("a.*.internal", "'*' is allowed only as the whole first label"),
    ("*.*.internal", "'*' is allowed only as the whole first label"),
    ("bad_label.internal", "label 'bad_label' is not a valid DNS label"),
    ("*.", "label '' is not a valid DNS label"),
    ("a..internal", "label '' is not a valid DNS label"),
])
def test_malformed_patterns(pattern: str, why: str) -> None:
    with pytest.raises(ValueError, match="^" + why.replace("*", r"\*").replace(".", r"\.")):
        parse_pattern(pattern, ZONE)


LABELS = st.sampled_from(["a", "b", "shop", "x-1", "internal"])
NAMES = st.lists(LABELS, min_size=1, max_size=4).map(lambda ls: ".".join(ls) + ".")


@given(suffix=NAMES, name=NAMES)
def test_wildcard_matches_exactly_the_strict_descendants(suffix: str, name: str) -> None:
    # The reference: compare label lists from the right.
    s, n = suffix.rstrip(".").split("."), name.rstrip(".").split(".")
    strictly_under = len(n) > len(s) and n[len(n) - len(s):] == s
    assert parse_pattern("*." + suffix, ZONE).matches(name) is strictly_under
    assert parse_pattern(suffix, ZONE).matches(name) is (n == s)
    assert Pattern("", under=True).matches(name)


def test_malformed_patterns_match_nothing_and_the_others_still_apply() -> None:
    allowed = parse_allowed("shop.internal, bad_label.internal, *.shop.internal, a*b",
                            namespace="shop", rule="aliasd.io/allowed-names on Namespace shop",
                            default_zone=ZONE)
    assert allowed.patterns == (Pattern("shop.internal."), Pattern("shop.internal.", True))
    assert allowed.refusal("shop.internal.") is None
    assert allowed.refusal("api.shop.internal.") is None
    assert allowed.refusal("bad_label.internal.") == (
        "bad_label.internal. is not among the names namespace shop may claim "
        "(aliasd.io/allowed-names on Namespace shop: 'shop.internal, bad_label.internal, "
        "*.shop.internal, a*b'); malformed, so matching nothing: 'bad_label.internal' (label "
        "'bad_label' is not a valid DNS label (lower-case letters, digits and '-', not at "
        "either end)), 'a*b' ('*' is allowed only as the whole first label "
        "('*.shop.internal') or alone ('*'))")


def test_empty_annotation_allows_nothing() -> None:
    allowed = NamePolicy().allowed("shop", "", ZONE)
    assert allowed is not None and allowed.patterns == ()
    assert allowed.refusal("shop.internal.") is not None


def test_default_with_namespace_placeholder() -> None:
    policy = NamePolicy.parse(["*.{namespace}.internal, {namespace}.internal"])
    shop = policy.allowed("shop", None, ZONE)
    assert shop is not None
    assert shop.rule == "--default-allowed-names"
    assert shop.value == "*.shop.internal, shop.internal"
    assert shop.refusal("api.shop.internal.") is None
    assert shop.refusal("shop.internal.") is None
    assert shop.refusal("api.cart.internal.") == (
        "api.cart.internal. is not among the names namespace shop may claim "
        "(--default-allowed-names: '*.shop.internal, shop.internal')")
    # The annotation replaces the default (it does not add to it).
    only = policy.allowed("shop", "cart.internal", ZONE)
    assert only is not None and only.refusal("api.shop.internal.") is not None
    # No default: any name.
    assert NamePolicy.parse([]).allowed("shop", None, ZONE) is None


@pytest.mark.parametrize(("item", "error"), [
    ("*.{ns}.internal", "--default-allowed-names '*.{ns}.internal': the only placeholder is "
                        "{namespace}"),
    ("*.{namespace}..internal", "--default-allowed-names '*.{namespace}..internal': label '' "
                                "is not a valid DNS label"),
])
def test_default_flag_errors(item: str, error: str) -> None:
    with pytest.raises(ValueError) as e:
        NamePolicy.parse([item])
    assert str(e.value).startswith(error)


CFG = ZoneConfig.from_names(["internal"], takeover=TakeoverPolicy.parse(["example.com"]),
                            names=NamePolicy.parse(["*.{namespace}.internal"]))


def claim(name: str, namespace: str, *, kind: str = "Service", takeover: bool = False
          ) -> AliasClaim:
    return AliasClaim(name, Owner(1.0, namespace, "web", kind), addresses=("10.0.0.1",),
                      takeover=takeover)


def test_denied_claims_are_invalid_with_their_own_reason() -> None:
    result = resolver.build([
        claim("api.shop.internal", "shop"),
        claim("payments.internal", "shop"),                       # denied by the default
        claim("payments.internal", "payments", kind="ServiceEntry"),  # not under payments.
        claim("legacy.example.com", "shop", takeover=True),       # takeovers too
        claim("legacy.example.org", "shop", takeover=True),       # --allow-takeover first
        AliasClaim("payments.internal", Owner(0.0, "", "payments.internal", OVERRIDE_KIND),
                   addresses=("10.0.0.9",)),                      # overrides are not subject
        AliasClaim("file.internal", Owner(0.0, "", "aliases.yaml", "File"),
                   addresses=("10.0.0.8",)),                      # nor the aliases file
    ], config=CFG, serial=1)
    assert [e.name for e in result.entries] == ["api.shop.internal.", "file.internal.",
                                                "payments.internal."]
    assert [(i.claim.name, i.event) for i in result.invalid] == [
        ("payments.internal", "AliasNotAllowed"), ("payments.internal", "AliasNotAllowed"),
        ("legacy.example.com", "AliasNotAllowed"), ("legacy.example.org", "TakeoverNotAllowed")]
    assert result.invalid[2].reason == (
        "legacy.example.com. is not among the names namespace shop may claim "
        "(--default-allowed-names: '*.shop.internal')")
    assert result.invalid_by_reason() == {"AliasNotAllowed": 3, "TakeoverNotAllowed": 1}
    # The annotation lets the takeover through (and --allow-takeover still applies).
    allowed = resolver.build([claim("legacy.example.com", "shop", takeover=True)],
                             config=CFG, serial=1,
                             annotations={"shop": "legacy.example.com"})
    assert allowed.takeovers == ("legacy.example.com.",)


def test_namespace_change_revalidates_only_that_namespace(
        monkeypatch: pytest.MonkeyPatch) -> None:
    eng = Engine(CFG, serial=1)
    for ns in ("shop", "cart", "other"):
        for i in range(3):
            eng.set(f"kubernetes{KEY_SEP}svc/{ns}/s{i}", [claim(f"s{i}.shop.internal", ns)])
    eng.commit(now=0.0, ready=True)
    assert len(eng.result.entries) == 3  # namespace shop's own
    validated: list[str] = []
    real = resolver.validate

    def counting(claims: tuple[AliasClaim, ...], config: ZoneConfig,
                 annotations: Mapping[str, str]) -> object:
        validated.extend(c.owner.namespace for c in claims)
        return real(claims, config, annotations)

    monkeypatch.setattr(engine_module, "validate", counting)
    # The same value again, or a namespace with no claims: nothing at all.
    assert not eng.set_namespace("cart", None)
    assert eng.set_namespace("empty", "*")
    assert validated == [] and not eng.pending
    # cart may now claim *.shop.internal: its three objects, no others.
    assert eng.set_namespace("cart", "*.shop.internal")
    assert validated == ["cart"] * 3
    commit = eng.commit(now=1.0, ready=True)
    assert commit is not None
    # Oldest claim wins, ties by namespace: cart's claims win s0..s2.
    assert {e.claim.owner.namespace for e in eng.result.entries} == {"cart"}
    assert len(eng.result.conflicts) == 3
    scratch = resolver.build_keyed(eng.claims, config=CFG, serial=eng.serial,
                                   annotations=eng.annotations)
    assert scratch.entries == eng.result.entries
    assert scratch.invalid == eng.result.invalid


def test_denied_claims_are_not_written_to_the_state_file(tmp_path: Path) -> None:
    # The state file is served at start, before the Namespaces are read: a
    # denied claim in it would be served.
    eng = Engine(CFG, serial=1)
    eng.set(f"kubernetes{KEY_SEP}svc/shop/a", [claim("api.shop.internal", "shop")])
    eng.set(f"kubernetes{KEY_SEP}svc/shop/b", [claim("payments.internal", "shop"),
                                              claim("b.shop.internal", "shop")])
    eng.commit(now=0.0, ready=True)
    state = StateFile(tmp_path / "state.json")
    state.stage(stored_claims(eng.claims, eng.invalid, eng.claims.keys()))
    state.save(now=1.0)
    loaded = StateFile(tmp_path / "state.json").load()
    assert loaded is not None
    assert sorted(c.name for c in loaded.claims) == ["api.shop.internal", "b.shop.internal"]


def test_the_state_file_keeps_the_namespaces_policies(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    StateFile(path).save(now=1.0, annotations={"shop": "*.shop.internal, pay.internal"})
    loaded = StateFile(path).load()
    assert loaded is not None and loaded.annotations == {"shop": "*.shop.internal, pay.internal"}
    # A save without them (an override written standalone) keeps the last ones.
    again = StateFile(path)
    again.load()
    again.save(now=2.0, overrides=[])
    reloaded = StateFile(path).load()
    assert reloaded is not None
    assert reloaded.annotations == {"shop": "*.shop.internal, pay.internal"}
    # A file written before the policies were kept loads with none.
    doc = json.loads(path.read_text())
    del doc["annotations"]
    path.write_text(json.dumps(doc))
    old = StateFile(path).load()
    assert old is not None and old.annotations == {}


def test_the_example_namespace() -> None:
    ns = yaml.safe_load((ROOT / "examples/tenant/namespace.yaml").read_text())
    allowed = NamePolicy().allowed(ns["metadata"]["name"], ns["metadata"]["annotations"][
        "aliasd.io/allowed-names"], ZONE)
    assert allowed is not None and allowed.malformed == ()
    assert [n for n in ("shop.internal.", "api.shop.internal.", "payments.internal.")
            if allowed.allows(n)] == ["shop.internal.", "api.shop.internal."]
