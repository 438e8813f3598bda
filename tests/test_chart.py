"""The Helm chart (charts/aliasd): with its default values it renders what the
kustomize base renders; its schema refuses a typo by name; every enum of the
schema renders and lints; the API server accepts what it renders (server-side
dry run); and its uninstall hook, run as the hook's ServiceAccount against the
real API server, stops aliasd and gives the Corefile back byte for byte."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from aliasd.coredns import corefile
from aliasd_dev import ClusterError, LocalCluster, ensure_binaries
from aliasd_dev.cluster import resource_path
from tests.helpers import ALIASD_SCRIPT, ROOT, api_refusals, run_aliasd, wait_for

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


# ---- rendering (helm only) -------------------------------------------------------------


def test_default_values_render_what_manifests_base_renders() -> None:
    """One source of truth: the objects, the RBAC rules and the container differ
    only in Helm's labels and selector (and the Namespace, which Helm's
    ``--create-namespace`` makes)."""
    chart = {key(d): d for d in render() if not is_hook(d)}
    base = {key(d): d for d in kustomize("manifests/base") if d["kind"] != "Namespace"}
    assert sorted(chart) == sorted(base)
    for k, want in base.items():
        got = chart[k]
        if k[0] in ("ClusterRole", "Role"):
            assert got["rules"] == want["rules"], k
        if k[0] in ("ClusterRoleBinding", "RoleBinding"):
            assert (got["roleRef"], got["subjects"]) == (want["roleRef"], want["subjects"]), k
        if k[0] == "CustomResourceDefinition":  # charts/aliasd/crds/, as Helm installs them
            assert got == want, k
        if k[0] in ("ServiceAccount", "ConfigMap"):
            assert {f for f in got if f != "metadata"} == {f for f in want if f != "metadata"}
    dep, base_dep = chart["Deployment", "aliasd-system", "aliasd"], base[
        "Deployment", "aliasd-system", "aliasd"]
    assert dep["spec"]["replicas"] == base_dep["spec"]["replicas"]
    pod, base_pod = dep["spec"]["template"], base_dep["spec"]["template"]
    assert pod["metadata"]["annotations"] == base_pod["metadata"]["annotations"]
    spec, base_spec = pod["spec"], base_pod["spec"]
    for field in ("serviceAccountName", "terminationGracePeriodSeconds", "securityContext",
                  "volumes"):
        assert spec[field] == base_spec[field], field
    assert [{k: v for k, v in c.items() if k != "labelSelector"}
            for c in spec["topologySpreadConstraints"]] == [
        {k: v for k, v in c.items() if k != "labelSelector"}
        for c in base_spec["topologySpreadConstraints"]]
    # Each constraint counts this release's pods (the selector, as the Deployment's).
    assert all(c["labelSelector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
               for c in spec["topologySpreadConstraints"])
    ((c,), (base_c,)) = spec["containers"], base_spec["containers"]
    assert c == base_c  # image, args, env, ports, probes, resources, securityContext, mounts
    svc, base_svc = chart["Service", "aliasd-system", "aliasd"], base[
        "Service", "aliasd-system", "aliasd"]
    assert svc["spec"]["ports"] == base_svc["spec"]["ports"]
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    pdb, base_pdb = chart["PodDisruptionBudget", "aliasd-system", "aliasd"], base[
        "PodDisruptionBudget", "aliasd-system", "aliasd"]
    assert pdb["spec"]["minAvailable"] == base_pdb["spec"]["minAvailable"]


@pytest.mark.parametrize(("values", "path", "problem"), [
    (["replica=3"], "''", "additional properties 'replica' not allowed"),
    (["coredns.mdoe=corefile"], "'/coredns'", "additional properties 'mdoe' not allowed"),
    (["writeApi.tokenSecret.nmae=x"], "'/writeApi/tokenSecret'",
     "additional properties 'nmae' not allowed"),
    (["logFormat=xml"], "'/logFormat'", "value must be one of 'text', 'json'"),
    (["replicas=two"], "'/replicas'", "got string, want integer"),
])
def test_a_values_typo_fails_naming_the_key(values: list[str], path: str,
                                            problem: str) -> None:
    sets = [a for v in values for a in ("--set", v)]
    out = helm("template", "aliasd", str(CHART), *sets)
    assert out.returncode != 0
    assert f"- at {path}: {problem}" in out.stderr.splitlines(), out.stderr


def enums(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, list[Any]]]:
    """(dotted key, allowed values) of every enum in the schema."""
    if "enum" in schema:
        yield path, schema["enum"]
    for name, sub in (schema.get("properties") or {}).items():
        yield from enums(sub, f"{path}.{name}" if path else name)


OPTIONAL: dict[str, Any] = {
    "serviceMonitor": {"enabled": True},
    "networkPolicy": {"enabled": True, "httpFrom": [
        {"namespaceSelector": {"matchLabels": {"team": "monitoring"}}}]},
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


def test_lint_strict_and_every_enum_value_renders() -> None:
    """What CI runs: ``helm lint --strict`` with the defaults and with every
    optional part on, and ``helm template`` with each value of each enum."""
    for values in ({}, OPTIONAL):
        out = helm("lint", "--strict", str(CHART), values=values)
        assert out.returncode == 0, out.stdout + out.stderr
    schema = json.loads((CHART / "values.schema.json").read_text())
    found = dict(enums(schema))
    assert set(found) == {"image.pullPolicy", "logFormat", "logLevel", "coredns.mode"}
    for dotted, allowed in found.items():
        for value in allowed:
            docs = render(f"{dotted}={value}")
            assert one(docs, "Deployment", "aliasd")


def test_values_reach_the_container() -> None:
    docs = render("coredns.mode=kube-dns", "logFormat=json", values=OPTIONAL, release="edge",
                  namespace="dns")
    dep = one(docs, "Deployment", "edge-aliasd")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["ALIASD_ZONE"] == "internal,corp.example"
    assert env["ALIASD_COREDNS_MODE"] == "kube-dns"
    assert env["ALIASD_FORWARD_TO"] == "10.96.0.53:53"
    assert env["ALIASD_LOG_FORMAT"] == "json"
    assert env["ALIASD_ALLOW_TAKEOVER"] == "example.com,namespace=edge"
    assert env["ALIASD_DEFAULT_ALLOWED_NAMES"] == "*.{namespace}.internal"
    assert env["ALIASD_API_TOKEN_FILE"] == "/etc/aliasd/api-token/token"
    assert env["ALIASD_NS_ADDRESS"] == "10.96.0.53"
    # Another release name: every object and reference follows it.
    assert env["ALIASD_LEADER_LEASE"] == env["ALIASD_DNS_SERVICE"] == "dns/edge-aliasd"
    assert env["ALIASD_OVERRIDES_CONFIGMAP"] == "dns/edge-aliasd-overrides"
    assert one(docs, "ConfigMap", "edge-aliasd-overrides")
    assert c["image"] == "ghcr.io/aliasd/aliasd@sha256:" + "0" * 64
    assert c["args"] == ["run", "--tcp-max-connections=512"]
    role = one(docs, "ClusterRole", "edge-aliasd")
    assert {r["resources"][0] for r in role["rules"]}.isdisjoint(
        {"tokenreviews", "subjectaccessreviews"})
    assert one(docs, "PodDisruptionBudget", "edge-aliasd")["spec"] == {
        "maxUnavailable": 1,
        "selector": {"matchLabels": dep["spec"]["selector"]["matchLabels"]}}
    policy = one(docs, "NetworkPolicy", "edge-aliasd")
    assert [sorted(p["port"] for p in rule["ports"]) for rule in policy["spec"]["ingress"]] == [
        ["dns", "dns-tcp"], ["http"]]
    assert one(docs, "ServiceMonitor", "edge-aliasd")["spec"]["endpoints"][0]["port"] == "http"
    job = one(docs, "Job", "edge-aliasd-uninstall")
    (hook_c,) = job["spec"]["template"]["spec"]["containers"]
    assert hook_c["args"] == ["coredns", "remove", "--stop-deployment", "dns/edge-aliasd"]
    assert hook_c["image"] == c["image"]
    assert {e["name"]: e.get("value") for e in hook_c["env"]}["ALIASD_COREDNS_MODE"] == "kube-dns"


def test_the_optional_parts_are_off_by_default() -> None:
    kinds = {d["kind"] for d in render()}
    assert not kinds & {"ServiceMonitor", "NetworkPolicy", "Secret"}
    assert "Job" in kinds  # the uninstall hook is on
    assert "Job" not in {d["kind"] for d in render("coredns.mode=off")}


# ---- against the API server --------------------------------------------------------------


@pytest.mark.cluster
@pytest.mark.parametrize("values", [{}, OPTIONAL | {"serviceMonitor": {"enabled": False}}],
                         ids=["defaults", "optional-parts"])
def test_the_api_server_accepts_the_rendered_chart(cluster: LocalCluster, namespace: str,
                                                   values: dict[str, Any]) -> None:
    """Server-side dry run of every object, hooks included (the ServiceMonitor
    needs the Prometheus Operator's CRD, which this cluster does not serve)."""
    docs = render(values=values, namespace=namespace)
    for d in docs:
        cluster.apply(d, dry_run=True)


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


@pytest.fixture
def coredns(cluster: LocalCluster) -> Iterator[LocalCluster]:
    """The shared CoreDNS ConfigMap, put back as it was even when a test fails
    half way (the tests below wire it and expect the hook to unwire it)."""
    yield cluster
    cluster.request("PUT", "/api/v1/namespaces/kube-system/configmaps/coredns", {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "coredns", "namespace": "kube-system"},
        "data": {"Corefile": cluster.initial_corefile}})


