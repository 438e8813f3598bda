"""The kubeadm default Corefile, adapted only where loopback needs it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CorefilePorts:
    dns: int
    health: int
    ready: int
    metrics: int
    upstream: int


def kubeadm_corefile(*, ports: CorefilePorts, kubeconfig: str) -> str:
    """kubeadm's Corefile with loopback binds, local ports, an explicit kubeconfig
    for the kubernetes plugin and a local upstream instead of /etc/resolv.conf."""
    return f""".:{ports.dns} {{
    bind 127.0.0.1
    errors
    health 127.0.0.1:{ports.health} {{
       lameduck 5s
    }}
    ready 127.0.0.1:{ports.ready}
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
       kubeconfig {kubeconfig}
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }}
    prometheus 127.0.0.1:{ports.metrics}
    forward . 127.0.0.1:{ports.upstream} {{
       max_concurrent 1000
    }}
    cache 30 {{
       disable success cluster.local
       disable denial cluster.local
    }}
    loop
    reload 2s 1s
    loadbalance
}}
"""
