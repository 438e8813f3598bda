"""The CoreDNS tests share the session's CoreDNS ConfigMap, and an upstream
"datacenter DNS" behind it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from aliasd_dev import ClusterError, LocalCluster
from tests.support.coredns import CM, DATACENTER_IP
from tests.support.process import AliasdProcess, run_aliasd


@pytest.fixture
def coredns(cluster: LocalCluster) -> Iterator[LocalCluster]:
    """The shared CoreDNS ConfigMap, put back exactly as it was afterwards."""
    yield cluster
    cluster.request("PUT", f"{CM}/coredns", {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "coredns", "namespace": "kube-system"},
        "data": {"Corefile": cluster.initial_corefile}})


@pytest.fixture
def lease_ns(cluster: LocalCluster) -> str:
    """aliasd-system, where the Lease tests put their Leases."""
    with contextlib.suppress(ClusterError):  # exists after the first test
        cluster.request("POST", "/api/v1/namespaces", {
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "aliasd-system"}})
    return "aliasd-system"


@pytest.fixture
def datacenter(cluster: LocalCluster, tmp_path: Path) -> Iterator[AliasdProcess]:
    """The "datacenter DNS": what CoreDNS's root block forwards to (its upstream)
    serves legacy-lb.example.com. It is an aliasd too, on the upstream port."""
    d = tmp_path / "datacenter"
    d.mkdir()
    (d / "aliases.yaml").write_text(yaml.safe_dump({"aliases": {
        "legacy-lb.example.com": {"addresses": [DATACENTER_IP]}}}))
    with run_aliasd(["--zone", "example.com", "--aliases-file", str(d / "aliases.yaml")],
                    tmp=d, dns_port=cluster.upstream_port) as p:
        yield p
