"""Prometheus metrics: the registry, and the collectors of what has no part
of its own to declare it (the DNS server's counters, counters kept in a plain
``Counter`` by the watches and the patcher, garbage-collector pauses, loop
lag). Every part that counts something declares its metrics in its own
``collect`` (``aliasd.runtime``, ``aliasd.status``); everything is read at
scrape time from plain ints (the query path never takes a lock)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from aliasd.dns.stats import LATENCY_BUCKETS, LATENCY_SAMPLE, Stats
from aliasd.kubeapi import RESPONSES


class DnsMetrics(Collector):
    """What the DNS server counts (``aliasd.dns.answer.Stats``, plain ints on
    the query path) and its cache size, read at scrape time."""

    def __init__(self, stats: Stats, *, cache_entries: Callable[[], int]) -> None:
        self.stats = stats
        self.cache_entries = cache_entries

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily
                                  | HistogramMetricFamily]:
        st = self.stats
        q = CounterMetricFamily("aliasd_dns_queries", "DNS answers sent, by rcode and qtype",
                                labels=["rcode", "qtype"])
        for (rcode, qtype), n in sorted(st.answers.items()):
            q.add_metric([rcode, qtype], n)
        yield q
        p = CounterMetricFamily("aliasd_dns_bad_queries",
                                "Malformed, refused or dropped DNS inputs, by kind",
                                labels=["kind"])
        for kind, n in sorted(st.problems.items()):
            p.add_metric([kind], n)
        yield p
        buckets, cumulative = [], 0
        for le, n in zip(LATENCY_BUCKETS, st.latency_buckets, strict=True):
            cumulative += n
            buckets.append((repr(le), cumulative))
        buckets.append(("+Inf", st.latency_count))
        yield HistogramMetricFamily(
            "aliasd_dns_answer_latency_seconds",
            f"Time from a UDP query's arrival to its answer being ready, sampled (one query "
            f"in {LATENCY_SAMPLE})", buckets=buckets, sum_value=st.latency_sum)
        fp = CounterMetricFamily("aliasd_dns_fast_path_hits",
                                 "Queries answered without the slow path (wire cache or "
                                 "negative template)")
        fp.add_metric([], st.fast_hits)
        yield fp
        tp = CounterMetricFamily("aliasd_dns_template_hits",
                                 "Of those, answers from an NXDOMAIN/NODATA/REFUSED/SERVFAIL "
                                 "template")
        tp.add_metric([], st.template_hits)
        yield tp
        yield GaugeMetricFamily("aliasd_dns_cache_entries", "Answers in the wire cache "
                                "(names that exist only)", value=self.cache_entries())


class CountsBy(Collector):
    """A counter by one label, kept as a plain ``Counter`` that its owner
    increments (a watch, the patcher) and read at scrape time."""

    def __init__(self, name: str, help_text: str, *, label: str | None = None) -> None:
        self.name = name
        self.help = help_text
        self.label = label
        self.counts: Counter[str] = Counter()

    def collect(self) -> Iterator[CounterMetricFamily]:
        if self.label is None:
            yield CounterMetricFamily(self.name, self.help, value=sum(self.counts.values()))
            return
        family = CounterMetricFamily(self.name, self.help, labels=[self.label])
        for value, n in sorted(self.counts.items()):
            family.add_metric([value], n)
        yield family


def watch_restarts() -> CountsBy:
    return CountsBy("aliasd_watch_restarts", "Watch reconnects by resource", label="resource")


def crd_probes() -> CountsBy:
    return CountsBy("aliasd_crd_probes", "Attempts to watch a followed CRD (ServiceEntry, "
                    "Alias; polled while absent)")


def alias_status_writes() -> CountsBy:
    return CountsBy("aliasd_alias_status_writes", "Alias status writes by the leader, by "
                    "result (written, refused = the API server did not accept it)",
                    label="result")


def auth_reviews() -> CountsBy:
    return CountsBy("aliasd_auth_reviews", "Decisions on Kubernetes tokens for the write "
                    "API, by review (token = a TokenReview made, access = a "
                    "SubjectAccessReview made; token_cached, access_cached = answered from "
                    "the cache)", label="review")


def event_results() -> CountsBy:
    return CountsBy("aliasd_events", "Kubernetes Events by result (created; counted = an "
                    "Event already recorded repeated, its count raised; left_out = over the "
                    "budget per object and reason or for the process; failed)", label="result")


def corefile_patches() -> CountsBy:
    return CountsBy("aliasd_corefile_patches", "Cluster DNS ConfigMap reconciles by result "
                    "(attempt, applied, unchanged, conflict = concurrent edit then retried, "
                    "error)", label="result")


class GcPauses(Collector):
    """Garbage-collector pauses by generation (count, total and longest
    seconds): a pause stops DNS answers like any other latency."""

    def __init__(self) -> None:
        self.count = [0, 0, 0]
        self.total = [0.0, 0.0, 0.0]
        self.longest = [0.0, 0.0, 0.0]
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        gen = info["generation"]
        pause = time.perf_counter() - self._started
        self.count[gen] += 1
        self.total[gen] += pause
        self.longest[gen] = max(self.longest[gen], pause)

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        n = CounterMetricFamily("aliasd_gc_pauses", "Garbage-collector passes by generation",
                                labels=["generation"])
        t = CounterMetricFamily("aliasd_gc_pause_seconds",
                                "Time spent in garbage-collector passes by generation",
                                labels=["generation"])
        m = GaugeMetricFamily("aliasd_gc_pause_max_seconds",
                              "The longest garbage-collector pass by generation",
                              labels=["generation"])
        for gen in range(3):
            n.add_metric([str(gen)], self.count[gen])
            t.add_metric([str(gen)], self.total[gen])
            m.add_metric([str(gen)], self.longest[gen])
        yield n
        yield t
        yield m


class LoopLag(Collector):
    """How late a callback due every ``interval`` seconds runs on the event
    loop. A probe lands at a random moment of whatever else the loop is doing,
    so this is what a DNS query arriving at that moment waits before it is
    even read: a histogram of the loop's stalls as queries see them (GC pauses
    included). Costs one timer callback per interval."""

    BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.counts = [0] * (len(self.BUCKETS) + 1)
        self.total = 0.0
        self.longest = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._due = 0.0

    def watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Probe ``loop`` (the one serving DNS) from now on."""
        if loop is self._loop:
            return
        self._loop = loop
        self._due = time.monotonic() + self.interval
        loop.call_later(self.interval, self._probe, loop)

    def _probe(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop is not self._loop or loop.is_closed():
            return
        # time.monotonic, not loop.time(): uvloop's is cached per iteration, in ms.
        now = time.monotonic()
        lag = max(0.0, now - self._due)
        i = 0
        while i < len(self.BUCKETS) and lag > self.BUCKETS[i]:
            i += 1
        self.counts[i] += 1
        self.total += lag
        self.longest = max(self.longest, lag)
        self._due = now + self.interval
        loop.call_later(self.interval, self._probe, loop)

    def collect(self) -> Iterator[HistogramMetricFamily | GaugeMetricFamily]:
        buckets, cumulative = [], 0
        for le, n in zip(self.BUCKETS, self.counts, strict=False):
            cumulative += n
            buckets.append((repr(le), cumulative))
        buckets.append(("+Inf", sum(self.counts)))
        yield HistogramMetricFamily(
            "aliasd_loop_lag_seconds",
            f"How late a probe due every {self.interval} s ran on the event loop (the wait "
            f"a DNS query arriving then would have had before being read)",
            buckets=buckets, sum_value=self.total)
        yield GaugeMetricFamily("aliasd_loop_lag_max_seconds", "The longest loop-lag probe",
                                value=self.longest)


_GC: GcPauses | None = None
_LAG = LoopLag()


def build_registry(collectors: Iterable[Collector]) -> CollectorRegistry:
    """The registry /metrics serves: the parts' collectors, the process-wide
    garbage-collector pauses, the loop lag of the running loop, and the
    Kubernetes API responses of every client this process made."""
    global _GC
    reg = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        reg.register(collector)
    if _GC is None:  # one per process: gc callbacks are process-wide
        _GC = GcPauses()
    reg.register(_GC)
    with contextlib.suppress(RuntimeError):  # no running loop: nothing to probe
        _LAG.watch(asyncio.get_running_loop())
    reg.register(_LAG)
    reg.register(RESPONSES)
    return reg
