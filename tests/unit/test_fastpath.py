"""Fast path == slow path, byte for byte (hypothesis), for cached answers and
negative templates; cached answers across snapshot swaps."""

from __future__ import annotations

import random

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aliasd import resolver
from aliasd.dns.answer import Answerer
from aliasd.dns.cache import CACHED_QTYPES
from aliasd.dns.stats import Stats
from aliasd.model import AliasClaim, Owner
from aliasd.zone import Snapshot
from aliasd_dev.samples import CFG, CLAIMS, SNAP
from tests.support.stats import CHI2_1DF_P1E9, chi2

WILD_NAMES = ["a.wild.internal.", "a.b.wild.internal.", "host1.wild.internal.",
              "ent.wild.internal.", "x.ent.wild.internal.", "wild.internal.", "*.wild.internal.",
              "x.*.wild.internal.", "sub.host1.wild.internal.", "q.cn.internal.",
              "q.ext.internal.", "q.dang.internal.", "t.dang.internal.", "x.t.dang.internal.",
              "zz.team.corp.example.", "x.down.internal.", "down.internal."]
# Answered from the wildcard, but their bytes are their own (the CNAME target
# t.dang.internal shares more than the closest encloser with them): slow path.
UNTEMPLATED = {"t.dang.internal.", "x.t.dang.internal."}
NAMES = ["my-fruits.internal.", "legacy-db.internal.", "v2.internal.", "big.internal.",
         "_http._tcp.my-fruits.internal.", "_tcp.my-fruits.internal.", "internal.",
         "ns.internal.", "nope.internal.", "team.corp.example.", "api.team.corp.example.",
         "example.com.", "corp.example.", *WILD_NAMES]
QTYPES = ["A", "AAAA", "CNAME", "SRV", "SOA", "NS", "MX", "TXT", "ANY", "PTR"]


@st.composite
def queries(draw: st.DrawFn) -> bytes:
    name = draw(st.sampled_from(NAMES))
    flips = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
    name = "".join(c.upper() if f else c for c, f in zip(name, flips, strict=True))
    edns = draw(st.sampled_from([None, 0]))
    payload = draw(st.integers(min_value=0, max_value=4096))
    flags = dns.flags.DO if draw(st.booleans()) else 0
    opts: list[dns.edns.Option] = []
    if edns is not None and draw(st.booleans()):
        opts.append(dns.edns.GenericOption(dns.edns.OptionType.COOKIE,
                                           draw(st.binary(min_size=8, max_size=40))))
    q = dns.message.make_query(name, draw(st.sampled_from(QTYPES)),
                               use_edns=edns if edns is not None else False, payload=payload,
                               ednsflags=flags, options=opts)
    q.id = draw(st.integers(min_value=0, max_value=65535))
    if not draw(st.booleans()):
        q.flags &= ~dns.flags.RD
    if draw(st.booleans()):
        q.flags |= dns.flags.CD
    return q.to_wire()


def canonical(wire: bytes) -> bytes:
    """The same query, lower-cased and with a plain header: primes the cache."""
    return b"\x00\x00\x01\x00" + wire[4:12] + wire[12:].lower()


@settings(max_examples=2000, suppress_health_check=[HealthCheck.too_slow])
@given(queries())
def test_fast_path_equals_slow_path(wire: bytes) -> None:
    fast = Answerer(SNAP, stats=Stats())
    slow = Answerer(SNAP, stats=Stats())
    fast.respond(canonical(wire))  # fill the wire cache from another casing / ID / flags
    hits = fast.stats.fast_hits
    got = fast.respond(wire)
    want = slow.answer_slow(wire)
    assert got == want
    assert got is not None and got[:2] == wire[:2]
    # The fast path answered it, unless the answer had to be truncated or is a
    # CNAME chased for a type the zones do not serve (not cached).
    msg = dns.message.from_wire(got)
    if (not got[2] & 0x02 and (not msg.answer or msg.question[0].rdtype in CACHED_QTYPES)
            and msg.question[0].name.to_text().lower() not in UNTEMPLATED):
        assert fast.stats.fast_hits == hits + 1
    # Nothing answered from a wildcard enters the cache.
    if synthesized(msg.question[0].name.to_text().lower()):
        assert fast.cache_size == 0


def synthesized(name: str) -> bool:
    return SNAP.classify(name, dns.rdatatype.A).encloser != ""


# Names that do not exist (or exist without the asked type), of every length,
# under each suffix that changes how the SOA compresses against the question
# (the zone, ns.<zone> and hostmaster.<zone> are the SOA's own names), plus
# labels with any byte in them, a dot included.
SUFFIXES = ["internal.", "ns.internal.", "hostmaster.internal.", "my-fruits.internal.",
            "_tcp.my-fruits.internal.", "corp.example.", "team.corp.example.",
            "ns.corp.example.", "hostmaster.corp.example.", "example.com.", ".",
            "wild.internal.", "ent.wild.internal.", "host1.wild.internal.", "cn.internal.",
            "ext.internal.", "dang.internal.", "*.wild.internal.", "down.internal."]
