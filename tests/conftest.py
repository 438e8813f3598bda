"""Session fixtures: the real local control plane (etcd, kube-apiserver, CoreDNS)."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import AsyncIterator, Iterator

import pytest
from hypothesis import HealthCheck, settings
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.config import new_client_from_config

from aliasd_dev import ClusterError, LocalCluster, ensure_binaries

# Property tests draw the same examples on every run ("ci": the seed comes from
# each test's own code), with no example database carried between runs and no
# per-example deadline or speed check (a busy machine is not a bug).
# ALIASD_HYPOTHESIS_PROFILE=explore draws fresh examples to hunt for new bugs;
# a failure prints the @reproduce_failure blob that replays it.
settings.register_profile("ci", derandomize=True, database=None, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("explore", database=None, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("ALIASD_HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    """One control plane for the whole session; stopped even when tests fail."""
    c = LocalCluster(bin_dir=ensure_binaries())
    c.start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def namespace(cluster: LocalCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test (named after it)."""
    yield from _fresh_namespace(cluster, request.node.name)


@pytest.fixture
def other_namespace(cluster: LocalCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A second fresh namespace, for another team in the same test."""
    yield from _fresh_namespace(cluster, f"other-{request.node.name}")


def _fresh_namespace(cluster: LocalCluster, test: str) -> Iterator[str]:
    base = re.sub(r"[^a-z0-9-]+", "-", test.lower()).strip("-")[:40].strip("-")
    name = f"{base}-{secrets.token_hex(3)}"
    cluster.request("POST", "/api/v1/namespaces",
                    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    # There is no namespace controller to empty it, so delete what tests create
    # (their aliases must not leak into later tests), then mark it Terminating.
    for coll in (f"/api/v1/namespaces/{name}/services",
                 f"/apis/discovery.k8s.io/v1/namespaces/{name}/endpointslices",
                 f"/apis/networking.istio.io/v1/namespaces/{name}/serviceentries",
                 f"/apis/aliasd.io/v1alpha1/namespaces/{name}/aliases"):
        with contextlib.suppress(ClusterError):
            for item in cluster.request("GET", coll)["items"]:
                cluster.request("DELETE", f"{coll}/{item['metadata']['name']}")
    with contextlib.suppress(ClusterError):
        cluster.request("DELETE", f"/api/v1/namespaces/{name}")


@pytest.fixture
async def kube(cluster: LocalCluster) -> AsyncIterator[ApiClient]:
    """A kubernetes-asyncio client for the admin user."""
    client = await new_client_from_config(config_file=str(cluster.kubeconfig))
    try:
        yield client
    finally:
        await client.close()
