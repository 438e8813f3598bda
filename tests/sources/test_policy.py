"""The name policy against the real API server: a claim
outside its namespace's allowed names is not served and gets its Event; the
policy changed on the Namespace takes effect without a restart; the default
with {namespace}; takeovers are subject to it; a malformed pattern fails
closed; tenants cannot edit their own Namespace (the shipped RBAC example)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.rcode
import pytest
import yaml

from aliasd_dev import ClusterError, LocalCluster
from tests.support import ROOT
from tests.support.dnsclient import a_records, dig_short, query, rcode
from tests.support.kube import events, service
from tests.support.process import AliasdProcess, metric, metric_or_none, run_aliasd
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster

ANNOTATION = "aliasd.io/allowed-names"


def set_allowed(cluster: LocalCluster, ns: str, value: str | None) -> None:
    """Set (None: remove) the Namespace's aliasd.io/allowed-names, as an admin does."""
    cluster.request("PATCH", f"/api/v1/namespaces/{ns}",
                    {"metadata": {"annotations": {ANNOTATION: value}}},
                    content_type="application/merge-patch+json")


def invalid_of(p: AliasdProcess, owner: str) -> list[dict[str, Any]]:
    _, doc = p.http("/v1/aliases")
    return [i for i in doc["invalid"] if i["owner"] == owner]


def test_claim_outside_allowed_names_is_not_served_until_the_policy_allows_it(
        cluster: LocalCluster, aliasd: AliasdProcess, namespace: str) -> None:
    ns = namespace
    set_allowed(cluster, ns, f"{ns}.internal, *.{ns}.internal")
    own, squat = f"api.{ns}.internal", f"pay-{ns}.internal"
    ip = service(cluster, ns, "api", alias=f"{own}, {squat}")["spec"]["clusterIP"]
    message = (f"{squat}. is not among the names namespace {ns} may claim "
               f"({ANNOTATION} on Namespace {ns}: '{ns}.internal, *.{ns}.internal')")
    got = wait_for(lambda: events(cluster, ns, "api"), what="the AliasNotAllowed Event")
    assert got == [("AliasNotAllowed", message)]
    assert a_records(aliasd, own + ".") == [ip]
    assert rcode(aliasd, squat + ".") == "NXDOMAIN"  # not served
    assert invalid_of(aliasd, f"Service {ns}/api") == [
        {"name": squat, "owner": f"Service {ns}/api", "reason": message}]
    assert metric(aliasd, "aliasd_invalid_aliases_by_reason", reason="AliasNotAllowed") == 1.0
    updates = metric(aliasd, "aliasd_policy_updates_total")

    # A Namespace change that leaves the annotation alone costs nothing ...
    cluster.request("PATCH", f"/api/v1/namespaces/{ns}",
                    {"metadata": {"labels": {"team": "shop"}}},
                    content_type="application/merge-patch+json")
    # ... and the admin allowing the name takes effect live, no restart. (One
    # watch stream: once this change is seen, so was the label change before it.)
    set_allowed(cluster, ns, f"*.{ns}.internal, {squat}")
    wait_for(lambda: a_records(aliasd, squat + ".") == [ip], what="the policy change")
    assert a_records(aliasd, own + ".") == [ip]
    assert metric(aliasd, "aliasd_policy_updates_total") == updates + 1
    assert invalid_of(aliasd, f"Service {ns}/api") == []
    assert metric_or_none(aliasd, "aliasd_invalid_aliases_by_reason",
                          reason="AliasNotAllowed") is None

    # Taking a name away withdraws it just as live; removing the annotation
    # brings back the default (here: any name in the served zones).
    set_allowed(cluster, ns, squat)
    wait_for(lambda: rcode(aliasd, own + ".") == "NXDOMAIN", what="the name withdrawn")
    assert a_records(aliasd, squat + ".") == [ip]
    set_allowed(cluster, ns, None)
    wait_for(lambda: a_records(aliasd, own + ".") == [ip], what="the default again")
    assert aliasd.proc.poll() is None and "Traceback" not in aliasd.logs()


