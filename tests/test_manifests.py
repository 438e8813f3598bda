"""The shipped manifests and Dockerfile against the real API server: they
apply (server-side dry run, then for real), and aliasd started with the
Dockerfile's command line works under its ServiceAccount's RBAC, which grants
nothing it does not use."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from aliasd.coredns import corefile
from aliasd_dev import ClusterError, LocalCluster, ensure_binaries
from tests.support import ROOT
from tests.support.dnsclient import a_records
from tests.support.kube import events, service
from tests.support.process import ALIASD_SCRIPT, api_refusals, http_json, run_aliasd
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster

SA = "system:serviceaccount:aliasd-system:aliasd"


def rendered(overlay: str) -> list[dict[str, Any]]:
    out = subprocess.run([str(ensure_binaries() / "kustomize"), "build", str(ROOT / overlay)],
                         capture_output=True, text=True, check=True, timeout=60)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def by_kind(docs: list[dict[str, Any]], kind: str, name: str = "aliasd") -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


@pytest.fixture(scope="module")
def deployed(cluster: LocalCluster) -> Iterator[list[dict[str, Any]]]:
    """manifests/kind, server-side dry run first, then applied for real."""
    docs = rendered("manifests/kind")
    namespaces = [d for d in docs if d["kind"] == "Namespace"]
    rest = [d for d in docs if d["kind"] != "Namespace"]
    for group in (namespaces, rest):  # namespaced dry runs need the namespace to exist
        for d in group:
            cluster.apply(d, dry_run=True)
        for d in group:
            cluster.apply(d)
    yield docs
    for path in ("/api/v1/namespaces/aliasd-system/services/aliasd",
                 "/apis/apps/v1/namespaces/aliasd-system/deployments/aliasd",
                 "/apis/coordination.k8s.io/v1/namespaces/aliasd-system/leases/aliasd"):
        with contextlib.suppress(ClusterError):
            cluster.request("DELETE", path)


def test_manifests_are_what_a_platform_team_expects(deployed: list[dict[str, Any]],
                                                    cluster: LocalCluster) -> None:
    assert sorted((d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"])
                  for d in deployed) == [
        ("ClusterRole", "", "aliasd"), ("ClusterRole", "", "aliasd-aliases-edit"),
        ("ClusterRole", "", "aliasd-aliases-view"), ("ClusterRoleBinding", "", "aliasd"),
        ("ConfigMap", "aliasd-system", "aliasd-overrides"),
        ("CustomResourceDefinition", "", "aliases.aliasd.io"),
        ("Deployment", "aliasd-system", "aliasd"), ("Namespace", "", "aliasd-system"),
        ("PodDisruptionBudget", "aliasd-system", "aliasd"),
        ("Role", "aliasd-system", "aliasd-leader-election"),
        ("Role", "aliasd-system", "aliasd-overrides"),
        ("Role", "kube-system", "aliasd-coredns"),
        ("RoleBinding", "aliasd-system", "aliasd-leader-election"),
        ("RoleBinding", "aliasd-system", "aliasd-overrides"),
        ("RoleBinding", "kube-system", "aliasd-coredns"),
        ("Service", "aliasd-system", "aliasd"), ("ServiceAccount", "aliasd-system", "aliasd")]
    dep = cluster.request("GET", "/apis/apps/v1/namespaces/aliasd-system/deployments/aliasd")
    spec = dep["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    assert dep["spec"]["replicas"] == 2
    assert (c["image"], c["imagePullPolicy"]) == ("aliasd:dev", "Never")
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"] == {"allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}}
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert set(c["resources"]["requests"]) == {"cpu", "memory"}
    assert "memory" in c["resources"]["limits"]
    assert spec["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"
    # The state file lives on a writable emptyDir (the root filesystem is read-only).
    assert {"name": "ALIASD_STATE_FILE", "value": "/var/lib/aliasd/state.json"} in c["env"]
    assert {"name": "state", "mountPath": "/var/lib/aliasd"} in c["volumeMounts"]
    assert {"name": "state", "emptyDir": {"sizeLimit": "64Mi"}} in spec["volumes"]
    svc = cluster.request("GET", "/api/v1/namespaces/aliasd-system/services/aliasd")["spec"]
    assert sorted((p["name"], p["protocol"], p["port"], p["targetPort"])
                  for p in svc["ports"]) == [("dns", "UDP", 53, "dns"),
                                             ("dns-tcp", "TCP", 53, "dns-tcp"),
                                             ("http", "TCP", 8080, "http")]
    # The base differs only in the image: a registry image, pulled normally.
    base = by_kind(rendered("manifests/base"), "Deployment")["spec"]["template"]["spec"]
    assert base["containers"][0]["image"] == "ghcr.io/aliasd/aliasd:0.1.0"
    assert "imagePullPolicy" not in base["containers"][0]


def review(cluster: LocalCluster, verb: str, resource: str, group: str, namespace: str,
           name: str) -> bool:
    """Whether aliasd's ServiceAccount may do this (a SubjectAccessReview)."""
    body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {"user": SA, "groups": ["system:serviceaccounts",
                                            "system:serviceaccounts:aliasd-system"],
                     "resourceAttributes": {"verb": verb, "resource": resource, "group": group,
                                            "namespace": namespace, "name": name}}}
    allowed: bool = cluster.request(
        "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body)["status"].get(
        "allowed", False)
    return allowed