def corefile_now(cluster: LocalCluster) -> str:
    text: str = cluster.request(
        "GET", "/api/v1/namespaces/kube-system/configmaps/coredns")["data"]["Corefile"]
    return text


@pytest.mark.cluster
@pytest.mark.usefixtures("coredns")
def test_uninstall_hook_stops_aliasd_and_restores_the_corefile(
        cluster: LocalCluster, namespace: str, tmp_path: Path) -> None:
    """The release's objects applied, aliasd running as the chart's
    ServiceAccount and holding the Lease, CoreDNS wired; then the hook's command
    as its own ServiceAccount: it scales the Deployment to 0, waits until the
    replica (stopped here by the test, as a kubelet would) releases the Lease,
    and the Corefile is byte for byte as before. Run twice, the second run
    changes nothing."""
    release, full = "hooktest", "hooktest-aliasd"
    docs = render(release=release, namespace=namespace)
    with installed(cluster, docs):
        pod_spec = one(docs, "Deployment", full)["spec"]["template"]["spec"]
        (c,) = pod_spec["containers"]
        run_env = container_env(c, namespace) | {
            "POD_NAME": f"{full}-7d9f-x1", "ALIASD_COREDNS_MODE": "auto",  # the pod's default
            "ALIASD_STATE_FILE": str(tmp_path / "state.json"),
            "ALIASD_LEADER_LEASE_DURATION": "3",
            "KUBECONFIG": str(cluster.write_kubeconfig(
                tmp_path / "aliasd-kubeconfig", user=full,
                token=token(cluster, namespace, full)))}
        (job_c,) = one(docs, "Job", f"{full}-uninstall")["spec"]["template"]["spec"][
            "containers"]
        hook_env = container_env(job_c, namespace) | {
            "KUBECONFIG": str(cluster.write_kubeconfig(
                tmp_path / "hook-kubeconfig", user=f"{full}-uninstall",
                token=token(cluster, namespace, f"{full}-uninstall")))}
        hook_argv = [*ALIASD_SCRIPT, *job_c["args"]]
        before = corefile_now(cluster)
        assert before == cluster.initial_corefile
        assert replicas(cluster, namespace, full) == 2
        log = tmp_path / "hook.log"
        with run_aliasd([], tmp=tmp_path, env=run_env, argv=["aliasd", *c["args"]]) as p:
            wait_for(lambda: corefile.managed_regions(corefile_now(cluster)) != [],
                     what="CoreDNS wired by the running replica")
            # The chart's own RBAC under another release name: nothing refused.
            assert api_refusals(p.http("/metrics")[1]) == {}, p.logs()
            with log.open("w") as out:
                hook = subprocess.Popen(hook_argv, env=hook_env, stdout=out,
                                        stderr=subprocess.STDOUT, text=True)
            # The Deployment controller's part: the replica stops once scaled to 0.
            wait_for(lambda: replicas(cluster, namespace, full) == 0 or hook.poll() is not None,
                     timeout=30, what="the hook scaling the Deployment to 0")
            assert hook.poll() is None, log.read_text()
            assert corefile.managed_regions(corefile_now(cluster)) != []
        assert hook.wait(timeout=90) == 0, log.read_text()
        assert corefile_now(cluster) == before
        # Twice: nothing left to stop or remove, and it says so without failing.
        again = subprocess.run(hook_argv, env=hook_env, capture_output=True, text=True,
                               timeout=90, check=False)
        assert again.returncode == 0, again.stderr
        assert again.stderr.splitlines()[-1] == "kube-system/coredns: unchanged"
        assert corefile_now(cluster) == before
        assert replicas(cluster, namespace, full) == 0