def test_a_wildcard_over_another_namespace_needs_a_grant(
        cluster: LocalCluster, aliasd: AliasdProcess, namespace: str,
        other_namespace: str) -> None:
    team_a, team_b = namespace, other_namespace
    api = service(cluster, team_b, "api", alias=f"api.{team_b}.internal")["spec"]["clusterIP"]
    gw = service(cluster, team_a, "gw", alias=f"*.{team_b}.internal")["spec"]["clusterIP"]
    got = wait_for(lambda: events(cluster, team_a, "gw"), what="the AliasNotAllowed Event")
    assert got == [("AliasNotAllowed", (
        f"*.{team_b}.internal. is a wildcard, which answers every unclaimed name under "
        f"{team_b}.internal.: a namespace may claim one only where its allowed names grant "
        f"it, and namespace {team_a} has none (no {ANNOTATION} on the Namespace, no "
        "--default-allowed-names)"))]
    # team-b's typos and names not deployed yet stay NXDOMAIN; its names answer.
    assert a_records(aliasd, f"api.{team_b}.internal.") == [api]
    assert rcode(aliasd, f"typo.{team_b}.internal.") == "NXDOMAIN"
    assert rcode(aliasd, f"not-yet.{team_b}.internal.") == "NXDOMAIN"
    # The platform team grants team-a the subtree: the wildcard answers.
    set_allowed(cluster, team_a, f"*.{team_b}.internal")
    wait_for(lambda: a_records(aliasd, f"typo.{team_b}.internal.") == [gw],
             what="the granted wildcard")
    assert a_records(aliasd, f"api.{team_b}.internal.") == [api]  # RFC 4592: not synthesized


@pytest.fixture
def strict(cluster: LocalCluster, tmp_path: Path) -> Iterator[AliasdProcess]:
    """aliasd on a strict cluster: each namespace may claim names under its own."""
    with run_aliasd(["--kubeconfig", str(cluster.kubeconfig), "--zone", "internal",
                     "--default-allowed-names", "*.{namespace}.internal",
                     "--allow-takeover", "example.com"], tmp=tmp_path) as p:
        yield p


def test_default_allowed_names_with_the_namespace_placeholder(
        cluster: LocalCluster, strict: AliasdProcess, namespace: str) -> None:
    ns = namespace
    ip = service(cluster, ns, "web", alias=f"web.{ns}.internal, {ns}.internal, "
                                           f"web-{ns}.internal")["spec"]["clusterIP"]
    wait_for(lambda: a_records(strict, f"web.{ns}.internal.") == [ip], what="the alias")
    got = wait_for(lambda: sorted(events(cluster, ns, "web")) if len(
        events(cluster, ns, "web")) == 2 else None, what="two AliasNotAllowed Events")
    rule = f"(--default-allowed-names: '*.{ns}.internal')"
    assert got == sorted([
        ("AliasNotAllowed", f"web-{ns}.internal. is not among the names namespace {ns} "
                            f"may claim {rule}"),
        ("AliasNotAllowed", f"{ns}.internal. is not among the names namespace {ns} "
                            f"may claim {rule}")])
    # *.{namespace}.internal does not match {namespace}.internal itself (RFC 4592):
    # not served, only an empty non-terminal above web.{namespace}.internal (NODATA).
    msg = query(strict.dns, f"{ns}.internal.", "A")
    assert (dns.rcode.to_text(msg.rcode()), msg.answer) == ("NOERROR", [])
    assert rcode(strict, f"web-{ns}.internal.") == "NXDOMAIN"
    assert metric(strict, "aliasd_invalid_aliases_by_reason", reason="AliasNotAllowed") == 2.0
    # The annotation replaces the default for that namespace.
    set_allowed(cluster, ns, "*")
    wait_for(lambda: a_records(strict, f"{ns}.internal.") == [ip], what="annotation wins")
    assert a_records(strict, f"web-{ns}.internal.") == [ip]


