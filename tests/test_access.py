"""Who may switch an override, against the real API server:
Kubernetes bearer tokens are reviewed (TokenReview) and each write authorized
by RBAC (SubjectAccessReview on overrides.aliasd.io named after the alias);
every write, allowed or refused, leaves an Event on the overrides ConfigMap."""

from __future__ import annotations

import contextlib
import json
import re
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from aliasd.access import REFUSED_BURST, REFUSED_EVERY
from aliasd_dev import ClusterError, LocalCluster
from tests.support.dnsclient import a_records
from tests.support.kube import events, service
from tests.support.process import AliasdProcess, cli, http_json, metric_or_none, run_aliasd
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster

STATIC = "static-t0ken-for-standalone-hooks"


def sa_token(cluster: LocalCluster, ns: str, name: str, *,
             audiences: list[str] | None = None) -> str:
    """A token for the ServiceAccount ``name`` (created if need be), issued for
    ``audiences`` (default: aliasd's), as ``kubectl create token NAME
    --audience aliasd`` mints it; ``[]``: the API server's own audience."""
    with contextlib.suppress(ClusterError):  # exists
        cluster.request("POST", f"/api/v1/namespaces/{ns}/serviceaccounts", {
            "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}})
    spec: dict[str, Any] = {"expirationSeconds": 3600}
    if audiences != []:
        spec["audiences"] = audiences or ["aliasd"]
    token: str = cluster.request(
        "POST", f"/api/v1/namespaces/{ns}/serviceaccounts/{name}/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
         "spec": spec})["status"]["token"]
    return token


def allow(cluster: LocalCluster, ns: str, sa: str, names: list[str], verbs: list[str]) -> None:
    """A Role in the overrides ConfigMap's namespace: these verbs on these aliases."""
    rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}"
    cluster.request("POST", f"{rbac}/roles", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": f"{sa}-overrides"},
        "rules": [{"apiGroups": ["aliasd.io"], "resources": ["overrides"],
                   "resourceNames": names, "verbs": verbs}]})
    cluster.request("POST", f"{rbac}/rolebindings", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": f"{sa}-overrides"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                    "name": f"{sa}-overrides"},
        "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}]})


@pytest.fixture
def aliasd(cluster: LocalCluster, namespace: str, tmp_path: Path) -> Iterator[AliasdProcess]:
    (tmp_path / "token").write_text(STATIC + "\n")
    args = ["--kubeconfig", str(cluster.kubeconfig), "--zone", "internal",
            "--namespaces", namespace, "--overrides-configmap", f"{namespace}/aliasd-overrides",
            "--api-token-file", str(tmp_path / "token")]
    with run_aliasd(args, tmp=tmp_path) as p:
        yield p


def trail(cluster: LocalCluster, ns: str) -> list[tuple[str, str]]:
    return sorted(events(cluster, ns, "aliasd-overrides"))


def test_rbac_decides_who_may_switch_which_name_and_every_write_leaves_an_event(
        cluster: LocalCluster, namespace: str, aliasd: AliasdProcess) -> None:
    ip = service(cluster, namespace, "valkey",
                 alias="valkey-master.internal")["spec"]["clusterIP"]
    other = service(cluster, namespace, "payments",
                    alias="payments.internal")["spec"]["clusterIP"]
    wait_for(lambda: a_records(aliasd, "payments.internal.") == [other], what="the aliases")
    token = sa_token(cluster, namespace, "sentinel-hook")
    allow(cluster, namespace, "sentinel-hook", ["valkey-master.internal"], ["update", "delete"])
    hook = f"system:serviceaccount:{namespace}:sentinel-hook"

    # Allowed for its one alias: switched, answered, and `by` names the account.
    status, doc = http_json(aliasd, "PUT", "/v1/overrides/valkey-master.internal",
                            {"addresses": ["10.0.0.7"], "ttl": 5}, token=token)
    assert status == 201, doc
    assert doc["by"] == hook and doc["updated"].endswith("Z")
    assert a_records(aliasd, "valkey-master.internal.") == ["10.0.0.7"]
    status, got = http_json(aliasd, "GET", "/v1/overrides/valkey-master.internal")
    assert status == 200 and (got["by"], got["updated"]) == (hook, doc["updated"])

    # Another name: 403, nothing changes.
    status, doc = http_json(aliasd, "PUT", "/v1/overrides/payments.internal",
                            {"addresses": ["10.6.6.6"]}, token=token)
    assert status == 403, doc
    assert doc["error"] == (f"{hook} may not update overrides.aliasd.io 'payments.internal' "
                            f"in namespace {namespace} (RBAC)")
    assert a_records(aliasd, "payments.internal.") == [other]

    # A token the API server does not know: 401.
    status, doc = http_json(aliasd, "PUT", "/v1/overrides/valkey-master.internal",
                            {"addresses": ["10.6.6.6"]}, token=token[:-4] + "abcd")
    assert status == 401 and doc["error"].startswith("the bearer token is not valid"), doc
    assert a_records(aliasd, "valkey-master.internal.") == ["10.0.0.7"]

    # The static token still works (standalone hooks), known by its address.
    status, doc = http_json(aliasd, "PUT", "/v1/overrides/payments.internal",
                            {"cname": "valkey-master"}, token=STATIC)
    assert status == 201 and doc["by"] == "127.0.0.1", doc
    status, _ = http_json(aliasd, "DELETE", "/v1/overrides/payments.internal", token=token)
    assert status == 403
    assert http_json(aliasd, "DELETE", "/v1/overrides/payments.internal", token=STATIC)[0] == 200
    status, doc = http_json(aliasd, "DELETE", "/v1/overrides/valkey-master.internal",
                            token=token)
    assert status == 200 and doc["addresses"] == ["10.0.0.7"]
    assert a_records(aliasd, "valkey-master.internal.") == [ip]

    refused = f"(403: {hook} may not {{}} overrides.aliasd.io 'payments.internal' in " \
              f"namespace {namespace} (RBAC))"
    expected = sorted([
        ("OverrideSet", f"{hook} set the override of valkey-master.internal.: none -> "
                        f"10.0.0.7 (ttl 5)"),
        ("OverrideRefused", f"{hook} was refused {refused.format('update')} to update the "
                            f"override of payments.internal.; it stays none (asked: "
                            f'{{"addresses": ["10.6.6.6"]}})'),
        ("OverrideRefused", "an unauthenticated caller at 127.0.0.1 was refused (401: the "
                            "bearer token is not valid: "),
        ("OverrideSet", "127.0.0.1 set the override of payments.internal.: none -> "
                        "valkey-master.internal. (ttl 30)"),
        ("OverrideRefused", f"{hook} was refused {refused.format('delete')} to delete the "
                            f"override of payments.internal.; it stays valkey-master.internal. "
                            f"(ttl 30) (asked: none)"),
        ("OverrideDeleted", "127.0.0.1 deleted the override of payments.internal.: "
                            "valkey-master.internal. (ttl 30) -> none"),
        ("OverrideDeleted", f"{hook} deleted the override of valkey-master.internal.: 10.0.0.7 "
                            f"(ttl 5) -> none"),
    ])

    def matches() -> bool:
        got = trail(cluster, namespace)
        if len(got) != len(expected):
            return False
        # The 401's review error is the API server's wording: only its start is ours.
        return all(g[0] == e[0] and (g[1] == e[1] or (e[1].endswith(": ")
                                                      and g[1].startswith(e[1])))
                   for g, e in zip(got, expected, strict=True))

    wait_for(matches, timeout=20, what="one Event per write")
    unauthenticated = next(m for _, m in trail(cluster, namespace) if "unauthenticated" in m)
    assert unauthenticated.endswith('to update the override of valkey-master.internal.; it '
                                    'stays 10.0.0.7 (ttl 5) (asked: {"addresses": '
                                    '["10.6.6.6"]})')
    # The Events belong to the ConfigMap (kubectl describe finds them by uid).
    uid = cluster.request("GET", f"/api/v1/namespaces/{namespace}/configmaps/"
                          f"aliasd-overrides")["metadata"]["uid"]
    items = cluster.request("GET", f"/api/v1/namespaces/{namespace}/events")["items"]
    assert {e["involvedObject"]["uid"] for e in items
            if e["involvedObject"]["name"] == "aliasd-overrides"} == {uid}
    assert {e["type"] for e in items if e["reason"] == "OverrideRefused"} == {"Warning"}


def test_a_flood_of_refused_writes_is_answered_and_bounded_in_the_trail(
        cluster: LocalCluster, namespace: str, aliasd: AliasdProcess) -> None:
    ip = service(cluster, namespace, "db", alias="db.internal")["spec"]["clusterIP"]
    wait_for(lambda: a_records(aliasd, "db.internal.") == [ip], what="the alias")
    flood = 100
    start = time.monotonic()
    # Unknown tokens, one after another: each is reviewed and refused.
    statuses = Counter(http_json(aliasd, "PUT", "/v1/overrides/db.internal",
                                 {"addresses": ["10.6.6.6"]}, token=f"bogus-{i}")[0]
                       for i in range(flood))
    # And all at once: reviews beyond the limit get 429 at once, nothing else.
    with ThreadPoolExecutor(32) as pool:
        statuses += Counter(pool.map(lambda i: http_json(
            aliasd, "PUT", "/v1/overrides/db.internal", {"addresses": ["10.6.6.6"]},
            token=f"bogus-{i}")[0], range(flood, 2 * flood)))
    elapsed = time.monotonic() - start
    assert set(statuses) <= {401, 429} and statuses[401] >= flood, statuses
    # The allowed write after the flood is recorded, and answered.
    status, doc = http_json(aliasd, "PUT", "/v1/overrides/db.internal",
                            {"addresses": ["10.0.0.7"]}, token=STATIC)
    assert status == 201, doc
    assert a_records(aliasd, "db.internal.") == ["10.0.0.7"]
    wait_for(lambda: ("OverrideSet", "127.0.0.1 set the override of db.internal.: none -> "
                      "10.0.0.7 (ttl 30)") in trail(cluster, namespace),
             what="the allowed write's Event")
    # The log holds the same bounded trail as the Events, not a line per refusal.
    logged = aliasd.logs().count("was refused")

    def refused() -> list[str]:
        return [m for r, m in trail(cluster, namespace) if r == "OverrideRefused"]

    wait_for(lambda: len(refused()) == logged, what="an Event per refusal logged")
    # A burst of REFUSED_BURST, then one per REFUSED_EVERY seconds at most.
    assert REFUSED_BURST <= logged <= REFUSED_BURST + 1 + elapsed / REFUSED_EVERY
    # Once the budget refills, the next refusal says how many were left out.
    wait_for(lambda: http_json(aliasd, "PUT", "/v1/overrides/db.internal",
                               {"addresses": ["10.6.6.6"]}, token="late")[0] == 401
             and any("more refused writes before it, not recorded" in m
                     for r, m in trail(cluster, namespace) if r == "OverrideRefused"),
             timeout=REFUSED_EVERY * 3, what="the count of refusals left out")


def test_a_token_for_the_api_server_is_refused_and_decisions_are_cached(
        cluster: LocalCluster, namespace: str, aliasd: AliasdProcess) -> None:
    """The TokenReview asks for aliasd's audience: a token minted for the API
    server (which a captured request would hand to whoever read it) is
    refused, one minted with --audience aliasd is accepted; a caller repeating
    writes is reviewed once, then answered from the cache."""
    ip = service(cluster, namespace, "db", alias="db.internal")["spec"]["clusterIP"]
    wait_for(lambda: a_records(aliasd, "db.internal.") == [ip], what="the alias")
    allow(cluster, namespace, "hook", ["db.internal"], ["update", "delete"])
    for_api_server = sa_token(cluster, namespace, "hook", audiences=[])
    for_aliasd = sa_token(cluster, namespace, "hook")
    status, doc = http_json(aliasd, "PUT", "/v1/overrides/db.internal",
                            {"addresses": ["10.6.6.6"]}, token=for_api_server)
    assert status == 401 and doc["error"].startswith("the bearer token is not valid"), doc
    assert a_records(aliasd, "db.internal.") == [ip]

    def reviews() -> dict[str, float | None]:
        return {k: metric_or_none(aliasd, "aliasd_auth_reviews_total", review=k)
                for k in ("token", "token_cached", "access", "access_cached")}

    assert reviews() == {"token": 1.0, "token_cached": None, "access": None,
                         "access_cached": None}
    for i in range(5):
        status, doc = http_json(aliasd, "PUT", "/v1/overrides/db.internal",
                                {"addresses": [f"10.0.0.{i + 1}"]}, token=for_aliasd)
        assert status in (200, 201), doc
        assert doc["by"] == f"system:serviceaccount:{namespace}:hook"
    assert a_records(aliasd, "db.internal.") == ["10.0.0.5"]
    # One review of each kind for five writes; the refused token is cached too.
    assert reviews() == {"token": 2.0, "token_cached": 4.0, "access": 1.0,
                         "access_cached": 4.0}
    assert http_json(aliasd, "PUT", "/v1/overrides/db.internal", {"addresses": ["10.6.6.6"]},
                     token=for_api_server)[0] == 401
    assert reviews()["token"] == 2.0
    # Another verb is another decision.
    assert http_json(aliasd, "DELETE", "/v1/overrides/db.internal", token=for_aliasd)[0] == 200
    assert reviews() == {"token": 2.0, "token_cached": 6.0, "access": 2.0,
                         "access_cached": 4.0}


def test_an_override_tells_the_owner_of_the_name_it_shadows(
        cluster: LocalCluster, namespace: str, aliasd: AliasdProcess) -> None:
    ip = service(cluster, namespace, "db", alias="shadowed.internal")["spec"]["clusterIP"]
    wait_for(lambda: a_records(aliasd, "shadowed.internal.") == [ip], what="the alias")
    status, _ = http_json(aliasd, "PUT", "/v1/overrides/shadowed.internal",
                          {"addresses": ["10.0.0.7"]}, token=STATIC)
    assert status == 201
    assert a_records(aliasd, "shadowed.internal.") == ["10.0.0.7"]
    got = wait_for(lambda: events(cluster, namespace, "db"), what="the Event on the Service")
    assert got == [("AliasOverridden", (
        "alias shadowed.internal. answers from an HTTP override (shadowed.internal), not this "
        "claim, until the override is deleted; the overrides ConfigMap's Events say who set "
        "it"))]
    assert http_json(aliasd, "DELETE", "/v1/overrides/shadowed.internal", token=STATIC)[0] == 200
    wait_for(lambda: a_records(aliasd, "shadowed.internal.") == [ip], what="the name back")


def doc_error(p: AliasdProcess, path: str) -> str:
    """The error aliasd's API answers a tokenless GET of ``path`` with."""
    status, doc = http_json(p, "GET", path)
    assert status == 401, doc
    return str(doc["error"])


def test_reads_fenced_with_a_token_and_metrics_on_their_own_listener(
        cluster: LocalCluster, namespace: str, tmp_path: Path) -> None:
    """--read-access token: the zone, its owners and the overrides are read
    only with a token allowed to (the static one, or RBAC's list on
    aliases.aliasd.io); --metrics-listen: /metrics is served there, not on
    the HTTP port every pod reaches."""
    (tmp_path / "token").write_text(STATIC + "\n")
    args = ["--kubeconfig", str(cluster.kubeconfig), "--zone", "internal",
            "--namespaces", namespace, "--overrides-configmap", f"{namespace}/aliasd-overrides",
            "--api-token-file", str(tmp_path / "token"), "--read-access", "token",
            "--metrics-listen", "127.0.0.1:0"]
    with run_aliasd(args, tmp=tmp_path) as p:
        ip = service(cluster, namespace, "db", alias="fenced.internal")["spec"]["clusterIP"]
        wait_for(lambda: a_records(p, "fenced.internal.") == [ip], what="the alias")
        for path in ("/v1/aliases", "/v1/overrides", "/v1/overrides/fenced.internal"):
            status, doc = http_json(p, "GET", path)
            assert status == 401 and doc["error"].startswith("missing bearer token"), doc
        status, doc = http_json(p, "GET", "/v1/aliases", token=STATIC)
        assert status == 200 and [a["name"] for a in doc["aliases"]] == ["fenced.internal."]
        # aliasd list --server: refused without a token, in one line; with --token-file, read.
        server = ["list", "--server", f"http://127.0.0.1:{p.http_port}"]
        refused = cli(*server)
        assert (refused.returncode, refused.stdout) == (1, "")
        assert refused.stderr.splitlines() == [
            f"aliasd: error: http://127.0.0.1:{p.http_port}/v1/aliases: HTTP 401: "
            f"{doc_error(p, '/v1/aliases')}"]
        listed = cli(*server, "-o", "json", "--token-file", str(tmp_path / "token"))
        assert listed.returncode == 0, listed.stderr
        assert json.loads(listed.stdout) == doc
        alone = cli("list", "--token-file", str(tmp_path / "token"))
        assert (alone.returncode, alone.stderr.splitlines()) == (1, [
            "aliasd: error: --token-file is the token for --server; without it aliasd list "
            "reads the cluster with the kubeconfig"])
        reader = sa_token(cluster, namespace, "reader")
        status, doc = http_json(p, "GET", "/v1/aliases", token=reader)
        assert (status, doc["error"]) == (403, (
            f"system:serviceaccount:{namespace}:reader may not list aliases.aliasd.io in "
            f"namespace {namespace} (RBAC)"))
        rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
        cluster.request("POST", f"{rbac}/roles", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "aliasd-reader"},
            "rules": [{"apiGroups": ["aliasd.io"], "resources": ["aliases"],
                       "verbs": ["list"]}]})
        cluster.request("POST", f"{rbac}/rolebindings", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "aliasd-reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                        "name": "aliasd-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}]})
        # A refusal is cached for 10 s (aliasd.access.REFUSED_TTL): then RBAC's new answer.
        wait_for(lambda: http_json(p, "GET", "/v1/aliases", token=reader)[0] == 200,
                 timeout=30, what="the Role to apply")
        assert http_json(p, "GET", "/v1/overrides", token=reader) == (200, {"overrides": []})
        # Health stays open; /metrics is on its own listener only.
        assert p.http("/healthz") == (200, {"status": "ok"})
        assert p.http("/metrics")[0] == 404
        port = int(re.findall(r"metrics listening on 127\.0\.0\.1:(\d+)", p.logs())[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            assert r.status == 200 and b"aliasd_auth_reviews_total" in r.read()
