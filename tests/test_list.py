"""``aliasd list``, /v1/aliases and /metrics show the same state, against the
real API server; /metrics parses with prometheus-client's own parser."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from aliasd_dev import LocalCluster
from tests.support import ROOT
from tests.support.dnsclient import a_records, query
from tests.support.kube import service
from tests.support.process import run_aliasd
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster


def aliasd_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "aliasd", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=60, check=False)


def test_list_and_http_and_metrics_agree(cluster: LocalCluster, namespace: str,
                                         tmp_path: Path) -> None:
    kc = str(cluster.kubeconfig)
    first = service(cluster, namespace, "fruits-api-service", alias="my-fruits.internal")
    service(cluster, namespace, "fruits-v2", alias="my-fruits.internal")  # loses: younger
    service(cluster, namespace, "legacy", alias="legacy.internal bad_label",
                  type="ExternalName", externalName="db.example.com")
    ip = first["spec"]["clusterIP"]
    with run_aliasd(["--kubeconfig", kc, "--namespaces", namespace], tmp=tmp_path) as p:
        wait_for(lambda: a_records(p, "my-fruits.internal.") == [ip], what="the alias")
        for _ in range(20):  # some traffic for the counters and the latency histogram
            query(p.dns, "my-fruits.internal.", "A")
        _, doc = p.http("/v1/aliases")
        from_server = aliasd_cli("list", "-o", "json", "--server",
                                 f"http://127.0.0.1:{p.http_port}")
        assert from_server.returncode == 0, from_server.stderr
        assert json.loads(from_server.stdout) == doc
        _, metrics = p.http("/metrics")
    ref = f"Service {namespace}/fruits-api-service"
    assert [(a["name"], a["addresses"], a["cname"], a["owner"], a["conflicts"])
            for a in doc["aliases"]] == [
        ("legacy.internal.", [], "db.example.com", f"Service {namespace}/legacy", []),
        ("my-fruits.internal.", [ip], None, ref, [f"Service {namespace}/fruits-v2"])]
    # Computed from the cluster (no aliasd running): the same aliases, conflicts, invalid.
    computed = aliasd_cli("list", "-o", "json", "--kubeconfig", kc, "--namespaces", namespace)
    assert computed.returncode == 0, computed.stderr
    cdoc = json.loads(computed.stdout)
    assert {k: cdoc[k] for k in ("aliases", "conflicts", "invalid")} == {
        k: doc[k] for k in ("aliases", "conflicts", "invalid")}
    as_yaml = aliasd_cli("list", "-o", "yaml", "--kubeconfig", kc, "--namespaces", namespace)
    assert yaml.safe_load(as_yaml.stdout)["aliases"] == doc["aliases"]
    table = aliasd_cli("list", "--kubeconfig", kc, "--namespaces", namespace).stdout
    lines = table.splitlines()
    assert lines[0].split() == ["NAME", "TARGETS", "OWNER", "TTL", "CONFLICTS"]
    assert lines[1].split() == ["legacy.internal.", "CNAME", "db.example.com", "Service",
                                f"{namespace}/legacy", "30", "-"]
    assert lines[2].split() == ["my-fruits.internal.", ip, "Service",
                                f"{namespace}/fruits-api-service", "30", "Service",
                                f"{namespace}/fruits-v2"]
    assert lines[3].startswith(f"# invalid: bad_label (Service {namespace}/legacy): ")
    wide = aliasd_cli("list", "-o", "wide", "--kubeconfig", kc, "--namespaces", namespace)
    assert wide.stdout.splitlines()[0].split()[-1] == "PORTS"
    assert wide.stdout.splitlines()[2].split()[-1] == "http/TCP:80"

    families = {f.name: f for f in text_string_to_metric_families(metrics)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in families.values() for s in f.samples}
    assert samples[("aliasd_aliases", ())] == 2
    assert samples[("aliasd_alias_conflicts", ())] == 1
    assert samples[("aliasd_invalid_aliases", ())] == 1
    assert samples[("aliasd_snapshot_serial", ())] == doc["serial"]
    assert samples[("aliasd_dns_queries_total", (("qtype", "A"), ("rcode", "NOERROR")))] >= 21
    lat = families["aliasd_dns_answer_latency_seconds"]
    assert lat.type == "histogram"
    count = samples[("aliasd_dns_answer_latency_seconds_count", ())]
    assert count >= 1  # one query in 16 is timed; at least 21 were asked
    assert samples[("aliasd_dns_answer_latency_seconds_bucket", (("le", "+Inf"),))] == count
    assert samples[("aliasd_dns_answer_latency_seconds_sum", ())] > 0
    assert samples[("aliasd_ready", ())] == 1


def test_list_errors_are_one_line(tmp_path: Path) -> None:
    r = aliasd_cli("list", "--server", "http://127.0.0.1:1")
    assert r.returncode == 1 and r.stderr.startswith(
        "aliasd: error: cannot read http://127.0.0.1:1/v1/aliases: ")
    assert r.stderr.count("\n") == 1
    r = aliasd_cli("list", "--kubeconfig", str(tmp_path / "nope"))
    assert r.returncode == 1
    assert r.stderr == f"aliasd: error: cannot load Kubernetes config from {tmp_path}/nope: " \
                       "no such file\n"
    r = aliasd_cli("list", "-o", "xml")
    assert r.returncode == 2 and "invalid choice: 'xml'" in r.stderr