def test_takeover_refused_by_the_policy(cluster: LocalCluster, strict: AliasdProcess,
                                        namespace: str) -> None:
    ns = namespace
    name = f"legacy-{ns}.example.com"
    svc = cluster.request("POST", f"/api/v1/namespaces/{ns}/services", {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "grab", "annotations": {"aliasd.io/takeover": name}},
        "spec": {"ports": [{"name": "http", "port": 80}]}})
    ip = svc["spec"]["clusterIP"]
    # --allow-takeover example.com allows it, the namespace's default does not.
    got = wait_for(lambda: events(cluster, ns, "grab"), what="the AliasNotAllowed Event")
    assert got == [("AliasNotAllowed", f"{name}. is not among the names namespace {ns} may "
                                       f"claim (--default-allowed-names: '*.{ns}.internal')")]
    assert rcode(strict, name + ".") == "REFUSED"  # not taken over: not aliasd's name
    assert [i["name"] for i in invalid_of(strict, f"Service {ns}/grab")] == [name]
    _, doc = strict.http("/v1/aliases")
    assert name + "." not in [a["name"] for a in doc["aliases"]]
    # Allowed by both: taken over.
    set_allowed(cluster, ns, name)
    wait_for(lambda: a_records(strict, name + ".") == [ip], what="the takeover")
    _, doc = strict.http("/v1/aliases")
    assert [a["takeover"] for a in doc["aliases"] if a["name"] == name + "."] == [True]


def test_malformed_pattern_fails_closed_and_is_reported(
        cluster: LocalCluster, aliasd: AliasdProcess, namespace: str) -> None:
    ns = namespace
    value = f"a.{ns}.internal, b*.{ns}.internal"
    set_allowed(cluster, ns, value)
    bad = (f"'b*.{ns}.internal' ('*' is allowed only as the whole first label "
           "('*.shop.internal') or alone ('*'))")
    got = wait_for(lambda: events(cluster, "default", ns), what="the Namespace Event")
    assert got == [("InvalidAllowedNames",
                    f"{ANNOTATION} on Namespace {ns}: malformed patterns match nothing (fail "
                    f"closed): {bad}; the other patterns still apply")]
    assert f"Namespace {ns} InvalidAllowedNames" in aliasd.logs()
    ip = service(cluster, ns, "web", alias=f"a.{ns}.internal, bb.{ns}.internal"
                 )["spec"]["clusterIP"]
    # The tenant's own Event says why (the pattern that might look like it allows it).
    got = wait_for(lambda: events(cluster, ns, "web"), what="the Service Event")
    assert got == [("AliasNotAllowed",
                    f"bb.{ns}.internal. is not among the names namespace {ns} may claim "
                    f"({ANNOTATION} on Namespace {ns}: '{value}'); malformed, so matching "
                    f"nothing: {bad}")]
    assert a_records(aliasd, f"a.{ns}.internal.") == [ip]
    assert rcode(aliasd, f"bb.{ns}.internal.") == "NXDOMAIN"


