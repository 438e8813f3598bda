"""Rendering and installing charts/aliasd in the tests: helm and kustomize
renders, the objects applied for real, tokens of their ServiceAccounts, and
the parts of the controllers the local control plane does not run."""

from __future__ import annotations

import contextlib
import datetime as dt
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from aliasd_dev import ClusterError, LocalCluster, ensure_binaries
from tests.support import ROOT
from tests.support.process import ALIASD_SCRIPT

CHART = ROOT / "charts" / "aliasd"
HOOK = "helm.sh/hook"


def helm(*args: str, values: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
    """helm ARGS, with VALUES as a values file on stdin."""
    given = ["--values", "-"] if values is not None else []
    return subprocess.run([str(ensure_binaries() / "helm"), *args, *given],
                          input=yaml.safe_dump(values or {}), capture_output=True, text=True,
                          timeout=60, check=False)


def render(*sets: str, values: dict[str, Any] | None = None, release: str = "aliasd",
           namespace: str = "aliasd-system") -> list[dict[str, Any]]:
    """``helm template`` with ``--set`` SETS and VALUES (hooks included)."""
    args = [a for v in sets for a in ("--set", v)]
    out = helm("template", release, str(CHART), "--namespace", namespace, "--include-crds",
               *args, values=values)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def kustomize(overlay: str) -> list[dict[str, Any]]:
    out = subprocess.run([str(ensure_binaries() / "kustomize"), "build", str(ROOT / overlay)],
                         capture_output=True, text=True, check=True, timeout=60)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def key(d: dict[str, Any]) -> tuple[str, str, str]:
    return d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]


def is_hook(d: dict[str, Any]) -> bool:
    return HOOK in (d["metadata"].get("annotations") or {})


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


OPTIONAL: dict[str, Any] = {
    "serviceMonitor": {"enabled": True},
    "networkPolicy": {"enabled": True, "httpFrom": [
        {"namespaceSelector": {"matchLabels": {"team": "platform"}}}], "metricsFrom": [
        {"namespaceSelector": {"matchLabels": {"team": "monitoring"}}}]},
    "readAccess": "token",
    "metrics": {"port": 9153},
    "writeApi": {"kubernetesTokens": False, "tokenSecret": {"name": "aliasd-api-token"}},
    "image": {"digest": "sha256:" + "0" * 64},
    "podDisruptionBudget": {"maxUnavailable": 1},
    "allowTakeover": ["example.com", "namespace=edge"],
    "namePolicy": {"defaultAllowedNames": ["*.{namespace}.internal"]},
    "zones": ["internal", "corp.example"],
    "priorityClassName": "system-cluster-critical",
    "extraArgs": ["--tcp-max-connections=512"],
    "extraEnv": [{"name": "ALIASD_NS_ADDRESS", "value": "10.96.0.53"}],
    "coredns": {"forwardTo": "10.96.0.53:53"},
}
"""Every optional part on, and a value for every list."""


def hook_docs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if is_hook(d) and d["kind"] != "Job"]


@contextlib.contextmanager
def installed(cluster: LocalCluster, docs: list[dict[str, Any]]) -> Iterator[None]:
    """The rendered objects applied for real (the Job aside: no controller runs
    it here, the test runs its command); the cluster-wide and kube-system ones
    deleted afterwards."""
    applied = [d for d in docs if d["kind"] != "Job"]
    for d in applied:
        cluster.apply(d)
    try:
        yield
    finally:
        for d in applied:
            if d["kind"] in ("ClusterRole", "ClusterRoleBinding") or \
                    d["metadata"].get("namespace") == "kube-system":
                path = {"ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles",
                        "ClusterRoleBinding":
                            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
                        "Role": "/apis/rbac.authorization.k8s.io/v1/namespaces/kube-system/roles",
                        "RoleBinding": "/apis/rbac.authorization.k8s.io/v1/namespaces/"
                                       "kube-system/rolebindings"}[d["kind"]]
                with contextlib.suppress(ClusterError):
                    cluster.request("DELETE", f"{path}/{d['metadata']['name']}")


