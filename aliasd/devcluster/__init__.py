"""Local control plane for tests and ``aliasd demo`` (see hack/local-cluster/)."""

from aliasd.devcluster.cluster import (
    ClusterError,
    LocalCluster,
    ensure_binaries,
    free_port,
    free_udp_tcp_port,
)

__all__ = ["ClusterError", "LocalCluster", "ensure_binaries", "free_port", "free_udp_tcp_port"]
