"""Alias objects (aliasd.io/v1alpha1) in the local control plane's API server:
the shipped CRD, creating one, and reading its status."""

from __future__ import annotations

from typing import Any

from aliasd_dev import LocalCluster
from tests.support import ROOT

CRD = ROOT / "manifests" / "base" / "crd-alias.yaml"


def alias_path(ns: str, name: str = "") -> str:
    return f"/apis/aliasd.io/v1alpha1/namespaces/{ns}/aliases" + (f"/{name}" if name else "")


def create_alias(cluster: LocalCluster, ns: str, name: str, spec: dict[str, Any]
                 ) -> dict[str, Any]:
    obj: dict[str, Any] = cluster.request("POST", alias_path(ns), {
        "apiVersion": "aliasd.io/v1alpha1", "kind": "Alias",
        "metadata": {"name": name}, "spec": spec})
    return obj


def alias_status(cluster: LocalCluster, ns: str, name: str) -> dict[str, Any]:
    status: dict[str, Any] = cluster.request("GET", alias_path(ns, name)).get("status") or {}
    return status


def condition(cluster: LocalCluster, ns: str, name: str, type_: str) -> tuple[str, str] | None:
    """(status, reason) of one condition (None: not set)."""
    for c in alias_status(cluster, ns, name).get("conditions") or ():
        if c["type"] == type_:
            return str(c["status"]), str(c["reason"])
    return None
