"""Tenants in kind, as the security model promises (docs/operations/security.md):
a tenant's ServiceAccount, allowed to manage its own namespace's Services
and nothing else, cannot take another namespace's name by weight, by
wildcard or by takeover; a write to the HTTP switch with the token a pod has
for the API server is refused, and one with a token issued for aliasd is
accepted."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.kind import Kind
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

TEAM_A, TEAM_B = "tenant-a", "tenant-b"
TENANT = f"system:serviceaccount:{TEAM_A}:tenant"


def service(kind: Kind, ns: str, name: str, annotations: dict[str, str], *,
            as_user: str | None = None) -> str:
    """A ClusterIP Service (created as ``as_user`` when given); its cluster IP."""
    body = {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns, "annotations": annotations},
            "spec": {"ports": [{"name": "http", "port": 80}]}}
    who = ["--as", as_user] if as_user else []
    kind.kubectl(*who, "apply", "-f", "-", input=json.dumps(body))
    return kind.cluster_ip(ns, name)


def dig(kind: Kind, client: str, name: str) -> list[str]:
    return kind.kubectl("exec", client, "--", "dig", "+short", name).split()


def reasons(kind: Kind, ns: str, name: str) -> set[str]:
    """The reasons of the Events on one object (every replica records its own)."""
    items: Any = kind.json("-n", ns, "get", "events", "--field-selector",
                           f"involvedObject.name={name}")
    return {e["reason"] for e in items["items"]}


@pytest.fixture(scope="module")
def tenants(kind: Kind) -> Iterator[None]:
    """Two namespaces; in tenant-a a ServiceAccount with the tenant Role of
    examples/tenant/rbac.yaml (its own Services and ServiceEntries only)."""
    for ns in (TEAM_A, TEAM_B):
        kind.kubectl("apply", "-f", "-", input=kind.kubectl(
            "create", "namespace", ns, "--dry-run=client", "-o", "yaml"))
    kind.kubectl("-n", TEAM_A, "create", "serviceaccount", "tenant")
    kind.kubectl("-n", TEAM_A, "create", "role", "tenant",
                 "--verb=get,list,watch,create,update,patch,delete", "--resource=services")
    kind.kubectl("-n", TEAM_A, "create", "rolebinding", "tenant", "--role=tenant",
                 f"--serviceaccount={TEAM_A}:tenant")
    yield
    for ns in (TEAM_A, TEAM_B):
        kind.kubectl("delete", "namespace", ns, "--wait=false")


def test_a_tenant_cannot_take_another_namespaces_name(kind: Kind, client: str,
                                                     tenants: None) -> None:
    # Team B runs a 50/50 blue/green on pay-b.internal and answers api.tenant-b.internal.
    blue = service(kind, TEAM_B, "blue", {"aliasd.io/alias": "pay-b.internal",
                                          "aliasd.io/weight": "50"})
    green = service(kind, TEAM_B, "green", {"aliasd.io/alias": "pay-b.internal",
                                            "aliasd.io/weight": "50"})
    api = service(kind, TEAM_B, "api", {"aliasd.io/alias": f"api.{TEAM_B}.internal"})
    wait_for(lambda: dig(kind, client, "pay-b.internal") in ([blue], [green]), timeout=60,
             what="team B's weighted name")
    wait_for(lambda: dig(kind, client, f"api.{TEAM_B}.internal") == [api], timeout=60,
             what="team B's name")
    kubernetes = dig(kind, client, "kubernetes.default.svc.cluster.local")
    assert kubernetes, "the cluster's own name answers"
    # The tenant may create Services in its namespace, and tries all three.
    assert kind.kubectl("auth", "can-i", "create", "services", "-n", TEAM_A, "--as",
                        TENANT).strip() == "yes"
    assert kind.kubectl("auth", "can-i", "patch", f"namespace/{TEAM_A}", "--as", TENANT,
                        check=False).strip() == "no"
    heavy = service(kind, TEAM_A, "heavy", {"aliasd.io/alias": "pay-b.internal",
                                            "aliasd.io/weight": "10000"}, as_user=TENANT)
    wild = service(kind, TEAM_A, "wild", {"aliasd.io/alias": f"*.{TEAM_B}.internal"},
                   as_user=TENANT)
    take = service(kind, TEAM_A, "take",
                   {"aliasd.io/takeover": "kubernetes.default.svc.cluster.local"},
                   as_user=TENANT)
    wait_for(lambda: reasons(kind, TEAM_A, "heavy") == {"AliasConflict"}, timeout=60,
             what="the weight hijack refused")
    wait_for(lambda: reasons(kind, TEAM_A, "wild") == {"AliasNotAllowed"}, timeout=60,
             what="the wildcard refused")
    wait_for(lambda: reasons(kind, TEAM_A, "take") == {"TakeoverNotAllowed"}, timeout=60,
             what="the takeover refused")
    # Asked through the cluster's DNS, nothing of team A's answers.
    seen = Counter(ip for _ in range(30) for ip in dig(kind, client, "pay-b.internal"))
    assert set(seen) <= {blue, green} and heavy not in seen, seen
    assert dig(kind, client, f"typo.{TEAM_B}.internal") == []  # NXDOMAIN, not the wildcard
    assert wild not in dig(kind, client, f"api.{TEAM_B}.internal")
    assert dig(kind, client, "kubernetes.default.svc.cluster.local") == kubernetes
    assert take not in kubernetes


CALL = r"""
import json, sys, urllib.error, urllib.request
method, token = sys.argv[1:3]
body = json.dumps({"addresses": ["10.0.0.9"], "ttl": 5}).encode() if method == "PUT" else None
req = urllib.request.Request(
    "http://aliasd.aliasd-system.svc:8080/v1/overrides/tenant-switch.internal",
    method=method, data=body, headers={"Authorization": "Bearer " + token})
