"""The refusals check the manifest tests use reads structured samples only."""

from __future__ import annotations

from tests.support.process import api_refusals


def test_the_refusals_check_reads_no_free_text() -> None:
    """A count, a timestamp or a label that happens to read 403 is not a
    refusal; only a response counted with code 403 (or 401) is."""
    log_line = "2026-12-03 13:11:03,403 WARNING aliasd.sources.kube: list services: HTTP 500"
    page = (
        "# HELP aliasd_kube_api_responses_total Kubernetes API server responses\n"
        "# TYPE aliasd_kube_api_responses_total counter\n"
        'aliasd_kube_api_responses_total{code="200",method="GET"} 403.0\n'
        'aliasd_kube_api_responses_total{code="500",method="GET"} 1.0\n'
        "# HELP aliasd_dns_queries_total DNS answers sent\n"
        "# TYPE aliasd_dns_queries_total counter\n"
        f'aliasd_dns_queries_total{{qtype="A",rcode="NOERROR"}} 403.0\n# {log_line}\n')
    assert api_refusals(page) == {}
    refused = page + 'aliasd_kube_api_responses_total{code="403",method="PATCH"} 2.0\n'
    assert api_refusals(refused) == {("PATCH", "403"): 2.0}