@pytest.mark.cluster
def test_uninstall_hook_without_the_coredns_configmap_stops_nothing(
        cluster: LocalCluster, namespace: str, tmp_path: Path) -> None:
    """The ConfigMap the chart was told to wire does not exist: the hook says so
    and exits 2 before scaling anything, so the release stays whole."""
    release, full = "nocm", "nocm-aliasd"
    docs = render("coredns.configMap=kube-system/no-such-coredns", "coredns.mode=corefile",
                  release=release, namespace=namespace)
    with installed(cluster, docs):
        (job_c,) = one(docs, "Job", f"{full}-uninstall")["spec"]["template"]["spec"][
            "containers"]
        env = container_env(job_c, namespace) | {
            "KUBECONFIG": str(cluster.write_kubeconfig(
                tmp_path / "hook-kubeconfig", user=f"{full}-uninstall",
                token=token(cluster, namespace, f"{full}-uninstall")))}
        out = subprocess.run([*ALIASD_SCRIPT, *job_c["args"]], env=env, capture_output=True,
                             text=True, timeout=60, check=False)
        assert out.returncode == 2, out.stderr
        assert out.stderr.splitlines() == [
            "aliasd: error: ConfigMap kube-system/no-such-coredns not found; "
            "nothing was changed"]
        assert replicas(cluster, namespace, full) == 2
        assert corefile_now(cluster) == cluster.initial_corefile


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