def token(cluster: LocalCluster, namespace: str, sa: str) -> str:
    body = cluster.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{sa}/token",
                           {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                            "spec": {"expirationSeconds": 3600}})
    value: str = body["status"]["token"]
    return value


def container_env(c: dict[str, Any], namespace: str) -> dict[str, str]:
    env = {e["name"]: e.get("value", "") for e in c["env"]}
    return env | {"POD_NAMESPACE": namespace}


def replicas(cluster: LocalCluster, namespace: str, name: str) -> int:
    scale = cluster.request(
        "GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale")
    value: int = scale["spec"].get("replicas", 0)
    return value


def corefile_now(cluster: LocalCluster) -> str:
    text: str = cluster.request(
        "GET", "/api/v1/namespaces/kube-system/configmaps/coredns")["data"]["Corefile"]
    return text


def review(cluster: LocalCluster, user: str, namespace: str, verb: str, resource: str,
           group: str, ns: str, name: str) -> bool:
    """Whether a ServiceAccount of NAMESPACE may do this (a SubjectAccessReview)."""
    body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {"user": user, "groups": ["system:serviceaccounts",
                                              f"system:serviceaccounts:{namespace}"],
                     "resourceAttributes": {"verb": verb, "resource": resource.split("/")[0],
                                            "subresource": resource.partition("/")[2],
                                            "group": group, "namespace": ns, "name": name}}}
    allowed: bool = cluster.request(
        "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body)["status"].get(
        "allowed", False)
    return allowed


def helm_env(cluster: LocalCluster, tmp_path: Path) -> dict[str, str]:
    """helm with the admin kubeconfig and its cache and config under tmp_path."""
    return {"KUBECONFIG": str(cluster.kubeconfig), "HOME": str(tmp_path),
            "XDG_CACHE_HOME": str(tmp_path / "cache"),
            "XDG_CONFIG_HOME": str(tmp_path / "config"),
            "XDG_DATA_HOME": str(tmp_path / "data"), "PATH": "/usr/bin:/bin"}


def run_helm(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ensure_binaries() / "helm"), *args], env=env,
                          capture_output=True, text=True, timeout=180, check=False)


def get_or_none(cluster: LocalCluster, path: str) -> Any:
    try:
        return cluster.request("GET", path)
    except ClusterError:
        return None


def finish_job(cluster: LocalCluster, namespace: str, name: str, *, succeeded: bool) -> None:
    """The Job controller's part: record that the Job's pod succeeded or failed."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if succeeded:
        conditions = [
            {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached",
             "message": "", "lastProbeTime": now, "lastTransitionTime": now},
            {"type": "Complete", "status": "True", "reason": "CompletionsReached",
             "message": "", "lastProbeTime": now, "lastTransitionTime": now}]
        status = {"startTime": now, "completionTime": now, "succeeded": 1,
                  "conditions": conditions}
    else:
        conditions = [
            {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded",
             "message": "", "lastProbeTime": now, "lastTransitionTime": now},
            {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
             "message": "", "lastProbeTime": now, "lastTransitionTime": now}]
        status = {"startTime": now, "failed": 2, "conditions": conditions}
    cluster.request("PATCH", f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}/status",
                    {"status": status}, content_type="application/merge-patch+json")


def run_hook_job(cluster: LocalCluster, namespace: str, name: str,
                 tmp_path: Path) -> subprocess.Popen[str]:
    """The hook Job's command as its pod would run it: its container's args and
    env, authenticated as its ServiceAccount. Output in tmp_path/NAME.log."""
    job = cluster.request("GET", f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}")
    pod = job["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    sa = pod["serviceAccountName"]
    env = container_env(c, namespace) | {"KUBECONFIG": str(cluster.write_kubeconfig(
        tmp_path / f"{name}-kubeconfig", user=sa, token=token(cluster, namespace, sa)))}
    with (tmp_path / f"{name}.log").open("w") as out:
        return subprocess.Popen([*ALIASD_SCRIPT, *c["args"]], env=env, stdout=out,
                                stderr=subprocess.STDOUT, text=True)


