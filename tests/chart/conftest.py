"""The chart tests share the session's CoreDNS ConfigMap."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aliasd_dev import LocalCluster


@pytest.fixture
def coredns(cluster: LocalCluster) -> Iterator[LocalCluster]:
    """The shared CoreDNS ConfigMap, put back as it was even when a test fails
    half way (the hook and lifecycle tests wire it and expect the hook to unwire
    it)."""
    yield cluster
    cluster.request("PUT", "/api/v1/namespaces/kube-system/configmaps/coredns", {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "coredns", "namespace": "kube-system"},
        "data": {"Corefile": cluster.initial_corefile}})
