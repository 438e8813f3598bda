"""Prometheus metrics, collected at scrape time from the app's plain counters
(the query path increments ints, never a locked metric)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from aliasd.dns.answer import LATENCY_BUCKETS, LATENCY_SAMPLE

if TYPE_CHECKING:
    from aliasd.app import App


class AppCollector(Collector):
    def __init__(self, app: App) -> None:
        self.app = app

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily
                                  | HistogramMetricFamily]:
        app = self.app
        q = CounterMetricFamily("aliasd_dns_queries", "DNS answers sent, by rcode and qtype",
                                labels=["rcode", "qtype"])
        for (rcode, qtype), n in sorted(app.stats.answers.items()):
            q.add_metric([rcode, qtype], n)
        yield q
        p = CounterMetricFamily("aliasd_dns_bad_queries",
                                "Malformed, refused or dropped DNS inputs, by kind",
                                labels=["kind"])
        for kind, n in sorted(app.stats.problems.items()):
            p.add_metric([kind], n)
        yield p
        st = app.stats
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
        fp.add_metric([], app.stats.fast_hits)
        yield fp
        tp = CounterMetricFamily("aliasd_dns_template_hits",
                                 "Of those, answers from an NXDOMAIN/NODATA/REFUSED/SERVFAIL "
                                 "template")
        tp.add_metric([], app.stats.template_hits)
        yield tp
        yield GaugeMetricFamily("aliasd_dns_cache_entries", "Answers in the wire cache "
                                "(names that exist only)", value=app.dns.answerer.cache_size)
        res = app.result
        yield GaugeMetricFamily("aliasd_aliases", "Aliases served", value=len(res.entries))
        yield GaugeMetricFamily("aliasd_alias_conflicts", "Claims that lost a name conflict",
                                value=len(res.conflicts))
        yield GaugeMetricFamily("aliasd_invalid_aliases", "Claims rejected as invalid",
                                value=len(res.invalid))
        yield GaugeMetricFamily("aliasd_snapshot_serial", "SOA serial of the served snapshot",
                                value=res.snapshot.serial)
        yield GaugeMetricFamily("aliasd_ready", "1 when every source has synced",
                                value=1 if app.ready else 0)
        yield GaugeMetricFamily("aliasd_degraded", "1 while answering from the state file "
                                "because the sources have not synced",
                                value=1 if app.degraded else 0)
        yield GaugeMetricFamily("aliasd_overrides", "HTTP overrides in effect",
                                value=len(app.overrides.items) if app.overrides else 0)
        synced = GaugeMetricFamily("aliasd_source_synced", "1 when the source has synced",
                                   labels=["source"])
        for s in app.sources:
            synced.add_metric([s.name], 1 if s.synced else 0)
        yield synced
        restarts = CounterMetricFamily("aliasd_watch_restarts", "Watch reconnects by resource",
                                       labels=["resource"])
        for name, n in sorted(app.watch_restarts.items()):
            restarts.add_metric([name], n)
        yield restarts
        patches = CounterMetricFamily(
            "aliasd_corefile_patches", "Cluster DNS ConfigMap reconciles by result (attempt, "
            "applied, unchanged, conflict = concurrent edit then retried, error)",
            labels=["result"])
        for result, n in sorted(app.patch_results.items()):
            patches.add_metric([result], n)
        yield patches


def build_registry(app: App) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(AppCollector(app))
    return reg