def test_tenants_cannot_edit_their_own_namespace(cluster: LocalCluster,
                                                 namespace: str) -> None:
    docs = list(yaml.safe_load_all((ROOT / "examples/tenant/rbac.yaml").read_text()))
    for doc in docs:
        doc["metadata"]["namespace"] = namespace
        cluster.apply(doc)
    set_allowed(cluster, namespace, f"*.{namespace}.internal")
    service(cluster, namespace, "web", alias=f"web.{namespace}.internal")

    def status(group: str, method: str, path: str, body: dict[str, Any]) -> int:
        """The HTTP status of a request by user alice in ``group`` (impersonated)."""
        try:
            cluster.request(method, path, body, content_type="application/merge-patch+json",
                            headers={"Impersonate-User": "alice", "Impersonate-Group": group})
        except ClusterError as e:
            return int(re.search(r"HTTP (\d+)", str(e)).group(1))  # type: ignore[union-attr]
        return 200

    grab = {"metadata": {"annotations": {ANNOTATION: "*"}}}
    # The tenant edits its own Services (so its aliases; polled: the API server's
    # RBAC cache takes a moment to see a new binding) ...
    rename = {"metadata": {"annotations": {"aliasd.io/alias": "payments.internal"}}}
    wait_for(lambda: status("shop-team", "PATCH",
                            f"/api/v1/namespaces/{namespace}/services/web", rename) == 200,
             what="the RoleBinding to apply")
    # ... but not its Namespace, nor anyone else's Services.
    assert status("shop-team", "PATCH", f"/api/v1/namespaces/{namespace}", grab) == 403
    assert status("shop-team", "PATCH", "/api/v1/namespaces/default/services/kubernetes",
                  grab) == 403
    ns = cluster.request("GET", f"/api/v1/namespaces/{namespace}")
    assert ns["metadata"]["annotations"][ANNOTATION] == f"*.{namespace}.internal"
    # Nor do the built-in admin/edit/view roles (the rules they aggregate) write Namespaces.
    for role in ("admin", "edit", "view"):
        rules = cluster.request("GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles/"
                                f"system:aggregate-to-{role}")["rules"]
        verbs = {v for r in rules if {"namespaces", "*"} & set(r.get("resources", []))
                 for v in r["verbs"]}
        assert verbs <= {"get", "list", "watch"}, (role, verbs)

    # The caveat docs/guides/name-policy.md states: a Role in the namespace that covers the
    # resource "namespaces" (here every resource, "*") does reach the Namespace
    # object itself, because a request for /api/v1/namespaces/NAME is authorized
    # as if it were inside NAME. So never give tenants such a Role.
    cluster.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                   "metadata": {"name": "everything", "namespace": namespace},
                   "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]})
    cluster.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                   "metadata": {"name": "everything", "namespace": namespace},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                               "name": "everything"},
                   "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
                                 "name": "too-broad"}]})
    wait_for(lambda: status("too-broad", "PATCH", f"/api/v1/namespaces/{namespace}",
                            grab) == 200, what="the broad RoleBinding to apply")
    ns = cluster.request("GET", f"/api/v1/namespaces/{namespace}")
    assert ns["metadata"]["annotations"][ANNOTATION] == "*"


