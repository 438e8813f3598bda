"""The CoreDNS tests share the session's CoreDNS ConfigMap."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from aliasd_dev import ClusterError, LocalCluster

CM = "/api/v1/namespaces/kube-system/configmaps"


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
