"""A sample zone with every kind of name the answerer serves (addresses, a
CNAME in the zone and out of it, SRV ports, a large RRset, a second zone with
an empty non-terminal, wildcards): the fast-path tests (tests/unit/test_fastpath.py)
ask it, and bench/dns_profile.py times it."""

from __future__ import annotations

from aliasd import resolver
from aliasd.model import AliasClaim, Owner, Port
from aliasd.policy import NamePolicy
from aliasd.zoneconfig import ZoneConfig

CFG = ZoneConfig.from_names(["internal", "corp.example"], ns_addresses=["127.0.0.1"],
                            names=NamePolicy.parse(["*"]))  # wildcards granted
CLAIMS = [
    AliasClaim("my-fruits.internal", Owner(1, "a", "a"), addresses=("10.96.0.10", "fd00::10"),
               ports=(Port("http", "TCP", 80),)),
    AliasClaim("legacy-db", Owner(1, "a", "b"), cname="db.example.com"),
    AliasClaim("v2.internal", Owner(1, "a", "c"), cname="my-fruits.internal"),
    AliasClaim("big.internal", Owner(1, "a", "d"),
               addresses=tuple(f"fd00::{i:x}" for i in range(1, 41))),
    AliasClaim("api.team.corp.example", Owner(1, "a", "e"), addresses=("10.0.0.7",)),
    # Wildcards (RFC 4592): one that a name and an empty non-terminal
    # block, CNAMEs chased in the zone, out of it, and to a name the wildcard
    # itself answers (whose answers share more of some qnames than the closest
    # encloser), and one next to the empty non-terminal team.corp.example.
    AliasClaim("*.wild.internal", Owner(1, "w", "a"), addresses=("10.7.0.1", "fd00::7:1"),
               ports=(Port("http", "TCP", 80),)),
    AliasClaim("host1.wild.internal", Owner(1, "w", "b"), addresses=("10.7.0.2",)),
    AliasClaim("deep.ent.wild.internal", Owner(1, "w", "c"), addresses=("10.7.0.3",)),
    AliasClaim("*.cn.internal", Owner(1, "w", "d"), cname="my-fruits.internal"),
    AliasClaim("*.ext.internal", Owner(1, "w", "e"), cname="db.example.com"),
    AliasClaim("*.dang.internal", Owner(1, "w", "f"), cname="t.dang.internal"),
    AliasClaim("*.team.corp.example", Owner(1, "w", "g"), addresses=("10.0.0.8",)),
    AliasClaim("*.down.internal", Owner(1, "w", "h")),  # no usable target: SERVFAIL
]
SNAP = resolver.build(CLAIMS, config=CFG, serial=1_800_000_000).snapshot
