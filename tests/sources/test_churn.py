"""Cost in proportion to the change, through the real API server and a real
DNS client: events that
change no answer produce no snapshot (the SOA serial stays), and a quiet
cluster without the ServiceEntry CRD produces no engine runs at all."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aliasd_dev import LocalCluster
from tests.support.dnsclient import a_records, query
from tests.support.kube import service
from tests.support.process import AliasdProcess, metric, run_aliasd
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster

SLICES = "/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices"
CONTROLLER = {"endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}


def serial(p: AliasdProcess) -> int:
    soa = query(p.dns, "internal.", "SOA").answer[0][0]
    return int(soa.serial)


def put_slice(cluster: LocalCluster, ns: str, name: str, service_name: str, ip: str, *,
              labels: dict[str, str] | None = None, rv: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": service_name,
                                              **(labels or {})}},
        "addressType": "IPv4", "endpoints": [{"addresses": [ip]}]}
    path = SLICES.format(ns=ns)
    if rv is None:
        out: dict[str, Any] = cluster.request("POST", path, body)
    else:
        body["metadata"]["resourceVersion"] = rv
        out = cluster.request("PUT", f"{path}/{name}", body)
    return out


def test_unrelated_slice_updates_change_nothing(cluster: LocalCluster, aliasd: AliasdProcess,
                                                namespace: str) -> None:
    aliased = service(cluster, namespace, "shown", alias="churn-shown.internal")
    service(cluster, namespace, "headed", alias="churn-headed.internal", headless=True)
    put_slice(cluster, namespace, "headed-1", "headed", "10.9.0.1")
    wait_for(lambda: a_records(aliasd, "churn-headed.internal.") == ["10.9.0.1"],
             what="the headless alias")
    assert a_records(aliasd, "churn-shown.internal.") == [aliased["spec"]["clusterIP"]]
    # Slices of Services without an alias: plain ClusterIP ones the way the
    # EndpointSlice controller labels them (not even sent to aliasd), hand-made
    # ones of a plain and of an unaliased headless Service (sent, change nothing).
    service(cluster, namespace, "plain")
    service(cluster, namespace, "dark", headless=True)
    slices = [put_slice(cluster, namespace, "plain-c", "plain", "10.8.0.1", labels=CONTROLLER),
              put_slice(cluster, namespace, "plain-h", "plain", "10.8.0.2"),
              put_slice(cluster, namespace, "dark-h", "dark", "10.8.0.3"),
              put_slice(cluster, namespace, "shown-h", "shown", "10.8.0.4")]
    wait_for(lambda: metric(aliasd, "aliasd_engine_runs_total") > 0, what="a first engine run")
    serial0 = serial(aliasd)
    snapshots0 = metric(aliasd, "aliasd_snapshots_total")
    for i in range(1000):
        s = slices[i % len(slices)]
        meta = s["metadata"]
        svc = meta["labels"]["kubernetes.io/service-name"]
        s = put_slice(cluster, namespace, meta["name"], svc, f"10.8.{i // 250}.{i % 250 + 1}",
                      labels={k: v for k, v in meta["labels"].items() if k in CONTROLLER},
                      rv=meta["resourceVersion"])
        slices[i % len(slices)] = s
        if i % 100 == 0:
            assert serial(aliasd) == serial0
    # A sentinel in the same watch stream as the hand-made slices: once it is
    # answered, every update before it has been processed.
    put_slice(cluster, namespace, "headed-2", "headed", "10.9.0.2")
    wait_for(lambda: a_records(aliasd, "churn-headed.internal.") == ["10.9.0.1", "10.9.0.2"],
             what="the sentinel")
    assert metric(aliasd, "aliasd_snapshots_total") == snapshots0 + 1
    assert serial(aliasd) > serial0
    assert a_records(aliasd, "churn-shown.internal.") == [aliased["spec"]["clusterIP"]]
    # The relist checks (from scratch, off the loop) never disagreed with the engine.
    assert metric(aliasd, "aliasd_check_failures_total") == 0


def test_quiet_cluster_without_the_crd_does_not_rebuild(
        cluster: LocalCluster, tmp_path: Path, namespace: str,
        no_serviceentry_crd: None) -> None:
    with run_aliasd(["--kubeconfig", str(cluster.kubeconfig), "--zone", "internal"],
                    tmp=tmp_path) as p:
        wait_for(lambda: p.http("/readyz")[0] == 200, what="ready")
        probes = metric(p, "aliasd_crd_probes_total")
        runs = metric(p, "aliasd_engine_runs_total")
        serial0 = serial(p)
        # Two more polls of the absent CRD (every 5 s): nothing to rebuild.
        wait_for(lambda: metric(p, "aliasd_crd_probes_total") >= probes + 2, timeout=30,
                 what="two polls of the CRD")
        assert metric(p, "aliasd_engine_runs_total") == runs
        assert serial(p) == serial0
        assert p.logs().count("ServiceEntry CRD (networking.istio.io) not installed") == 1
