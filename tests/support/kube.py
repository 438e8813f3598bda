"""Objects in the local control plane's API server: Services, EndpointSlices,
and the Events aliasd reports on them."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from typing import Any

from aliasd_dev import ClusterError, LocalCluster


def service(cluster: LocalCluster, ns: str, name: str, *, alias: str | None = None,
            ttl: str | None = None, headless: bool = False, **spec: Any) -> dict[str, Any]:
    ann = {}
    if alias is not None:
        ann["aliasd.io/alias"] = alias
    if ttl is not None:
        ann["aliasd.io/ttl"] = ttl
    body_spec: dict[str, Any] = {"ports": [{"name": "http", "port": 80}], **spec}
    if headless:
        body_spec["clusterIP"] = "None"
    obj: dict[str, Any] = cluster.request("POST", f"/api/v1/namespaces/{ns}/services", {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "annotations": ann}, "spec": body_spec})
    return obj


def events(cluster: LocalCluster, ns: str, name: str) -> list[tuple[str, str]]:
    """(reason, message) of the Events aliasd recorded on the object ``name``
    (the API server records its own too: a loaded one repairs a Service's
    cluster IP allocation with a ClusterIPNotAllocated Event)."""
    items = cluster.request(
        "GET", f"/api/v1/namespaces/{ns}/events?fieldSelector=involvedObject.name%3D{name}")
    return [(e["reason"], e["message"]) for e in items["items"]
            if e.get("reportingComponent") == "aliasd"]


def endpoint_slice(cluster: LocalCluster, ns: str, service_name: str,
                   ready: dict[str, bool | None]) -> dict[str, Any]:
    eps = []
    for ip, r in ready.items():
        ep: dict[str, Any] = {"addresses": [ip]}
        if r is not None:
            ep["conditions"] = {"ready": r}
        eps.append(ep)
    body: dict[str, Any] = {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": f"{service_name}-abc",
                     "labels": {"kubernetes.io/service-name": service_name}},
        "addressType": "IPv4", "endpoints": eps,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}
    path = f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices"
    try:
        existing = cluster.request("GET", f"{path}/{service_name}-abc")
        body["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
        out: dict[str, Any] = cluster.request("PUT", f"{path}/{service_name}-abc", body)
    except ClusterError:
        out = cluster.request("POST", path, body)
    return out


@contextlib.contextmanager
def watches_expired(cluster: LocalCluster, pid: int, namespace: str) -> Iterator[None]:
    """aliasd (process ``pid``) frozen while the revision its watches hold is
    compacted away, so on resume every watch gets 410 Gone and relists. The
    body runs frozen, with the open watch streams already dropped (no event
    reaches aliasd's socket buffers): what it changes only a relist can see.
    Afterwards the revision moves on (ConfigMaps in ``namespace``), etcd is
    compacted, and the API server restarted so its watch cache starts after
    the compaction."""
    os.kill(pid, signal.SIGSTOP)
    try:
        cluster.stop_apiserver()
        cluster.start_apiserver()
        yield
        for i in range(5):
            cluster.request("POST", f"/api/v1/namespaces/{namespace}/configmaps",
                            {"metadata": {"name": f"churn-{i}"}})
        cluster.compact_etcd()
        cluster.stop_apiserver()
        cluster.start_apiserver()
    finally:
        os.kill(pid, signal.SIGCONT)
