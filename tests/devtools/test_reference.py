"""The generated references in docs/ match the code (regenerate them with
``PYTHONPATH=hack/devtools python -m aliasd_dev.reference metrics``)."""

from __future__ import annotations

from aliasd_dev.reference import METRICS_PAGE, metrics_markdown

REGENERATE = "PYTHONPATH=hack/devtools python -m aliasd_dev.reference metrics"


def test_metrics_reference_is_current() -> None:
    assert METRICS_PAGE.exists(), f"run: {REGENERATE}"
    assert METRICS_PAGE.read_text() == metrics_markdown(), (
        f"docs/reference/metrics.md is stale: run {REGENERATE}")


def test_every_metric_has_a_row() -> None:
    text = metrics_markdown()
    for name in ("aliasd_dns_queries_total", "aliasd_engine_runs_total", "aliasd_ready",
                 "aliasd_watch_restarts_total", "aliasd_loop_lag_seconds"):
        assert f"| `{name}` |" in text
