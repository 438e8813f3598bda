"""aliasd: stable DNS names for Kubernetes services."""
