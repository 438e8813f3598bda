"""Wildcards (RFC 4592): which wildcard names are valid, the
lookup's closest-encloser rules, and the answer cache under a wildcard flood."""

from __future__ import annotations

import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from aliasd import resolver, zoneconfig
from aliasd.dns.answer import Answerer
from aliasd.dns.stats import Stats
from aliasd.engine import Engine
from aliasd.model import OVERRIDE_KIND, AliasClaim, ConfigError, Owner, Port
from aliasd.policy import NamePolicy
from aliasd.sources import overrides
from aliasd.sources.file import parse_aliases
from aliasd.zone import AAAA, ANY, CNAME, SRV, A, Outcome, Rcode

# A namespace claims a wildcard only where the name policy grants it: here any name.
CFG = zoneconfig.ZoneConfig.from_names(
    ["internal", "corp.internal"], takeover=zoneconfig.TakeoverPolicy.parse(["example.com"]),
    names=NamePolicy.parse(["*"]))
OWNER = Owner(1.0, "shop", "web")


def invalid_reason(name: str, **kw: object) -> str | None:
    result = resolver.build([AliasClaim(name, OWNER, addresses=("10.0.0.1",), **kw)],  # type: ignore[arg-type]
                            config=CFG, serial=1)
    return result.invalid[0].reason if result.invalid else None


@pytest.mark.parametrize(("name", "kw", "why"), [
    ("*.foo.internal", {}, None),
    ("*.a.b.internal", {}, None),
    ("*.team.corp.internal", {}, None),
    ("*.internal", {}, "is a wildcard at the zone apex"),
    ("*", {}, "is a wildcard at the zone apex"),  # a bare label: *.internal
    ("*.corp.internal", {}, "is a wildcard at the zone apex"),  # another zone's apex
    ("a.*.foo.internal", {}, "label '*' is a wildcard, allowed only as the leftmost label"),
    ("*.*.foo.internal", {}, "label '*' is a wildcard, allowed only as the leftmost label"),
    ("f*.foo.internal", {}, "label 'f*' is not a valid DNS label"),
    ("*.foo.example.org", {}, "outside the served zones"),
    ("*.foo.internal", {"weight": 10}, "is a wildcard, which cannot be shared by weight"),
    ("*.legacy.example.com", {"takeover": True},
     "label '*' is a wildcard, allowed only as the leftmost label"),
])
def test_which_wildcards_are_valid(name: str, kw: dict[str, object], why: str | None) -> None:
    reason = invalid_reason(name, **kw)
    if why is None:
        assert reason is None
    else:
        assert reason is not None and why in reason, reason


def test_cname_target_cannot_be_a_wildcard() -> None:
    result = resolver.build([AliasClaim("a.internal", OWNER, cname="*.foo.internal")],
                            config=CFG, serial=1)
    assert "label '*' is a wildcard" in result.invalid[0].reason


def test_aliases_file_and_overrides_take_wildcards() -> None:
    claims = parse_aliases("aliases:\n  '*.foo.internal': {addresses: [10.1.0.1]}\n",
                           path="a.yaml", config=CFG)
    assert [c.name for c in claims] == ["*.foo.internal"]
    with pytest.raises(ConfigError, match=r"a.yaml: alias '\*.internal': .* zone apex"):
        parse_aliases("aliases:\n  '*.internal': {addresses: [10.1.0.1]}\n",
                      path="a.yaml", config=CFG)
    o = overrides.parse("*.foo.internal", {"addresses": ["10.2.0.1"]}, zones=CFG)
    assert o.name == "*.foo.internal."
    with pytest.raises(ValueError, match="zone apex"):
        overrides.parse("*.internal", {"addresses": ["10.2.0.1"]}, zones=CFG)