LABEL = st.one_of(
    st.text(alphabet="abcxyzXYZ0189-_", min_size=1, max_size=63).map(str.encode),
    st.sampled_from([b"ns", b"NS", b"hostmaster", b"internal", b"a.b", b"*"]),
    st.binary(min_size=1, max_size=12),
)


@st.composite
def any_names(draw: st.DrawFn) -> dns.name.Name:
    labels = draw(st.lists(LABEL, max_size=4))
    suffix = dns.name.from_text(draw(st.sampled_from(SUFFIXES)))
    try:
        return dns.name.Name([*labels, *suffix.labels])
    except dns.name.NameTooLong:
        return suffix


def wire_of(name: dns.name.Name, qtype: str, *, edns: int | None, do: bool, qid: int,
            rd: bool, cd: bool) -> bytes:
    q = dns.message.make_query(name, qtype, use_edns=edns if edns is not None else False,
                               payload=1232, ednsflags=dns.flags.DO if do else 0)
    q.id = qid
    if not rd:
        q.flags &= ~dns.flags.RD
    if cd:
        q.flags |= dns.flags.CD
    return q.to_wire()


@settings(max_examples=3000, suppress_health_check=[HealthCheck.too_slow])
@given(first=any_names(), second=any_names(), qtype=st.sampled_from(QTYPES),
       edns=st.sampled_from([None, 0]), do=st.booleans(), qid=st.integers(0, 65535),
       rd=st.booleans(), cd=st.booleans())
def test_negative_templates_equal_slow_path(first: dns.name.Name, second: dns.name.Name,
                                            qtype: str, edns: int | None, do: bool, qid: int,
                                            rd: bool, cd: bool) -> None:
    """A template learnt from one name answers another one of another length,
    byte for byte as the slow path does (0x20 case, EDNS shape, flags)."""
    fast = Answerer(SNAP, stats=Stats())
    slow = Answerer(SNAP, stats=Stats())
    for name in (first, second):
        wire = wire_of(name, qtype, edns=edns, do=do, qid=qid, rd=rd, cd=cd)
        got = fast.respond(wire)
        assert got == slow.answer_slow(wire)
    # Asked again (another ID and flags), the second name never takes the slow path
    # unless it cannot be templated nor cached.
    wire = wire_of(second, qtype, edns=edns, do=do, qid=qid ^ 0x5A5A, rd=not rd, cd=not cd)
    slow_before = fast.stats.slow
    got = fast.respond(wire)
    assert got is not None and got == slow.answer_slow(wire)
    msg = dns.message.from_wire(got)
    dotted = any(b"." in label for label in second.labels)
    dotted |= second.to_text().lower() in UNTEMPLATED or (
        len(second.labels) > 3 and second.labels[-4].lower() == b"t"
        and second.labels[-3:-1] == (b"dang", b"internal"))
    if msg.rcode() == dns.rcode.FORMERR:  # a label that is not UTF-8: dnslib refuses it
        return
    if not dotted and (not msg.answer or dns.rdatatype.from_text(qtype) in CACHED_QTYPES):
        assert fast.stats.slow == slow_before
    if not msg.answer and not dotted:
        assert fast.stats.template_hits >= 1


def test_random_names_leave_the_cache_alone() -> None:
    """20,000 distinct nonexistent names: one slow answer per template shape, no
    cache entry; a name that exists, asked afterwards, is cached."""
    a = Answerer(SNAP, stats=Stats())
    for i in range(20_000):
        name = f"x{i * 7919 % 1_000_003:x}.{'internal' if i % 2 else 'corp.example'}."
        out = a.respond(dns.message.make_query(name, "A", id=i % 65536).to_wire())
        assert out is not None
        assert dns.message.from_wire(out).rcode() == dns.rcode.NXDOMAIN
    assert a.cache_size == 0
    assert a.stats.slow == 2  # one template per zone
    assert a.stats.template_hits == 20_000 - 2
    q = dns.message.make_query("my-fruits.internal.", "A").to_wire()
    a.respond(q)
    a.respond(q)
    assert a.cache_size == 1
    assert a.stats.slow == 3


def test_random_qtypes_at_an_existing_name_are_nodata_templates() -> None:
    a = Answerer(SNAP, stats=Stats())
    for qtype in range(1000, 3000):
        q = dns.message.make_query("my-fruits.internal.", dns.rdatatype.RdataType(qtype))
        out = a.respond(q.to_wire())
        assert out is not None
        msg = dns.message.from_wire(out)
        assert msg.rcode() == dns.rcode.NOERROR and not msg.answer
        assert [rs.rdtype for rs in msg.authority] == [dns.rdatatype.SOA]
    assert a.cache_size == 0
    assert a.stats.slow == 1


@given(st.binary(max_size=300))
def test_garbage_never_raises(data: bytes) -> None:
    a = Answerer(SNAP, stats=Stats())
    out = a.respond(data)
    assert out is None or out[:2] == data[:2]
    assert a.stats.problems["internal_error"] == 0


