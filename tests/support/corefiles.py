"""Corefiles the tests share: kubeadm's (as the local control plane writes
it, on port 53), a short one with a user's server block (``KUBE_DNS_STYLE``),
node-local-dns's, and those of managed distributions, as they ship and
adapted to loopback.

k3s: ``manifests/coredns.yaml`` in k3s-io/k3s (CoreDNS mounts the optional
``coredns-custom`` ConfigMap at /etc/coredns/custom). AKS: ``kubectl -n
kube-system get cm coredns`` on an AKS cluster (the Azure docs "Customize
CoreDNS with Azure Kubernetes Service"); AKS creates ``coredns-custom`` empty
and mounts it at /etc/coredns/custom, and imports it relative to the Corefile.
"""

from __future__ import annotations

from pathlib import Path

from aliasd_dev.corefile import CorefilePorts, kubeadm_corefile

KUBEADM = kubeadm_corefile(ports=CorefilePorts(53, 8080, 8181, 9153, 5300),
                           kubeconfig="/etc/kubeconfig")
KUBE_DNS_STYLE = """.:53 {
    errors
    health
    kubernetes cluster.local in-addr.arpa ip6.arpa {
      pods insecure
    }
    forward . /etc/resolv.conf
    cache 30
}
example.org:53 {
    forward . 192.0.2.1
}
"""
NODE_LOCAL = """cluster.local:53 {
    errors
    cache {
        success 9984 30
        denial 9984 5
    }
    bind 169.254.20.10 10.96.0.10
    forward . __PILLAR__CLUSTER__DNS__ {
        force_tcp
    }
}
.:53 {
    errors
    cache 30
    reload
    bind 169.254.20.10 10.96.0.10
    forward . __PILLAR__UPSTREAM__SERVERS__
}
"""

K3S = """.:53 {
    errors
    health
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
      pods insecure
      fallthrough in-addr.arpa ip6.arpa
    }
    hosts /etc/coredns/NodeHosts {
      ttl 60
      reload 15s
      fallthrough
    }
    prometheus :9153
    forward . /etc/resolv.conf
    cache 30
    loop
    reload
    loadbalance
    import /etc/coredns/custom/*.override
}
import /etc/coredns/custom/*.server
"""

AKS = """.:53 {
    errors
    ready
    health {
      lameduck 5s
    }
    kubernetes cluster.local in-addr.arpa ip6.arpa {
      pods insecure
      fallthrough in-addr.arpa ip6.arpa
      ttl 30
    }
    prometheus :9153
    forward . /etc/resolv.conf
    cache 30
    loop
    reload
    loadbalance
    import custom/*.override
}
import custom/*.server
"""

SHAPES = {"k3s": K3S, "aks": AKS}


def on_loopback(text: str, *, ports: CorefilePorts, kubeconfig: str, directory: Path) -> str:
    """The same Corefile where only loopback needs a change (like
    ``kubeadm_corefile``): bind and ports, the kubernetes plugin's kubeconfig, a
    local upstream, a short reload interval, and /etc/coredns -> ``directory``
    (where the devcluster materialises the ConfigMaps)."""
    out = text.replace(".:53 {\n", f".:{ports.dns} {{\n    bind 127.0.0.1\n", 1)
    out = out.replace("    health\n", f"    health 127.0.0.1:{ports.health}\n")
    out = out.replace("    health {\n", f"    health 127.0.0.1:{ports.health} {{\n")
    out = out.replace("    ready\n", f"    ready 127.0.0.1:{ports.ready}\n")
    out = out.replace("      pods insecure\n",
                      f"      kubeconfig {kubeconfig}\n      pods insecure\n")
    out = out.replace("prometheus :9153", f"prometheus 127.0.0.1:{ports.metrics}")
    out = out.replace("forward . /etc/resolv.conf", f"forward . 127.0.0.1:{ports.upstream}")
    out = out.replace("    reload\n", "    reload 2s 1s\n")
    return out.replace("/etc/coredns/", f"{directory}/")