def test_ports_of_a_wildcard_give_no_srv_and_an_override_wins_it() -> None:
    """RFC 4592 4.5: _http._tcp.*.foo.internal. would not be a wildcard. The
    wildcard's owner name is a name like any other: the override beats the
    Service, the older of two Services wins and the other is a conflict."""
    claims = [AliasClaim("*.foo.internal", OWNER, addresses=("10.0.0.1",),
                         ports=(Port("http", "TCP", 80),)),
              AliasClaim("*.foo.internal", Owner(2.0, "other", "web"), addresses=("10.0.0.2",)),
              AliasClaim("*.bar.internal", OWNER, addresses=("10.0.0.1",)),
              AliasClaim("*.bar.internal", Owner(0.0, "", "sw", OVERRIDE_KIND),
                         addresses=("10.0.0.9",))]
    result = resolver.build(claims, config=CFG, serial=1)
    snap = result.snapshot
    assert sorted(n for n in snap.names if "_" in n) == []
    assert [(c.name, c.winner.name, c.loser.namespace) for c in result.conflicts] == [
        ("*.foo.internal.", "web", "other")]
    assert [c.loser for c in result.overridden] == [OWNER]
    assert snap.lookup("x.foo.internal.", A).answer[0].rdata == ("10.0.0.1",)
    assert snap.lookup("x.bar.internal.", A).answer[0].rdata == ("10.0.0.9",)
    assert snap.lookup("_http._tcp.x.foo.internal.", SRV).answer == ()


# The RFC 4592 2.2.1 zone as aliases can say it (tests/dns/test_wildcards.py has
# the table against a running aliasd).
RFC_CLAIMS = [
    AliasClaim("*.example.internal", OWNER, addresses=("192.0.2.80", "2001:db8::80")),
    AliasClaim("host1.example.internal", OWNER, addresses=("192.0.2.1",),
               ports=(Port("ssh", "TCP", 22),)),
    AliasClaim("web.host2.example.internal", OWNER, addresses=("192.0.2.2",)),
    AliasClaim("subdel.example.internal", OWNER, addresses=("192.0.2.3",)),
    AliasClaim("*.cn.example.internal", OWNER, cname="host1.example.internal"),
    AliasClaim("via.internal", OWNER, cname="anything.example.internal"),
]


@pytest.mark.parametrize(("qname", "qtype", "rcode", "answer", "wildcard"), [
    ("host3.example.internal.", A, Rcode.NOERROR,
     [("host3.example.internal.", A, ("192.0.2.80",))], "*.example.internal."),
    ("host3.example.internal.", AAAA, Rcode.NOERROR,
     [("host3.example.internal.", AAAA, ("2001:db8::80",))], "*.example.internal."),
    ("host3.example.internal.", SRV, Rcode.NOERROR, [], "*.example.internal."),  # NODATA
    ("host3.example.internal.", ANY, Rcode.NOERROR,
     [("host3.example.internal.", A, ("192.0.2.80",))], "*.example.internal."),
    ("foo.bar.example.internal.", A, Rcode.NOERROR,
     [("foo.bar.example.internal.", A, ("192.0.2.80",))], "*.example.internal."),
    ("host1.example.internal.", AAAA, Rcode.NOERROR, [], None),  # exists: not synthesized
    ("host2.example.internal.", A, Rcode.NOERROR, [], None),  # empty non-terminal
    ("x.host2.example.internal.", A, Rcode.NXDOMAIN, [], None),  # closest encloser host2
    ("_telnet._tcp.host1.example.internal.", SRV, Rcode.NXDOMAIN, [], None),
    ("host.subdel.example.internal.", A, Rcode.NXDOMAIN, [], None),
    ("ghost.*.example.internal.", A, Rcode.NXDOMAIN, [], None),
    ("*.example.internal.", A, Rcode.NOERROR, [("*.example.internal.", A, ("192.0.2.80",))],
     None),
    ("example.internal.", A, Rcode.NOERROR, [], None),  # the wildcard's parent: NODATA
    ("x.cn.example.internal.", A, Rcode.NOERROR,
     [("x.cn.example.internal.", CNAME, ("host1.example.internal.",)),
      ("host1.example.internal.", A, ("192.0.2.1",))], "*.cn.example.internal."),
    ("via.internal.", A, Rcode.NOERROR,
     [("via.internal.", CNAME, ("anything.example.internal.",)),
      ("anything.example.internal.", A, ("192.0.2.80",))], None),
    ("nope.internal.", A, Rcode.NXDOMAIN, [], None),
])
def test_closest_encloser_rules(qname: str, qtype: int, rcode: Rcode,
                                answer: list[tuple[str, int, tuple[str, ...]]],
                                wildcard: str | None) -> None:
    snap = resolver.build(RFC_CLAIMS, config=CFG, serial=1).snapshot
    r = snap.lookup(qname, qtype)
    assert r.rcode == rcode
    assert [(rr.name, rr.rtype, rr.rdata) for rr in r.answer] == answer
    assert r.wildcard == wildcard
    assert [rr.name for rr in r.authority] == ([] if answer else ["internal."])