def test_list_computed_from_the_cluster_applies_the_policy(cluster: LocalCluster,
                                                          namespace: str) -> None:
    ns = namespace
    set_allowed(cluster, ns, f"*.{ns}.internal")
    ip = service(cluster, ns, "web", alias=f"web.{ns}.internal, pay-{ns}.internal"
                 )["spec"]["clusterIP"]

    def listed(*flags: str) -> dict[str, Any]:
        r = subprocess.run([sys.executable, "-m", "aliasd", "list", "-o", "json",
                            "--kubeconfig", str(cluster.kubeconfig), "--namespaces", ns, *flags],
                           capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
        assert r.returncode == 0, r.stderr
        doc: dict[str, Any] = json.loads(r.stdout)
        return doc

    doc = listed()
    assert [(a["name"], a["addresses"]) for a in doc["aliases"]] == [
        (f"web.{ns}.internal.", [ip])]
    assert doc["invalid"] == [{
        "name": f"pay-{ns}.internal", "owner": f"Service {ns}/web",
        "reason": f"pay-{ns}.internal. is not among the names namespace {ns} may claim "
                  f"({ANNOTATION} on Namespace {ns}: '*.{ns}.internal')"}]
    # Without the annotation: the default given to `aliasd list`, as to `aliasd run`.
    set_allowed(cluster, ns, None)
    doc = listed("--default-allowed-names", "pay-{namespace}.internal")
    assert [a["name"] for a in doc["aliases"]] == [f"pay-{ns}.internal."]
    assert [i["name"] for i in doc["invalid"]] == [f"web.{ns}.internal"]
    assert listed()["invalid"] == []


def test_state_file_keeps_the_policy_for_a_restart_with_the_api_server_down(
        cluster: LocalCluster, namespace: str, tmp_path: Path) -> None:
    """With --default-allowed-names, a name only the Namespace's annotation
    allows keeps answering after a restart while the API server is down: the
    state file holds the annotation the stored claims were validated with."""
    ns = namespace
    state = tmp_path / "state.json"
    args = ["--kubeconfig", str(cluster.kubeconfig), "--zone", "internal",
            "--namespaces", ns, "--default-allowed-names", "*.{namespace}.internal",
            "--state-file", str(state)]
    set_allowed(cluster, ns, f"*.{ns}.internal, pay-{ns}.internal")
    ip = service(cluster, ns, "pay", alias=f"pay-{ns}.internal, api.{ns}.internal"
                 )["spec"]["clusterIP"]
    with run_aliasd(args, tmp=tmp_path) as p:
        wait_for(lambda: a_records(p, f"pay-{ns}.internal.") == [ip], what="the alias")

        def stored() -> list[str]:
            doc = json.loads(state.read_text()) if state.exists() else {}
            return sorted(c["name"] for c in doc.get("claims", ()))

        wait_for(lambda: stored() == [f"api.{ns}.internal", f"pay-{ns}.internal"],
                 what="the claims in the state file")
    cluster.stop_apiserver()
    try:
        with run_aliasd(args, tmp=tmp_path, wait_ready=False) as p:
            wait_for(lambda: dig_short(p.dns, f"pay-{ns}.internal.", "A") == [ip],
                     what="the annotation-allowed name answered from the state file")
            assert dig_short(p.dns, f"api.{ns}.internal.", "A") == [ip]
            assert p.http("/readyz")[1]["degraded"] is True
            _, doc = p.http("/v1/aliases")
            assert doc["invalid"] == []
    finally:
        cluster.start_apiserver()


def test_a_tenant_namespace_with_a_star_gets_nothing_under_the_platform_policy(
        cluster: LocalCluster, namespace: str, other_namespace: str, tmp_path: Path) -> None:
    """With --policy-configmap, the policy is the platform team's ConfigMap in
    aliasd's namespace: a namespace a tenant created with aliasd.io/allowed-names
    '*' gets only the default, until the ConfigMap grants it more."""
    tenant, system = namespace, other_namespace
    set_allowed(cluster, tenant, "*")  # what a tenant may set at creation (Capsule, HNC)
    args = ["--kubeconfig", str(cluster.kubeconfig), "--zone", "internal",
            "--namespaces", tenant, "--default-allowed-names", "*.{namespace}.internal",
            "--policy-configmap", f"{system}/aliasd-policy"]
    ip = service(cluster, tenant, "pay", alias=f"payments.internal, api.{tenant}.internal"
                 )["spec"]["clusterIP"]
    with run_aliasd(args, tmp=tmp_path) as p:
        wait_for(lambda: a_records(p, f"api.{tenant}.internal.") == [ip], what="the alias")
        assert dig_short(p.dns, "payments.internal.", "A") == []
        assert rcode(p, "payments.internal.") == "NXDOMAIN"
        assert invalid_of(p, f"Service {tenant}/pay") == [{
            "name": "payments.internal", "owner": f"Service {tenant}/pay",
            "reason": f"payments.internal. is not among the names namespace {tenant} may "
                      f"claim (--default-allowed-names: '*.{tenant}.internal')"}]
        # The platform team grants the name in its ConfigMap: served, live.
        cluster.request("POST", f"/api/v1/namespaces/{system}/configmaps", {
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "aliasd-policy"},
            "data": {tenant: "payments.internal"}})
        wait_for(lambda: a_records(p, "payments.internal.") == [ip], what="the granted name")
        # The ConfigMap replaces the default for that namespace, as an annotation would.
        assert rcode(p, f"api.{tenant}.internal.") == "NXDOMAIN"
        assert invalid_of(p, f"Service {tenant}/pay")[0]["reason"] == (
            f"api.{tenant}.internal. is not among the names namespace {tenant} may claim "
            f"(ConfigMap {system}/aliasd-policy, key {tenant}: 'payments.internal')")
    r = subprocess.run([sys.executable, "-m", "aliasd", "list", "-o", "json", *args[:2],
                        *args[4:]], capture_output=True, text=True, cwd=ROOT, timeout=60,
                       check=False)
    assert r.returncode == 0, r.stderr
    assert [a["name"] for a in json.loads(r.stdout)["aliases"]] == ["payments.internal."]
    cluster.request("DELETE", f"/api/v1/namespaces/{system}/configmaps/aliasd-policy")