@pytest.mark.cluster
def test_the_uninstall_hook_is_granted_exactly_what_it_uses(cluster: LocalCluster,
                                                            namespace: str) -> None:
    full = "grants-aliasd"
    docs = render(release="grants", namespace=namespace)
    user = f"system:serviceaccount:{namespace}:{full}-uninstall"
    with installed(cluster, hook_docs(docs)):
        allowed = [
            ("get", "deployments/scale", "apps", namespace, full),
            ("patch", "deployments/scale", "apps", namespace, full),
            ("get", "leases", "coordination.k8s.io", namespace, full),
            ("get", "configmaps", "", "kube-system", "coredns"),
            ("patch", "configmaps", "", "kube-system", "coredns"),
            ("patch", "configmaps", "", "kube-system", "coredns-custom"),
            ("patch", "configmaps", "", "kube-system", "kube-dns"),
            ("patch", "configmaps", "", "kube-system", "node-local-dns"),
        ]
        assert [a for a in allowed if not review(cluster, user, namespace, *a)] == []
        denied = [
            ("patch", "deployments", "apps", namespace, full),
            ("delete", "deployments", "apps", namespace, full),
            ("patch", "deployments/scale", "apps", namespace, "someone-else"),
            ("patch", "deployments/scale", "apps", "kube-system", "coredns"),
            ("update", "leases", "coordination.k8s.io", namespace, full),
            ("delete", "leases", "coordination.k8s.io", namespace, full),
            ("list", "configmaps", "", "kube-system", ""),
            ("update", "configmaps", "", "kube-system", "coredns"),
            ("delete", "configmaps", "", "kube-system", "coredns"),
            ("patch", "configmaps", "", "kube-system", "kube-proxy"),
            ("get", "secrets", "", namespace, "x"),
            ("create", "pods", "", namespace, ""),
            ("list", "services", "", "", ""),
        ]
        assert [d for d in denied if review(cluster, user, namespace, *d)] == []


# ---- helm itself against the API server ------------------------------------------------


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


