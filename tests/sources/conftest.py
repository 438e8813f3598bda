"""aliasd watching the session's API server, for the source tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from aliasd_dev import ClusterError, LocalCluster
from tests.support.process import AliasdProcess, run_aliasd


@pytest.fixture
def aliasd(cluster: LocalCluster, tmp_path: Path) -> Iterator[AliasdProcess]:
    with run_aliasd(["--kubeconfig", str(cluster.kubeconfig), "--zone", "internal"],
                    tmp=tmp_path) as p:
        yield p


@pytest.fixture
def no_serviceentry_crd(cluster: LocalCluster) -> Iterator[None]:
    """The session's cluster without the ServiceEntry CRD; installed again after
    the test unless the test already did."""
    cluster.uninstall_serviceentry_crd()
    try:
        yield
    finally:
        try:
            cluster.request("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                            "serviceentries.networking.istio.io")
        except ClusterError:
            cluster.install_serviceentry_crd()