try:
    print(urllib.request.urlopen(req, timeout=10).status)
except urllib.error.HTTPError as e:
    print(e.code)
"""


def test_a_write_needs_a_token_issued_for_aliasd(kind: Kind, client: str,
                                                 tenants: None) -> None:
    kind.kubectl("-n", TEAM_A, "create", "serviceaccount", "hook")
    kind.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                        "items": [{
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "tenant-switch", "namespace": "aliasd-system"},
        "rules": [{"apiGroups": ["aliasd.io"], "resources": ["overrides"],
                   "resourceNames": ["tenant-switch.internal"], "verbs": ["update", "delete"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": "tenant-switch", "namespace": "aliasd-system"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                     "name": "tenant-switch"},
         "subjects": [{"kind": "ServiceAccount", "name": "hook", "namespace": TEAM_A}]}]}))
    kind.pod("hook", "aliasd:dev", ["python", "-c", "import time; time.sleep(86400)"],
             namespace=TEAM_A, service_account="hook")
    for_api_server = kind.kubectl("-n", TEAM_A, "create", "token", "hook").strip()
    for_aliasd = kind.kubectl("-n", TEAM_A, "create", "token", "hook", "--audience",
                              "aliasd").strip()

    def call(method: str, token: str) -> str:
        return kind.kubectl("-n", TEAM_A, "exec", "hook", "--", "python", "-c", CALL,
                            method, token).strip()

    try:
        assert call("PUT", for_api_server) == "401"
        assert call("PUT", for_aliasd) in ("200", "201")
        wait_for(lambda: dig(kind, client, "tenant-switch.internal") == ["10.0.0.9"],
                 timeout=30, what="the override through CoreDNS")
        assert call("DELETE", for_api_server) == "401"
        assert call("DELETE", for_aliasd) == "200"
    finally:
        kind.kubectl("-n", "aliasd-system", "delete", "role,rolebinding", "tenant-switch",
                     "--ignore-not-found")
