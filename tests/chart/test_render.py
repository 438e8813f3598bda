"""charts/aliasd rendered by helm (no cluster): with its default values it
renders what the kustomize base renders; its schema refuses a typo by name;
every enum of the schema renders and lints; values reach the objects."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.chart import (
    CHART,
    OPTIONAL,
    helm,
    is_hook,
    key,
    kustomize,
    one,
    render,
)


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
    (["readAccess=closed"], "'/readAccess'", "value must be one of 'open', 'token'"),
    (["metrics.port=70000"], "'/metrics/port'", "maximum: got 70,000, want 65,535"),
])
def test_a_values_typo_fails_naming_the_key(values: list[str], path: str,
                                            problem: str) -> None:
    sets = [a for v in values for a in ("--set", v)]
    out = helm("template", "aliasd", str(CHART), *sets)
    assert out.returncode != 0
    assert f"- at {path}: {problem}" in out.stderr.splitlines(), out.stderr


@pytest.mark.parametrize("port", [5353, 8080])
def test_a_metrics_port_that_is_taken_fails_naming_it(port: int) -> None:
    out = helm("template", "aliasd", str(CHART), "--set", f"metrics.port={port}")
    assert out.returncode == 1
    assert out.stderr.splitlines()[0] == (
        "Error: execution error at (aliasd/templates/deployment.yaml:22:10): metrics.port "
        f"{port} is taken (5353 is DNS, 8080 HTTP): choose another, e.g. 9153"), out.stderr


def enums(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, list[Any]]]:
    """(dotted key, allowed values) of every enum in the schema."""
    if "enum" in schema:
        yield path, schema["enum"]
    for name, sub in (schema.get("properties") or {}).items():
        yield from enums(sub, f"{path}.{name}" if path else name)


def test_lint_strict_and_every_enum_value_renders() -> None:
    """What CI runs: ``helm lint --strict`` with the defaults and with every
    optional part on, and ``helm template`` with each value of each enum."""
    for values in ({}, OPTIONAL):
        out = helm("lint", "--strict", str(CHART), values=values)
        assert out.returncode == 0, out.stdout + out.stderr
    schema = json.loads((CHART / "values.schema.json").read_text())
    found = dict(enums(schema))
    assert set(found) == {"image.pullPolicy", "logFormat", "logLevel", "coredns.mode",
                          "readAccess"}
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
    assert env["ALIASD_READ_ACCESS"] == "token"
    assert env["ALIASD_METRICS_LISTEN"] == "0.0.0.0:9153"
    assert [(p["name"], p["containerPort"]) for p in c["ports"]] == [
        ("dns", 5353), ("dns-tcp", 5353), ("http", 8080), ("metrics", 9153)]
    assert dep["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == "9153"
    svc = one(docs, "Service", "edge-aliasd")
    assert [(p["name"], p["port"], p["targetPort"]) for p in svc["spec"]["ports"]][2:] == [
        ("http", 8080, "http"), ("metrics", 9153, "metrics")]
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
    assert [(sorted(p["port"] for p in rule["ports"]), rule.get("from"))
            for rule in policy["spec"]["ingress"]] == [
        (["dns", "dns-tcp"], None),
        (["http"], [{"namespaceSelector": {"matchLabels": {"team": "platform"}}}]),
        (["metrics"], [{"namespaceSelector": {"matchLabels": {"team": "monitoring"}}}])]
    assert one(docs, "ServiceMonitor", "edge-aliasd")["spec"]["endpoints"][0]["port"] == (
        "metrics")
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