def test_rbac_grants_exactly_what_aliasd_uses(deployed: list[dict[str, Any]],
                                              cluster: LocalCluster) -> None:
    role = cluster.request("GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles/aliasd")
    assert sorted((r["apiGroups"][0], r["resources"][0], tuple(r["verbs"]))
                  for r in role["rules"]) == [
        ("", "events", ("create",)), ("", "namespaces", ("list", "watch")),
        ("", "services", ("get", "list", "watch")),
        ("aliasd.io", "aliases", ("list", "watch")),
        ("aliasd.io", "aliases/status", ("patch",)),
        ("authentication.k8s.io", "tokenreviews", ("create",)),
        ("authorization.k8s.io", "subjectaccessreviews", ("create",)),
        ("discovery.k8s.io", "endpointslices", ("list", "watch")),
        ("networking.istio.io", "serviceentries", ("list", "watch"))]
    denied = [
        ("list", "secrets", "", "", ""), ("get", "secrets", "", "kube-system", "x"),
        ("update", "services", "", "default", "kubernetes"),
        ("patch", "services", "", "default", "kubernetes"),
        ("delete", "events", "", "default", ""), ("patch", "events", "", "default", ""),
        ("get", "customresourcedefinitions", "apiextensions.k8s.io", "", ""),
        ("get", "configmaps", "", "kube-system", "extension-apiserver-authentication"),
        ("patch", "configmaps", "", "kube-system", "kube-proxy"),
        ("list", "configmaps", "", "kube-system", ""),
        ("update", "configmaps", "", "kube-system", "coredns"),
        ("delete", "configmaps", "", "kube-system", "coredns"),
        ("patch", "configmaps", "", "default", "coredns"),
        ("update", "leases", "coordination.k8s.io", "kube-system", "kube-controller-manager"),
        ("create", "pods", "", "aliasd-system", ""),
        ("create", "configmaps", "", "aliasd-system", ""),
        ("patch", "configmaps", "", "aliasd-system", "kube-root-ca.crt"),
        ("list", "configmaps", "", "aliasd-system", ""),
        ("update", "endpointslices", "discovery.k8s.io", "default", "x"),
        ("get", "namespaces", "", "", "default"), ("patch", "namespaces", "", "", "default"),
        ("update", "namespaces", "", "", "default"),
        ("get", "aliases", "aliasd.io", "default", "x"),
        ("patch", "aliases", "aliasd.io", "default", "x"),
        ("update", "aliases/status", "aliasd.io", "default", "x"),
        ("create", "aliases", "aliasd.io", "default", ""),
    ]
    assert [d for d in denied if review(cluster, *d)] == []
    allowed = [
        ("watch", "services", "", "", ""), ("get", "services", "", "aliasd-system", "aliasd"),
        ("watch", "endpointslices", "discovery.k8s.io", "", ""),
        ("watch", "serviceentries", "networking.istio.io", "", ""),
        ("list", "namespaces", "", "", ""), ("watch", "namespaces", "", "", ""),
        ("create", "events", "", "kube-system", ""),
        ("patch", "configmaps", "", "kube-system", "coredns"),
        ("watch", "configmaps", "", "kube-system", "node-local-dns"),
        ("patch", "configmaps", "", "kube-system", "coredns-custom"),
        ("create", "leases", "coordination.k8s.io", "aliasd-system", ""),
        ("update", "leases", "coordination.k8s.io", "aliasd-system", "aliasd"),
        # A Lease per replica, named after its pod: Programmed.
        ("list", "leases", "coordination.k8s.io", "aliasd-system", ""),
        ("watch", "leases", "coordination.k8s.io", "aliasd-system", ""),
        ("update", "leases", "coordination.k8s.io", "aliasd-system", "aliasd-aliasd-7c9f-x2x"),
        ("watch", "configmaps", "", "aliasd-system", "aliasd-overrides"),
        ("patch", "configmaps", "", "aliasd-system", "aliasd-overrides"),
        ("list", "aliases", "aliasd.io", "", ""), ("watch", "aliases", "aliasd.io", "", ""),
        ("patch", "aliases/status", "aliasd.io", "default", "x"),
    ]
    assert [a for a in allowed if not review(cluster, *a)] == []


