"""The session CoreDNS's ConfigMaps, and aliasd's flags to wire itself into it."""

from __future__ import annotations

from aliasd.coredns import corefile
from aliasd_dev import LocalCluster

CM = "/api/v1/namespaces/kube-system/configmaps"
DATACENTER_IP = "192.0.2.10"
"""What legacy-lb.example.com resolves to upstream of CoreDNS (the ``datacenter``
fixture of tests/coredns)."""


def corefile_now(cluster: LocalCluster) -> str:
    text: str = cluster.request("GET", f"{CM}/coredns")["data"]["Corefile"]
    return text


def set_corefile(cluster: LocalCluster, text: str) -> None:
    cluster.request("PATCH", f"{CM}/coredns", {"data": {"Corefile": text}},
                    content_type="application/merge-patch+json")


def wired(cluster: LocalCluster, dns_port: int, *extra: str) -> list[str]:
    return ["--kubeconfig", str(cluster.kubeconfig), "--zone", "internal",
            "--coredns-mode", "corefile", "--forward-to", f"127.0.0.1:{dns_port}",
            "--leader-election", "off", *extra]


def managed_zones(text: str) -> list[str]:
    return [r.zone for r in corefile.managed_regions(text)]