@pytest.mark.parametrize(("qname", "qtype", "outcome", "owner", "encloser"), [
    ("host3.example.internal.", A, Outcome.DATA, "*.example.internal.", "example.internal."),
    ("host3.example.internal.", SRV, Outcome.NODATA, "*.example.internal.",
     "example.internal."),
    ("foo.bar.example.internal.", ANY, Outcome.DATA, "*.example.internal.",
     "example.internal."),
    ("x.cn.example.internal.", A, Outcome.CNAME, "*.cn.example.internal.",
     "cn.example.internal."),
    ("host1.example.internal.", A, Outcome.DATA, "host1.example.internal.", ""),
    ("host1.example.internal.", AAAA, Outcome.NODATA, "host1.example.internal.", ""),
    ("host2.example.internal.", A, Outcome.NODATA, "host2.example.internal.", ""),
    # RFC 4592 2.2.2: the closest encloser is host2 (an empty non-terminal), which
    # has no wildcard; *.example.internal does not reach below it.
    ("x.host2.example.internal.", A, Outcome.NXDOMAIN, "x.host2.example.internal.", ""),
    ("ghost.*.example.internal.", A, Outcome.NXDOMAIN, "ghost.*.example.internal.", ""),
    ("*.example.internal.", A, Outcome.DATA, "*.example.internal.", ""),
    ("nope.internal.", A, Outcome.NXDOMAIN, "nope.internal.", ""),
    ("web.example.org.", A, Outcome.REFUSED, "", ""),
])
def test_classify_is_the_closest_encloser_and_wildcard_decision(
        qname: str, qtype: int, outcome: Outcome, owner: str, encloser: str) -> None:
    """Snapshot.classify, which the slow path (Snapshot.lookup) and the fast
    path's template choice both ask."""
    snap = resolver.build(RFC_CLAIMS, config=CFG, serial=1).snapshot
    match = snap.classify(qname, qtype)
    assert (match.outcome, match.owner, match.encloser) == (outcome, owner, encloser)


def ask(a: Answerer, name: str, qtype: str = "A", qid: int = 1) -> dns.message.Message:
    out = a.respond(dns.message.make_query(name, qtype, id=qid).to_wire())
    assert out is not None
    return dns.message.from_wire(out)


def test_a_flood_under_a_wildcard_leaves_the_cache_alone() -> None:
    """20,000 distinct names under one wildcard: one slow answer (the template),
    no cache entry; names that exist, asked afterwards, are cached."""
    a = Answerer(resolver.build(RFC_CLAIMS, config=CFG, serial=1).snapshot, stats=Stats())
    for i in range(20_000):
        name = f"X{i * 7919 % 1_000_003:x}.{'' if i % 3 else 'deep.'}example.internal."
        msg = ask(a, name, qid=i % 65536)
        assert msg.rcode() == dns.rcode.NOERROR
        (rrset,) = msg.answer
        assert rrset.name.to_text() == name  # the qname, with its case
        assert [rd.to_text() for rd in rrset] == ["192.0.2.80"]
    assert a.cache_size == 0
    assert a.stats.slow == 1
    assert a.stats.template_hits == 19_999
    assert ask(a, "host1.example.internal.").answer[0][0].to_text() == "192.0.2.1"
    ask(a, "host1.example.internal.")
    assert a.cache_size == 1 and a.stats.slow == 2