def test_weighted_name_is_drawn_per_query_on_the_fast_path() -> None:
    claims = [AliasClaim("shop.internal", Owner(1, "a", "blue"), addresses=("10.0.0.1",),
                         weight=10),
              AliasClaim("shop.internal", Owner(2, "a", "green"), addresses=("10.0.0.2",),
                         weight=90)]
    stats = Stats()
    answerer = Answerer(resolver.build(claims, config=CFG, serial=1).snapshot, stats=stats)
    random.seed(1412)  # the answerer draws from the global RNG: same draws on every run
    counts: dict[str, int] = {}
    for i in range(4000):
        q = dns.message.make_query("shop.internal.", "A", id=i % 65536)
        out = answerer.respond(q.to_wire())
        assert out is not None
        (rrset,) = dns.message.from_wire(out).answer
        ip = rrset[0].address
        counts[ip] = counts.get(ip, 0) + 1
    assert set(counts) == {"10.0.0.1", "10.0.0.2"}
    assert chi2(counts, {"10.0.0.1": 0.1, "10.0.0.2": 0.9}) < CHI2_1DF_P1E9
    assert stats.fast_hits >= 3990  # one slow answer per variant, the rest from the cache


def _snapshot(target_ip: str, *, serial: int, extra: tuple[AliasClaim, ...] = ()) -> Snapshot:
    claims = [*CLAIMS,
              AliasClaim("target.internal", Owner(1, "b", "t"), addresses=(target_ip,)),
              AliasClaim("via.internal", Owner(1, "b", "v"), cname="target.internal"),
              AliasClaim("other.internal", Owner(1, "b", "o"), addresses=("10.9.9.9",)),
              *extra]
    return resolver.build(claims, config=CFG, serial=serial).snapshot


SWAP_QUESTIONS = [("my-fruits.internal.", "A"), ("my-fruits.internal.", "AAAA"),
                  ("_http._tcp.my-fruits.internal.", "SRV"), ("v2.internal.", "A"),
                  ("legacy-db.internal.", "A"), ("other.internal.", "A"),
                  ("target.internal.", "A"), ("via.internal.", "A"), ("via.internal.", "CNAME"),
                  ("internal.", "SOA"), ("internal.", "NS"), ("late.internal.", "A")]


def test_cached_answers_survive_a_swap_unless_a_name_they_read_changed() -> None:
    """swap(snapshot, changed) keeps what is still right."""
    before = _snapshot("10.2.2.2", serial=1)
    # target.internal moves; late.internal appears (it was NXDOMAIN, a template).
    after = _snapshot("10.2.2.3", serial=2, extra=(
        AliasClaim("late.internal", Owner(1, "b", "l"), addresses=("10.3.3.3",)),))
    stats = Stats()
    old = Answerer(before, stats=stats)
    wires = [dns.message.make_query(n, t, id=7).to_wire() for n, t in SWAP_QUESTIONS]
    for w in wires:
        old.respond(w)
    assert old.cache_size == len(SWAP_QUESTIONS) - 1  # late.internal: NXDOMAIN, not cached
    new = old.evolve(after, frozenset({"target.internal.", "late.internal."}))
    reference = Answerer(after, stats=Stats())
    redone = set()
    for (name, qtype), w in zip(SWAP_QUESTIONS, wires, strict=True):
        slow = stats.slow
        got = new.respond(w)
        assert got == reference.answer_slow(w), (name, qtype)
        if stats.slow != slow:
            redone.add((name, qtype))
    # Only what read target.internal (itself, the CNAME to it), the apex (its SOA
    # serial changed) and the new name are answered anew; the rest came from the cache.
    assert redone == {("target.internal.", "A"), ("via.internal.", "A"), ("internal.", "SOA"),
                      ("internal.", "NS"), ("late.internal.", "A")}
    answer = dns.message.from_wire(new.respond(wires[7]) or b"")
    assert sorted(rd.to_text() for rs in answer.answer for rd in rs) == [
        "10.2.2.3", "target.internal."]
    # A negative answer carries the new serial (templates are per snapshot).
    nx = dns.message.make_query("nope.internal.", "A").to_wire()
    got = new.respond(nx)
    assert got == reference.answer_slow(nx)
    assert dns.message.from_wire(got or b"").authority[0][0].serial == 2
    # The old Answerer handed its cache over and still answers right (slow path).
    assert old.cache_size == 0
    assert old.respond(wires[6]) == Answerer(before, stats=Stats()).answer_slow(wires[6])


def test_swap_without_changed_names_keeps_nothing() -> None:
    stats = Stats()
    a = Answerer(_snapshot("10.2.2.2", serial=1), stats=stats)
    w = dns.message.make_query("other.internal.", "A").to_wire()
    a.respond(w)
    assert a.cache_size == 1
    b = a.evolve(_snapshot("10.2.2.2", serial=2), None)
    assert b.cache_size == 0
    slow = stats.slow
    b.respond(w)
    assert stats.slow == slow + 1