def test_aliases_roles_aggregate_to_the_built_in_roles(deployed: list[dict[str, Any]],
                                                      cluster: LocalCluster) -> None:
    """The shipped Alias roles carry the labels the API server's own edit,
    admin and view roles aggregate (their aggregationRule, as served), so a
    namespace editor may create Aliases without a cluster admin; a viewer may
    read them; nobody but aliasd gets aliases/status. (The aggregation itself
    is kube-controller-manager's, which the local control plane does not run.)"""
    def selected(builtin: str) -> set[str]:
        body = cluster.request("GET",
                               f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{builtin}")
        chosen = set()
        for sel in body["aggregationRule"]["clusterRoleSelectors"]:
            for d in deployed:
                labels = d["metadata"].get("labels") or {}
                if d["kind"] == "ClusterRole" and all(
                        labels.get(k) == v for k, v in sel["matchLabels"].items()):
                    chosen.add(d["metadata"]["name"])
        return chosen

    assert selected("edit") == selected("admin") == {"aliasd-aliases-edit"}
    assert selected("view") == {"aliasd-aliases-view"}
    edit = by_kind(deployed, "ClusterRole", "aliasd-aliases-edit")["rules"]
    view = by_kind(deployed, "ClusterRole", "aliasd-aliases-view")["rules"]
    assert [(r["apiGroups"], r["resources"]) for r in edit + view] == [
        (["aliasd.io"], ["aliases"])] * 2
    assert {"create", "update", "patch", "delete"} <= set(edit[0]["verbs"])
    assert sorted(view[0]["verbs"]) == ["get", "list", "watch"]


def dockerfile() -> tuple[list[str], dict[str, str], str]:
    """The final stage's ENTRYPOINT + CMD, ENV and USER."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    final = text[text.rindex("\nFROM "):]
    entry = cmd = None
    env: dict[str, str] = {}
    user = ""
    for line in final.splitlines():
        word, _, rest = line.strip().partition(" ")
        if word == "ENTRYPOINT":
            entry = json.loads(rest)
        elif word == "CMD":
            cmd = json.loads(rest)
        elif word == "USER":
            user = rest.strip()
        elif word == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", rest)))
    assert entry is not None and cmd is not None
    return entry + cmd, env, user


def test_dockerfile_is_slim_and_non_root() -> None:
    argv, env, user = dockerfile()
    assert argv == ["aliasd", "run"]
    assert user == "65532:65532"
    text = (ROOT / "Dockerfile").read_text()
    final = text[text.rindex("\nFROM "):]
    assert final.splitlines()[1] == "FROM ${BASE_IMAGE}"
    assert "ARG BASE_IMAGE=python:3.12-slim\n" in text  # what users build on
    assert "pip install" not in final and "apt-get" not in final  # built in the first stage
    # Reproducible: every dependency pinned and hash-checked, pip gone from the venv.
    assert "pip install --no-cache-dir --require-hashes -r requirements.lock" in text
    assert "pip uninstall -q -y setuptools pip" in text
    lock = (ROOT / "requirements.lock").read_text()
    pinned = re.findall(r"^([a-z0-9-]+)==\S+ \\$", lock, re.M)
    assert {"aiohttp", "dnslib", "jsonpatch", "kubernetes-asyncio", "uvloop"} <= set(pinned)
    assert lock.count("--hash=sha256:") >= len(pinned)
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"  # read-only root filesystem


def test_the_image_command_works_under_the_service_account(
        deployed: list[dict[str, Any]], cluster: LocalCluster, namespace: str,
        tmp_path: Path) -> None:
    """The container's command line and environment (Dockerfile ENTRYPOINT/CMD/ENV,
    the Deployment's args and env) run outside a container, authenticated as the
    ServiceAccount, exactly as the pod would."""
    token = cluster.request(
        "POST", "/api/v1/namespaces/aliasd-system/serviceaccounts/aliasd/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
         "spec": {"expirationSeconds": 3600}})["status"]["token"]
    kc = cluster.write_kubeconfig(tmp_path / "sa-kubeconfig", user="aliasd", token=token)
    argv, image_env, _ = dockerfile()
    (c,) = by_kind(deployed, "Deployment")["spec"]["template"]["spec"]["containers"]
    pod_env = {e["name"]: e.get("value", "") for e in c["env"]}
    pod_env.update(POD_NAME="aliasd-7d9f-x1", POD_NAMESPACE="aliasd-system")
    assert c["args"] == argv[1:]
    ip = service(cluster, namespace, "fruits-api-service",
                 alias="my-fruits.internal bad_label")["spec"]["clusterIP"]
    aliasd_ip = cluster.request("GET", "/api/v1/namespaces/aliasd-system/services/aliasd")[
        "spec"]["clusterIP"]
    # The pod's emptyDir is the test's tmp_path; the API token the operator adds.
    pod_env["ALIASD_STATE_FILE"] = pod_env["ALIASD_STATE_FILE"].replace(
        "/var/lib/aliasd", str(tmp_path))
    (tmp_path / "token").write_text("t0ken\n")
    env = {k: v for k, v in image_env.items() if k != "PATH"} | pod_env | {
        "KUBECONFIG": str(kc), "ALIASD_COREDNS_MODE": "auto",
        "ALIASD_LEADER_LEASE_DURATION": "3", "ALIASD_LOG_FORMAT": "text",
        "ALIASD_API_TOKEN_FILE": str(tmp_path / "token")}
    with run_aliasd([], tmp=tmp_path, env=env, argv=argv) as p:
        wait_for(lambda: a_records(p, "my-fruits.internal.") == [ip], what="the alias")
        # An override goes into the shipped ConfigMap under the Role's limits.
        status, doc = http_json(p, "PUT", "/v1/overrides/my-fruits", {"addresses": ["10.9.9.9"]},
                                token="t0ken")
        assert status == 201, doc
        assert a_records(p, "my-fruits.internal.") == ["10.9.9.9"]
        stored = cluster.request(
            "GET", "/api/v1/namespaces/aliasd-system/configmaps/aliasd-overrides")["data"]
        assert json.loads(stored["my-fruits.internal"])["addresses"] == ["10.9.9.9"]
        assert http_json(p, "DELETE", "/v1/overrides/my-fruits", token="t0ken")[0] == 200
        assert a_records(p, "my-fruits.internal.") == [ip]
        wait_for(lambda: json.loads((tmp_path / "state.json").read_text())["claims"],
                 what="the state file")
        wait_for(lambda: f"forward . {aliasd_ip}:53\n" in cluster.request(
            "GET", "/api/v1/namespaces/kube-system/configmaps/coredns")["data"]["Corefile"],
            what="CoreDNS patched to forward to the aliasd Service")
        lease = cluster.request(
            "GET", "/apis/coordination.k8s.io/v1/namespaces/aliasd-system/leases/aliasd")
        assert lease["spec"]["holderIdentity"].startswith("aliasd-7d9f-x1_")
        # The bad label, and the override that shadowed my-fruits.internal meanwhile.
        wait_for(lambda: sorted(r for r, _ in events(cluster, namespace, "fruits-api-service")
                                ) == ["AliasOverridden", "InvalidAlias"],
                 what="the InvalidAlias and AliasOverridden Events")
        status, ready = p.http("/readyz")
        assert status == 200 and ready["coredns"]["error"] is None
        assert ready["coredns"]["targets"] == ["kube-system/coredns"]
        # Nothing the ServiceAccount did was refused: the API server's answers
        # as aliasd counted them, not a search of the logs.
        status, text = p.http("/metrics")
        assert status == 200
        assert any(s.name == "aliasd_kube_api_responses_total" and s.labels["code"] == "200"
                   for f in text_string_to_metric_families(text) for s in f.samples)
        assert api_refusals(text) == {}, p.logs()
    remove = subprocess.run([*ALIASD_SCRIPT, "coredns", "remove"], env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert remove.returncode == 0, remove.stderr
    text = cluster.request("GET", "/api/v1/namespaces/kube-system/configmaps/coredns")
    assert text["data"]["Corefile"] == cluster.initial_corefile
    assert corefile.managed_regions(text["data"]["Corefile"]) == []


def test_overrides_api_overlay_mounts_the_token(deployed: list[dict[str, Any]],
                                                cluster: LocalCluster) -> None:
    """manifests/overrides-api (the kind overlay plus the write API's token) is
    accepted by the API server (server-side dry run, over the deployed base) and
    wires the token file."""
    docs = rendered("manifests/overrides-api")
    for d in docs:
        cluster.apply(d, dry_run=True)
    spec = by_kind(docs, "Deployment")["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    assert {"name": "ALIASD_API_TOKEN_FILE", "value": "/etc/aliasd/api-token/token"} in c["env"]
    assert {"name": "api-token", "mountPath": "/etc/aliasd/api-token",
            "readOnly": True} in c["volumeMounts"]
    assert {"name": "api-token", "secret": {"secretName": "aliasd-api-token"}} in spec["volumes"]
    assert c["imagePullPolicy"] == "Never"  # still the kind overlay underneath


def test_a_refused_call_shows_in_the_refusals_check(cluster: LocalCluster, namespace: str,
                                                    tmp_path: Path) -> None:
    """The check above fails when aliasd really is refused: a ServiceAccount
    that may list Services but not watch them (one verb missing) gets 403s,
    and ``api_refusals`` reports them by method and code."""
    sa = "aliasd-no-watch"
    cluster.apply({"apiVersion": "v1", "kind": "ServiceAccount",
                   "metadata": {"name": sa, "namespace": namespace}})
    cluster.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                   "metadata": {"name": sa, "namespace": namespace},
                   "rules": [{"apiGroups": [""], "resources": ["services"], "verbs": ["list"]}]})
    cluster.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                   "metadata": {"name": sa, "namespace": namespace},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                               "name": sa},
                   "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": namespace}]})
    token = cluster.request(
        "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{sa}/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
         "spec": {"expirationSeconds": 3600}})["status"]["token"]
    kc = cluster.write_kubeconfig(tmp_path / "kubeconfig", user=sa, token=token)
    with run_aliasd(["--kubeconfig", str(kc), "--namespaces", namespace], tmp=tmp_path,
                    wait_ready=False) as p:
        def refused() -> dict[tuple[str, str], float]:
            return api_refusals(p.http("/metrics")[1])
        got = wait_for(refused, what="a 403 counted")
        assert ("GET", "403") in got, got