def test_cached_answers_through_a_wildcard_go_when_what_they_read_changes() -> None:
    """via.internal is a CNAME to a name the wildcard answers: it is cached (the
    qname exists), and dropped when the wildcard changes or when a name between
    the target and the closest encloser comes to exist."""
    engine = Engine(CFG, serial=1)
    for i, c in enumerate(RFC_CLAIMS):
        engine.set(f"k\0{i}", [c])
    engine.commit(now=1.0, ready=True)
    stats = Stats()
    a = Answerer(engine.result.snapshot, stats=stats)
    ask(a, "via.internal.")
    assert a.cache_size == 1

    def step(key: str, claims: list[AliasClaim], now: float) -> Answerer:
        engine.set(key, claims)
        commit = engine.commit(now=now, ready=True)
        assert commit is not None
        return a.evolve(engine.result.snapshot, commit.changed)

    a = step("k\0new", [AliasClaim("other.internal", OWNER, addresses=("10.9.9.9",))], 2.0)
    assert a.cache_size == 1  # unrelated: kept
    a = step("k\x000", [AliasClaim("*.example.internal", OWNER, addresses=("192.0.2.81",))],
             3.0)
    assert a.cache_size == 0
    assert [rd.to_text() for rd in ask(a, "via.internal.").answer[1]] == ["192.0.2.81"]
    # x.anything.example.internal makes anything.example.internal an empty
    # non-terminal: the CNAME's target now exists, without an address.
    a = step("k\0ent", [AliasClaim("x.anything.example.internal", OWNER,
                                   addresses=("10.9.9.8",))], 4.0)
    assert a.cache_size == 0
    msg = ask(a, "via.internal.")
    assert msg.rcode() == dns.rcode.NOERROR
    assert [rs.rdtype for rs in msg.answer] == [dns.rdatatype.CNAME]


def test_the_name_policy_treats_a_wildcard_as_a_name_under_its_parent() -> None:
    """The name policy and wildcards together: allowed `*.shop.internal` lets a
    tenant claim the wildcard *.shop.internal (it answers only names under
    shop.internal), and `shop.internal` alone does not."""
    cfg = zoneconfig.ZoneConfig.from_names(["internal"], names=NamePolicy.parse([]))
    claims = [AliasClaim("*.shop.internal", Owner(1.0, "shop", "gw"), addresses=("10.0.0.1",)),
              AliasClaim("*.pay.internal", Owner(1.0, "shop", "gw"), addresses=("10.0.0.1",))]
    result = resolver.build(claims, config=cfg, serial=1,
                            annotations={"shop": "*.shop.internal, pay.internal"})
    assert [e.name for e in result.entries] == ["*.shop.internal."]
    assert [(i.claim.name, i.event) for i in result.invalid] == [
        ("*.pay.internal", "AliasNotAllowed")]
    assert result.snapshot.lookup("x.shop.internal.", A).answer[0].rdata == ("10.0.0.1",)
    assert result.snapshot.lookup("x.pay.internal.", A).rcode == Rcode.NXDOMAIN


def test_a_wildcard_from_a_namespace_needs_a_grant_of_the_name_policy() -> None:
    # Without a policy any namespace may claim any name, but not a wildcard:
    # *.team-b.internal from team-a would answer team-b's typos and every name
    # team-b has not deployed yet.
    open_cfg = zoneconfig.ZoneConfig.from_names(["internal"])
    claims = [AliasClaim("*.team-b.internal", Owner(1.0, "team-a", "gw"),
                         addresses=("10.0.0.66",)),
              AliasClaim("api.team-b.internal", Owner(2.0, "team-b", "api"),
                         addresses=("10.0.0.2",))]
    result = resolver.build(claims, config=open_cfg, serial=1)
    assert [e.name for e in result.entries] == ["api.team-b.internal."]
    assert [(i.claim.name, i.event, i.reason) for i in result.invalid] == [(
        "*.team-b.internal", "AliasNotAllowed",
        "*.team-b.internal. is a wildcard, which answers every unclaimed name under "
        "team-b.internal.: a namespace may claim one only where its allowed names grant it, "
        "and namespace team-a has none (no aliasd.io/allowed-names on the Namespace, no "
        "--default-allowed-names)")]
    assert result.snapshot.lookup("typo.team-b.internal.", A).rcode == Rcode.NXDOMAIN
    # Granted by the Namespace's annotation (or --default-allowed-names), it is served.
    granted = resolver.build(claims, config=open_cfg, serial=1,
                             annotations={"team-a": "*.team-b.internal"})
    assert granted.invalid == ()
    assert granted.snapshot.lookup("typo.team-b.internal.", A).answer[0].rdata == (
        "10.0.0.66",)
    # The aliases file has no namespace: the operator wrote it.
    file_claim = AliasClaim("*.team-b.internal", Owner(0.0, "", "aliases.yaml", "File"),
                            addresses=("10.0.0.7",))
    assert resolver.build([file_claim], config=open_cfg, serial=1).invalid == ()