@pytest.mark.cluster
@pytest.mark.usefixtures("coredns")
def test_helm_install_then_uninstall_gives_the_corefile_back(
        cluster: LocalCluster, namespace: str, tmp_path: Path) -> None:
    """``helm install`` and ``helm uninstall`` themselves, on the local control
    plane. It runs no controllers, so the test plays their parts: aliasd runs
    as the release's pod (as its ServiceAccount), stopped once the hook scaled
    the Deployment to 0; the hook Job's command runs as its pod would, and its
    outcome is written to the Job's status, which helm waits for."""
    env = helm_env(cluster, tmp_path)
    release, full = "lifecycle", "lifecycle-aliasd"
    before = corefile_now(cluster)
    out = run_helm(env, "install", release, str(CHART), "-n", namespace)
    assert out.returncode == 0, out.stderr
    try:
        pod_spec = cluster.request(
            "GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/{full}")["spec"][
            "template"]["spec"]
        (c,) = pod_spec["containers"]
        run_env = container_env(c, namespace) | {
            "POD_NAME": f"{full}-7d9f-x1", "ALIASD_COREDNS_MODE": "auto",
            "ALIASD_STATE_FILE": str(tmp_path / "state.json"),
            "KUBECONFIG": str(cluster.write_kubeconfig(
                tmp_path / "aliasd-kubeconfig", user=full,
                token=token(cluster, namespace, full)))}
        job = f"{full}-uninstall"
        with run_aliasd([], tmp=tmp_path, env=run_env, argv=["aliasd", *c["args"]]):
            wait_for(lambda: corefile.managed_regions(corefile_now(cluster)) != [],
                     what="CoreDNS wired by the release's replica")
            uninstall = subprocess.Popen(
                [str(ensure_binaries() / "helm"), "uninstall", release, "-n", namespace,
                 "--timeout", "120s"], env=env, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True)
            wait_for(lambda: get_or_none(
                cluster, f"/apis/batch/v1/namespaces/{namespace}/jobs/{job}"),
                timeout=60, what="helm creating the hook Job")
            hook = run_hook_job(cluster, namespace, job, tmp_path)
            wait_for(lambda: replicas(cluster, namespace, full) == 0 or hook.poll() is not None,
                     timeout=30, what="the hook scaling the Deployment to 0")
        assert hook.wait(timeout=90) == 0, (tmp_path / f"{job}.log").read_text()
        finish_job(cluster, namespace, job, succeeded=True)
        stdout, stderr = uninstall.communicate(timeout=150)
        assert uninstall.returncode == 0, stderr
        assert stdout.splitlines() == [f'release "{release}" uninstalled']
        assert corefile_now(cluster) == before
        # The release's objects and the hook's are gone.
        for path in (f"/apis/apps/v1/namespaces/{namespace}/deployments/{full}",
                     f"/api/v1/namespaces/{namespace}/serviceaccounts/{job}",
                     f"/apis/batch/v1/namespaces/{namespace}/jobs/{job}",
                     f"/apis/rbac.authorization.k8s.io/v1/namespaces/kube-system/roles/{job}",
                     f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{full}"):
            assert get_or_none(cluster, path) is None, path
        # Twice: helm says the release is gone and changes nothing.
        again = run_helm(env, "uninstall", release, "-n", namespace)
        assert again.returncode == 1
        assert again.stderr.splitlines() == [
            f"Error: uninstall: Release not loaded: {release}: release: not found"]
    finally:
        run_helm(env, "uninstall", release, "-n", namespace, "--no-hooks")


@pytest.mark.cluster
def test_a_failed_uninstall_hook_leaves_the_release_whole(
        cluster: LocalCluster, namespace: str, tmp_path: Path) -> None:
    """The cluster DNS ConfigMap the release wires is gone: the hook says so and
    stops nothing, helm uninstall fails, and the release is still deployed with
    all its objects and its replicas."""
    env = helm_env(cluster, tmp_path)
    release, full = "broken", "broken-aliasd"
    out = run_helm(env, "install", release, str(CHART), "-n", namespace,
                   "--set", "coredns.mode=corefile",
                   "--set", "coredns.configMap=kube-system/no-such-coredns")
    assert out.returncode == 0, out.stderr
    try:
        job = f"{full}-uninstall"
        uninstall = subprocess.Popen(
            [str(ensure_binaries() / "helm"), "uninstall", release, "-n", namespace,
             "--timeout", "120s"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        wait_for(lambda: get_or_none(
            cluster, f"/apis/batch/v1/namespaces/{namespace}/jobs/{job}"),
            timeout=60, what="helm creating the hook Job")
        hook = run_hook_job(cluster, namespace, job, tmp_path)
        assert hook.wait(timeout=60) == 2
        assert (tmp_path / f"{job}.log").read_text().splitlines() == [
            "aliasd: error: ConfigMap kube-system/no-such-coredns not found; nothing was changed"]
        finish_job(cluster, namespace, job, succeeded=False)
        _, stderr = uninstall.communicate(timeout=150)
        assert uninstall.returncode == 1
        # The reason is the Job's: its log says why (kubectl logs job/...).
        assert f"\t* job {job} failed: BackoffLimitExceeded" in stderr.splitlines(), stderr
        assert replicas(cluster, namespace, full) == 2
        # Helm 3 marks the release before it runs the hook, and leaves the mark;
        # every object of the release is still there.
        status = run_helm(env, "status", release, "-n", namespace, "-o", "json")
        assert json.loads(status.stdout)["info"]["status"] == "uninstalling"
        manifest = run_helm(env, "get", "manifest", release, "-n", namespace).stdout
        for d in yaml.safe_load_all(manifest):
            if d:
                assert get_or_none(cluster, f"{resource_path(d)}/{d['metadata']['name']}"), key(d)
        # The failed Job stays, for its pod's log.
        assert get_or_none(cluster, f"/apis/batch/v1/namespaces/{namespace}/jobs/{job}")
    finally:
        # With nothing to restore, --no-hooks skips the hook.
        done = run_helm(env, "uninstall", release, "-n", namespace, "--no-hooks")
        assert done.returncode == 0, done.stderr


@pytest.mark.cluster
def test_helm_upgrade_and_rollback_leave_the_hook_alone(
        cluster: LocalCluster, namespace: str, tmp_path: Path) -> None:
    """An upgrade to an image that cannot start, then a rollback: the API server
    takes both (no immutable field changes, e.g. the selector), and neither runs
    the uninstall hook. That the old pods keep serving through such an upgrade
    is the Deployment controller's part, measured in kind."""
    env = helm_env(cluster, tmp_path)
    release, full = "rolling", "rolling-aliasd"
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments/{full}"

    def image() -> str:
        (c,) = cluster.request("GET", path)["spec"]["template"]["spec"]["containers"]
        value: str = c["image"]
        return value

    typo = run_helm(env, "install", release, str(CHART), "-n", namespace, "--set", "replica=3")
    assert typo.returncode == 1
    assert [line for line in typo.stderr.splitlines() if line] == [
        "Error: INSTALLATION FAILED: values don't meet the specifications of the schema(s) "
        "in the following chart(s):", "aliasd:",
        "- at '': additional properties 'replica' not allowed"]
    assert run_helm(env, "install", release, str(CHART), "-n", namespace).returncode == 0
    try:
        assert image() == "ghcr.io/aliasd/aliasd:0.1.0"
        out = run_helm(env, "upgrade", release, str(CHART), "-n", namespace,
                       "--set", "image.tag=does-not-exist", "--set", "replicas=3")
        assert out.returncode == 0, out.stderr
        assert image() == "ghcr.io/aliasd/aliasd:does-not-exist"
        out = run_helm(env, "rollback", release, "1", "-n", namespace)
        assert out.returncode == 0, out.stderr
        assert image() == "ghcr.io/aliasd/aliasd:0.1.0"
        assert replicas(cluster, namespace, full) == 2
        history = json.loads(run_helm(env, "history", release, "-n", namespace,
                                      "-o", "json").stdout)
        assert [(h["revision"], h["status"]) for h in history] == [
            (1, "superseded"), (2, "superseded"), (3, "deployed")]
        assert get_or_none(
            cluster, f"/apis/batch/v1/namespaces/{namespace}/jobs/{full}-uninstall") is None
        assert corefile_now(cluster) == cluster.initial_corefile
    finally:
        run_helm(env, "uninstall", release, "-n", namespace, "--no-hooks")
