"""Repository tools, not shipped in the aliasd package: the local control plane
(etcd, kube-apiserver and CoreDNS on loopback, built by hack/local-cluster/) that
the tests, the benchmarks and the demo (``hack/demo.sh``) run against, and the
generator of the reference pages (``python -m aliasd_dev.reference``)."""

from aliasd_dev.cluster import (
    ClusterError,
    LocalCluster,
    ensure_binaries,
    free_port,
    free_udp_tcp_port,
)

__all__ = ["ClusterError", "LocalCluster", "ensure_binaries", "free_port", "free_udp_tcp_port"]
