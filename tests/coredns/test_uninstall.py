"""``aliasd coredns remove --stop-deployment`` against the real API server: the
removal is planned before anything is stopped, the Deployment is scaled back
when the removal cannot finish, and a missing Deployment is nothing to stop.
(tests/chart/ runs the whole path as the chart's uninstall hook.)"""

from __future__ import annotations

import datetime as dt

import pytest
from kubernetes_asyncio.client import ApiClient

from aliasd.coredns import corefile, uninstall
from aliasd.coredns.patcher import Change, PatcherConfig
from aliasd.coredns.plan import Forward
from aliasd.coredns.uninstall import Stop, stop_and_remove
from aliasd.coredns.wiring import wire
from aliasd.model import ApplyError
from aliasd_dev import LocalCluster
from tests.support.coredns import CM

pytestmark = pytest.mark.cluster

CONFIG = PatcherConfig(zones=("internal",), mode="corefile",
                       forward_to=Forward("10.96.0.53", 53))


def deployment(cluster: LocalCluster, namespace: str, *, replicas: int) -> None:
    labels = {"app.kubernetes.io/name": "aliasd"}
    cluster.apply({"apiVersion": "apps/v1", "kind": "Deployment",
                   "metadata": {"name": "aliasd", "namespace": namespace},
                   "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                            "template": {"metadata": {"labels": labels}, "spec": {
                                "containers": [{"name": "aliasd", "image": "aliasd"}]}}}})


def replicas(cluster: LocalCluster, namespace: str) -> int:
    scale = cluster.request("GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/aliasd"
                                   "/scale")
    value: int = scale["spec"].get("replicas", 0)
    return value


def held_lease(cluster: LocalCluster, namespace: str) -> None:
    """A Lease a live replica holds and will not let go of for an hour."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    cluster.apply({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                   "metadata": {"name": "aliasd", "namespace": namespace},
                   "spec": {"holderIdentity": "aliasd-7d9f-x1_1", "leaseDurationSeconds": 3600,
                            "renewTime": now, "acquireTime": now}})


async def removal(api: ApiClient, stop: Stop, said: list[str]) -> list[Change]:
    return [c async for c in stop_and_remove(api, CONFIG, stop=stop, say=said.append)]


async def test_a_replica_that_never_stops_gets_its_replicas_back(
        kube: ApiClient, coredns: LocalCluster, namespace: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    async for _ in wire(kube, CONFIG, action="apply"):
        pass
    wired = coredns.request("GET", f"{CM}/coredns")["data"]["Corefile"]
    deployment(coredns, namespace, replicas=3)
    held_lease(coredns, namespace)
    monkeypatch.setattr(uninstall, "STOP_TIMEOUT", 1.5)
    said: list[str] = []
    with pytest.raises(ApplyError) as e:
        await removal(kube, Stop(namespace, "aliasd", lease=(namespace, "aliasd")), said)
    assert str(e.value) == (
        f"Lease {namespace}/aliasd still held after 2 s with Deployment {namespace}/aliasd "
        f"scaled to 0; scaled Deployment {namespace}/aliasd back to 3 replicas, so aliasd "
        f"serves with its blocks in place")
    assert said == [f"scaled Deployment {namespace}/aliasd from 3 to 0 replicas",
                    f"waiting for aliasd-7d9f-x1_1 to stop and release Lease {namespace}/aliasd"]
    assert replicas(coredns, namespace) == 3
    assert coredns.request("GET", f"{CM}/coredns")["data"]["Corefile"] == wired


async def test_nothing_is_stopped_when_the_removal_cannot_be_planned(
        kube: ApiClient, cluster: LocalCluster, namespace: str) -> None:
    deployment(cluster, namespace, replicas=2)
    config = PatcherConfig(zones=("internal",), mode="corefile",
                           coredns_configmap="kube-system/no-such-coredns")
    said: list[str] = []
    with pytest.raises(ApplyError) as e:
        stop = Stop(namespace, "aliasd", lease=(namespace, "aliasd"))
        async for _ in stop_and_remove(kube, config, stop=stop, say=said.append):
            pass
    assert str(e.value) == "ConfigMap kube-system/no-such-coredns not found; nothing was changed"
    assert said == []
    assert replicas(cluster, namespace) == 2


async def test_no_deployment_is_nothing_to_stop(kube: ApiClient, coredns: LocalCluster,
                                                namespace: str) -> None:
    async for _ in wire(kube, CONFIG, action="apply"):
        pass
    said: list[str] = []
    changes = await removal(kube, Stop(namespace, "aliasd", lease=(namespace, "aliasd")), said)
    assert [c.changed for c in changes] == [True]
    assert said == [f"Deployment {namespace}/aliasd not found: nothing to stop"]
    text = coredns.request("GET", f"{CM}/coredns")["data"]["Corefile"]
    assert text == coredns.initial_corefile
    assert corefile.managed_regions(text) == []
