"""What the DNS answerer counts, read by the metrics endpoint at scrape time.

Plain ints and dicts: the query path pays an increment, never a lock.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field

from aliasd.zone import AAAA, ANY, AXFR, CNAME, IXFR, NS, SOA, SRV, A

LATENCY_BUCKETS = (0.00002, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01, 0.05)
LATENCY_SAMPLE = 16  # a power of two: the hot path tests a bit mask


@dataclass
class Stats:
    """Counters read by the metrics endpoint: answers by (rcode, qtype name),
    and every malformed or refused input by kind."""

    answers: Counter[tuple[str, str]] = field(default_factory=Counter)
    problems: Counter[str] = field(default_factory=Counter)
    fast_hits: int = 0  # answers without the slow path: cache and templates
    template_hits: int = 0  # of which negative/refused templates
    slow: int = 0
    # Answer latency of one UDP query in LATENCY_SAMPLE (timing every query would
    # cost more than the fast path itself): counts per bucket, sum, count.
    latency_buckets: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS))
    latency_sum: float = 0.0
    latency_count: int = 0

    def observe_latency(self, seconds: float) -> None:
        i = bisect.bisect_left(LATENCY_BUCKETS, seconds)
        if i < len(LATENCY_BUCKETS):
            self.latency_buckets[i] += 1
        self.latency_sum += seconds
        self.latency_count += 1


_QTYPE_NAMES = {A: "A", NS: "NS", CNAME: "CNAME", SOA: "SOA", AAAA: "AAAA", SRV: "SRV",
                ANY: "ANY", AXFR: "AXFR", IXFR: "IXFR", 12: "PTR", 15: "MX", 16: "TXT",
                65: "HTTPS", 64: "SVCB"}


def qtype_name(qtype: int) -> str:
    """The ``qtype`` label of the answer counter: a bounded set of names."""
    return _QTYPE_NAMES.get(qtype, "other")
