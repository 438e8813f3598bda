"""The local control plane is real: API server allocations, CRDs and CoreDNS."""

from __future__ import annotations

import pytest
from kubernetes_asyncio.client import (
    ApiClient,
    CoreV1Api,
    CustomObjectsApi,
    V1ObjectMeta,
    V1Service,
    V1ServicePort,
    V1ServiceSpec,
)

from aliasd_dev import LocalCluster
from tests.support.dnsclient import dig, dig_short
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster


async def test_service_ip_resolves_through_coredns(cluster: LocalCluster, kube: ApiClient,
                                                   namespace: str) -> None:
    v1 = CoreV1Api(kube)
    svc = await v1.create_namespaced_service(namespace, V1Service(
        metadata=V1ObjectMeta(name="fruits-api-service"),
        spec=V1ServiceSpec(ports=[V1ServicePort(name="http", port=80)]),
    ))
    ip = svc.spec.cluster_ip
    assert ip.startswith("10.")  # allocated by the API server from 10.96.0.0/12
    name = f"fruits-api-service.{namespace}.svc.cluster.local"
    out = wait_for(lambda: dig_short(cluster.coredns_addr, name),
                   what="CoreDNS to learn the Service")
    assert out == [ip]


@pytest.mark.parametrize("version", ["v1", "v1beta1", "v1alpha3"])
async def test_serviceentry_round_trips_in_every_version(
    cluster: LocalCluster, kube: ApiClient, namespace: str, version: str
) -> None:
    api = CustomObjectsApi(kube)
    body = {
        "apiVersion": f"networking.istio.io/{version}", "kind": "ServiceEntry",
        "metadata": {"name": "fruits"},
        "spec": {"hosts": ["my-fruits.internal"], "location": "MESH_INTERNAL",
                 "resolution": "DNS",
                 "endpoints": [{"address": "fruits-api-service.micro-shake-factory.svc"}]},
    }
    await api.create_namespaced_custom_object("networking.istio.io", version, namespace,
                                              "serviceentries", body)
    for read_version in ("v1", "v1beta1", "v1alpha3"):
        got = await api.get_namespaced_custom_object("networking.istio.io", read_version,
                                                     namespace, "serviceentries", "fruits")
        assert got["apiVersion"] == f"networking.istio.io/{read_version}"
        assert got["spec"]["hosts"] == ["my-fruits.internal"]
        endpoint = got["spec"]["endpoints"][0]["address"]
        assert endpoint == "fruits-api-service.micro-shake-factory.svc"
    status = {"addresses": [{"value": "240.240.0.7"}]}
    got["status"] = status
    got["apiVersion"] = f"networking.istio.io/{version}"
    patched = await api.replace_namespaced_custom_object_status(
        "networking.istio.io", version, namespace, "serviceentries", "fruits", got)
    assert patched["status"] == status


def test_configmap_edit_reaches_running_coredns(cluster: LocalCluster) -> None:
    path = "/api/v1/namespaces/kube-system/configmaps/coredns"
    cm = cluster.request("GET", path)
    original = cm["data"]["Corefile"]
    block = (f"probe.test:{cluster.dns_port} {{\n    bind 127.0.0.1\n    hosts {{\n"
             "        192.0.2.53 hello.probe.test\n    }\n}\n")
    cm["data"]["Corefile"] = original + block
    cluster.request("PUT", path, cm)
    try:
        out = wait_for(lambda: dig_short(cluster.coredns_addr, "hello.probe.test"),
                       timeout=30, what="CoreDNS to reload the new block")
        assert out == ["192.0.2.53"]
        assert cluster.corefile.read_text() == original + block
    finally:
        cm = cluster.request("GET", path)
        cm["data"]["Corefile"] = original
        cluster.request("PUT", path, cm)
    wait_for(lambda: "REFUSED" in dig(cluster.coredns_addr, "hello.probe.test")
             or "SERVFAIL" in dig(cluster.coredns_addr, "hello.probe.test"),
             timeout=30, what="the block to go away")
