"""The Alias resource against the real API server with the shipped CRD: names
answer, the status says what is served and why not, Events mark condition
changes, and aliasd runs without the CRD and picks it up when it appears."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from aliasd_dev import ClusterError, LocalCluster, ensure_binaries
from tests.support import ROOT
from tests.support.dnsclient import a_records, answers, query, rcode
from tests.support.kube import events, service, watches_expired
from tests.support.process import AliasdProcess, metric_or_none, run_aliasd
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster

CRD = ROOT / "manifests" / "base" / "crd-alias.yaml"
CRD_NAME = "aliases.aliasd.io"


def aliasd_args(cluster: LocalCluster, namespace: str) -> list[str]:
    """aliasd on the session's API server, watching the test's namespace only
    (what other tests leave elsewhere is not counted); the only replica, so
    the status writer."""
    return ["--kubeconfig", str(cluster.kubeconfig), "--zone", "internal",
            "--namespaces", namespace, "--leader-election", "off"]


@pytest.fixture
def alias_crd(cluster: LocalCluster) -> None:
    """The shipped Alias CRD, installed (it stays for later tests)."""
    cluster.install_crd(yaml.safe_load(CRD.read_text()))


def path(ns: str, name: str = "") -> str:
    return f"/apis/aliasd.io/v1alpha1/namespaces/{ns}/aliases" + (f"/{name}" if name else "")


def create(cluster: LocalCluster, ns: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    obj: dict[str, Any] = cluster.request("POST", path(ns), {
        "apiVersion": "aliasd.io/v1alpha1", "kind": "Alias",
        "metadata": {"name": name}, "spec": spec})
    return obj


def conditions(cluster: LocalCluster, ns: str, name: str) -> dict[str, tuple[str, str, int]]:
    """type -> (status, reason, observedGeneration)."""
    status = cluster.request("GET", path(ns, name)).get("status") or {}
    return {c["type"]: (c["status"], c["reason"], c["observedGeneration"])
            for c in status.get("conditions") or ()}


def reasons(cluster: LocalCluster, ns: str, name: str) -> list[str]:
    return [r for r, _ in events(cluster, ns, name)]


@pytest.fixture
def aliasd(cluster: LocalCluster, alias_crd: None, namespace: str,
           tmp_path: Path) -> Iterator[AliasdProcess]:
    with run_aliasd(aliasd_args(cluster, namespace), tmp=tmp_path) as p:
        yield p


def test_targets_alias_is_ready_follows_edits_and_goes(
        cluster: LocalCluster, aliasd: AliasdProcess, namespace: str, tmp_path: Path) -> None:
    create(cluster, namespace, "db", {"hostnames": ["crd-db.internal", "crd-db-bare"],
                                      "targets": [{"address": "10.20.0.1"},
                                                  {"address": "fd00::21"}], "ttl": 12})
    wait_for(lambda: a_records(aliasd, "crd-db.internal.") == ["10.20.0.1"], what="the alias")
    assert answers(query(aliasd.dns, "crd-db-bare.internal.", "AAAA"), "AAAA") == ["fd00::21"]
    assert query(aliasd.dns, "crd-db.internal.", "A").answer[0].ttl == 12
    wait_for(lambda: conditions(cluster, namespace, "db") == {
        "Accepted": ("True", "Accepted", 1), "ResolvedRefs": ("True", "ResolvedRefs", 1),
        "Programmed": ("True", "Programmed", 1), "Ready": ("True", "Ready", 1)},
        what="Ready=True and Programmed=True")
    status = cluster.request("GET", path(namespace, "db"))["status"]
    assert status["observedGeneration"] == 1
    assert status["addresses"] == ["10.20.0.1", "fd00::21"]
    assert status["hostnames"] == ["crd-db.internal.", "crd-db-bare.internal."]
    _, doc = aliasd.http("/v1/aliases")
    assert {(a["name"], a["owner"]) for a in doc["aliases"]} >= {
        ("crd-db.internal.", f"Alias {namespace}/db")}
    assert status["serial"] <= doc["serial"]
    # kubectl wait, as a user or a pipeline would run it.
    kubectl = ensure_binaries() / "kubectl"
    done = subprocess.run([str(kubectl), "--kubeconfig", str(cluster.kubeconfig), "-n",
                           namespace, "wait", "--for=condition=Ready", "alias/db",
                           "--timeout=20s"], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    # Edit the spec: a new generation, a new answer, the status follows.
    cluster.request("PATCH", path(namespace, "db"),
                    {"spec": {"targets": [{"cname": "db.example.com"}]}},
                    content_type="application/merge-patch+json")
    wait_for(lambda: answers(query(aliasd.dns, "crd-db.internal.", "A"), "CNAME")
             == ["db.example.com."], what="the edited target")
    wait_for(lambda: conditions(cluster, namespace, "db")["Ready"] == ("True", "Ready", 2),
             what="observedGeneration 2")
    status = cluster.request("GET", path(namespace, "db"))["status"]
    assert (status["cname"], status.get("addresses")) == ("db.example.com", [])
    # Delete: the names go.
    cluster.request("DELETE", path(namespace, "db"))
    wait_for(lambda: rcode(aliasd, "crd-db.internal.") == "NXDOMAIN", what="delete")
    assert rcode(aliasd, "crd-db-bare.internal.") == "NXDOMAIN"


def test_service_ref_follows_the_service(cluster: LocalCluster, aliasd: AliasdProcess,
                                         namespace: str) -> None:
    create(cluster, namespace, "api", {"hostnames": ["crd-api.internal"],
                                       "serviceRef": {"name": "api"}})
    wait_for(lambda: conditions(cluster, namespace, "api").get("ResolvedRefs")
             == ("False", "ServiceNotFound", 1), what="ServiceNotFound")
    assert conditions(cluster, namespace, "api")["Ready"][:2] == ("False", "ServiceNotFound")
    wait_for(lambda: "ServiceNotFound" in reasons(cluster, namespace, "api"), what="the Event")
    assert rcode(aliasd, "crd-api.internal.") == "NXDOMAIN"
    ip = service(cluster, namespace, "api")["spec"]["clusterIP"]
    wait_for(lambda: a_records(aliasd, "crd-api.internal.") == [ip], what="the Service's IP")
    assert answers(query(aliasd.dns, "_http._tcp.crd-api.internal.", "SRV"), "SRV") == [
        "0 100 80 crd-api.internal."]
    wait_for(lambda: conditions(cluster, namespace, "api")["Ready"] == ("True", "Ready", 1),
             what="Ready once the Service exists")
    assert "Ready" in reasons(cluster, namespace, "api")
    # A headless Service without ready endpoints: as for an annotated Service,
    # SERVFAIL (a client retries or fails over), not a cached NXDOMAIN.
    service(cluster, namespace, "pods", headless=True)
    create(cluster, namespace, "pods", {"hostnames": ["crd-pods.internal"],
                                        "serviceRef": {"name": "pods"}})
    wait_for(lambda: conditions(cluster, namespace, "pods").get("ResolvedRefs")
             == ("False", "NoReadyEndpoints", 1), what="NoReadyEndpoints")
    wait_for(lambda: "NoReadyEndpoints" in reasons(cluster, namespace, "pods"), what="Event")
    assert rcode(aliasd, "crd-pods.internal.") == "SERVFAIL"


def test_refused_names_say_why_and_are_not_served(cluster: LocalCluster,
                                                  aliasd: AliasdProcess,
                                                  namespace: str) -> None:
    older = service(cluster, namespace, "old", alias="crd-taken.internal")
    wait_for(lambda: a_records(aliasd, "crd-taken.internal.")
             == [older["spec"]["clusterIP"]], what="the annotated Service")
    target = {"targets": [{"address": "10.20.0.9"}]}
    create(cluster, namespace, "badname", {"hostnames": ["bad_label.internal"], **target})
    create(cluster, namespace, "outside", {"hostnames": ["crd.example.com"], **target})
    create(cluster, namespace, "taken", {"hostnames": ["crd-taken.internal"], **target})
    create(cluster, namespace, "takeover", {"hostnames": ["crd.example.org"], "takeover": True,
                                            **target})
    want = {"badname": "InvalidHostname", "outside": "NotInZone", "taken": "Conflicted",
            "takeover": "TakeoverNotAllowed"}
    def refused(name: str, reason: str) -> bool:
        return conditions(cluster, namespace, name).get("Accepted") == ("False", reason, 1)

    for name, reason in want.items():
        wait_for(functools.partial(refused, name, reason),
                 what=f"{name}: Accepted=False {reason}")
        assert conditions(cluster, namespace, name)["Ready"][:2] == ("False", reason)
        wait_for(functools.partial(lambda n, r: r in reasons(cluster, namespace, n),
                                   name, reason), what=f"{name}: the {reason} Event")
    accepted = next(c for c in cluster.request("GET", path(namespace, "taken"))["status"][
        "conditions"] if c["type"] == "Accepted")
    assert f"Service {namespace}/old" in accepted["message"]  # the winner is named
    assert a_records(aliasd, "crd-taken.internal.") == [older["spec"]["clusterIP"]]
    assert rcode(aliasd, "crd.example.com.") == "REFUSED"
    # The name policy: the namespace may claim only names under its own.
    cluster.request("PATCH", f"/api/v1/namespaces/{namespace}",
                    {"metadata": {"annotations": {"aliasd.io/allowed-names": "*.team"}}},
                    content_type="application/merge-patch+json")
    create(cluster, namespace, "denied", {"hostnames": ["crd-denied.internal"], **target})
    wait_for(lambda: conditions(cluster, namespace, "denied").get("Accepted")
             == ("False", "NotAllowedByPolicy", 1), what="NotAllowedByPolicy")
    wait_for(lambda: "NotAllowedByPolicy" in reasons(cluster, namespace, "denied"),
             what="the NotAllowedByPolicy Event")
    assert rcode(aliasd, "crd-denied.internal.") == "NXDOMAIN"


def test_the_schema_refuses_what_the_api_server_can_check(cluster: LocalCluster,
                                                          alias_crd: None,
                                                          namespace: str) -> None:
    bad: list[dict[str, Any]] = [
        {"hostnames": ["a"]},  # no target form
        {"hostnames": ["a"], "serviceRef": {"name": "x"}, "targets": [{"address": "10.0.0.1"}]},
        {"hostnames": [f"h{i}" for i in range(17)], "serviceRef": {"name": "x"}},
        {"hostnames": ["a"], "targets": [{"address": "10.0.0.1", "weight": 1001}]},
        {"hostnames": ["a"], "targets": [{"address": "10.0.0.1", "cname": "b.example."}]},
        {"hostnames": [], "serviceRef": {"name": "x"}},
    ]
    for i, spec in enumerate(bad):
        with pytest.raises(ClusterError, match="HTTP 422"):
            create(cluster, namespace, f"bad-{i}", spec)
    create(cluster, namespace, "weighted", {"hostnames": ["a"], "targets": [
        {"address": "10.0.0.1", "weight": 1000}, {"cname": "b.example.com", "weight": 0}]})


def test_status_is_not_rewritten_by_a_restart(cluster: LocalCluster, alias_crd: None,
                                              namespace: str, tmp_path: Path) -> None:
    """A new process (another serial, another leader) finds every status right
    and writes nothing: the object's resourceVersion stays."""
    args = aliasd_args(cluster, namespace)
    create(cluster, namespace, "steady", {"hostnames": ["crd-steady.internal"],
                                          "targets": [{"address": "10.20.0.3"}]})
    with run_aliasd(args, tmp=tmp_path) as p:
        wait_for(lambda: conditions(cluster, namespace, "steady").get("Programmed")
                 == ("True", "Programmed", 1), what="Programmed")
        rv = cluster.request("GET", path(namespace, "steady"))["metadata"]["resourceVersion"]
    with run_aliasd(args, tmp=tmp_path) as p:
        assert a_records(p, "crd-steady.internal.") == ["10.20.0.3"]
        # A marker Alias created after the sync: once its status is written
        # and nothing waits, "steady" has been compared too, and only the
        # marker was written.
        create(cluster, namespace, "marker", {"hostnames": ["crd-marker.internal"],
                                              "targets": [{"address": "10.20.0.4"}]})
        wait_for(lambda: conditions(cluster, namespace, "marker").get("Programmed")
                 == ("True", "Programmed", 1), what="the marker's status")
        wait_for(lambda: p.http("/readyz")[1]["alias-status"]["pending"] == 0,
                 what="nothing left to compare")
        # The marker once (Ready and Programmed: the only replica serves it).
        assert p.http("/readyz")[1]["alias-status"]["writes"] == 1
    assert cluster.request("GET", path(namespace, "steady"))["metadata"][
        "resourceVersion"] == rv


def test_runs_without_the_crd_and_picks_it_up(cluster: LocalCluster, namespace: str,
                                              tmp_path: Path) -> None:
    with contextlib.suppress(ClusterError):  # not installed
        cluster.uninstall_crd(CRD_NAME)
    with run_aliasd(aliasd_args(cluster, namespace), tmp=tmp_path) as p:
        status, ready = p.http("/readyz")
        assert status == 200 and ready["ready"] is True
        cluster.install_crd(yaml.safe_load(CRD.read_text()))
        create(cluster, namespace, "late", {"hostnames": ["crd-late.internal"],
                                            "targets": [{"address": "10.20.0.5"}]})
        wait_for(lambda: a_records(p, "crd-late.internal.") == ["10.20.0.5"], timeout=30,
                 what="the Alias once the CRD appeared")


def test_state_file_serves_aliases_with_the_api_server_down(
        cluster: LocalCluster, alias_crd: None, namespace: str, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    args = [*aliasd_args(cluster, namespace), "--state-file", str(state)]
    create(cluster, namespace, "kept", {"hostnames": ["crd-kept.internal"],
                                        "targets": [{"address": "10.20.0.6"}]})
    with run_aliasd(args, tmp=tmp_path) as p:
        wait_for(lambda: a_records(p, "crd-kept.internal.") == ["10.20.0.6"], what="the alias")
        wait_for(lambda: any(c["owner"]["kind"] == "Alias" for c in json.loads(
            state.read_text())["claims"]), what="the Alias in the state file")
    cluster.stop_apiserver()
    try:
        with run_aliasd(args, tmp=tmp_path, wait_ready=False) as p:
            wait_for(lambda: a_records(p, "crd-kept.internal.") == ["10.20.0.6"],
                     what="the Alias answered from the state file")
            assert p.http("/readyz")[1]["degraded"] is True
    finally:
        cluster.start_apiserver()
        # A restarted API server serves custom resources a moment after it
        # answers: wait, so the namespace's cleanup finds (and deletes) the Alias.
        wait_for(lambda: cluster.request("GET", path(namespace))["items"],
                 what="Aliases served again")


def test_the_reference_example_is_accepted_and_served(cluster: LocalCluster,
                                                      aliasd: AliasdProcess,
                                                      namespace: str) -> None:
    """The complete example of docs/reference/alias.md, applied as it is (in
    the test's namespace): the API server accepts it and the names answer."""
    page = (ROOT / "docs" / "reference" / "alias.md").read_text()
    block = page.split("```yaml\n", 1)[1].split("```", 1)[0]
    docs = [d for d in yaml.safe_load_all(block) if d]
    assert [d["metadata"]["name"] for d in docs] == ["orders-db", "fruits"]
    ip = service(cluster, namespace, "fruits-api-service")["spec"]["clusterIP"]
    for d in docs:
        d["metadata"]["namespace"] = namespace
        cluster.apply(d)
    wait_for(lambda: a_records(aliasd, "my-fruits.internal.") == [ip], what="the Service alias")
    assert answers(query(aliasd.dns, "_http._tcp.my-fruits.internal.", "SRV"), "SRV") == [
        "0 100 80 my-fruits.internal."]
    wait_for(lambda: conditions(cluster, namespace, "orders-db").get("Ready")
             == ("True", "Ready", 1), what="the weighted Alias ready")
    assert rcode(aliasd, "orders-db-rw.internal.") == "NOERROR"


def test_only_the_leader_writes_status(cluster: LocalCluster, alias_crd: None,
                                       namespace: str, tmp_path: Path) -> None:
    """Two replicas, leader election on a Lease in the test's namespace (and no
    CoreDNS wiring, so the election is the status writer's own): both serve
    the name, exactly one writes the status."""
    args = ["--kubeconfig", str(cluster.kubeconfig), "--zone", "internal",
            "--coredns-mode", "off", "--leader-lease", f"{namespace}/aliasd",
            "--leader-lease-duration", "3", "--namespaces", namespace]
    # Two pods: two replica Leases.
    with run_aliasd(args, tmp=tmp_path, env={"POD_NAME": "replica-a"}) as a, \
            run_aliasd(args, tmp=tmp_path, env={"POD_NAME": "replica-b"}) as b:
        both_live(a, b)
        create(cluster, namespace, "shared", {"hostnames": ["crd-shared.internal"],
                                              "targets": [{"address": "10.20.0.7"}]})
        for p in (a, b):
            wait_for(functools.partial(lambda p: a_records(p, "crd-shared.internal.")
                                       == ["10.20.0.7"], p), what="both replicas serve the name")
        wait_for(lambda: conditions(cluster, namespace, "shared").get("Ready")
                 == ("True", "Ready", 1), what="Ready")

        def writers() -> list[tuple[bool, int]]:
            return sorted((s["leader"], s["writes"]) for s in (
                p.http("/readyz")[1]["alias-status"] for p in (a, b)))

        # Written twice: Ready (Programmed pending: the other replica cannot
        # serve a new answer yet), then Programmed.
        wait_for(lambda: writers() == [(False, 0), (True, 2)], what="one leader writes")


def both_live(a: AliasdProcess, b: AliasdProcess) -> None:
    """Wait until each replica hears both watermarks (a replica that has not
    published yet is not live: it holds nothing back)."""
    wait_for(lambda: all(len(p.http("/readyz")[1]["replica-leases"]["live"] or ()) == 2
                         for p in (a, b)), what="both replicas live")


def programmed(cluster: LocalCluster, ns: str, name: str) -> tuple[str, str, str, int]:
    """Programmed's (status, reason, message) and the status serial."""
    status = cluster.request("GET", path(ns, name)).get("status") or {}
    c: dict[str, Any] = next((c for c in status.get("conditions") or ()
                              if c["type"] == "Programmed"), {})
    return c.get("status", ""), c.get("reason", ""), c.get("message", ""), status.get("serial", 0)


def test_programmed_once_every_live_replica_serves_the_answer(
        cluster: LocalCluster, alias_crd: None, namespace: str, tmp_path: Path) -> None:
    """Two replicas, each publishing its watermark in a Lease of its own: the
    leader writes Programmed=True only when both serve the Alias's answer;
    a replica that lags holds it back; a replica killed without releasing
    its Lease holds it back only until the Lease expires."""
    args = ["--kubeconfig", str(cluster.kubeconfig), "--zone", "internal",
            "--coredns-mode", "off", "--leader-lease", f"{namespace}/aliasd",
            "--leader-lease-duration", "3", "--namespaces", namespace]
    with run_aliasd(args, tmp=tmp_path, env={"POD_NAME": "replica-a"}) as a, \
            run_aliasd(args, tmp=tmp_path, env={"POD_NAME": "replica-b"}) as b:
        both_live(a, b)
        create(cluster, namespace, "prog", {"hostnames": ["crd-prog.internal"],
                                            "targets": [{"address": "10.20.1.1"}]})
        wait_for(lambda: programmed(cluster, namespace, "prog")[:2] == ("True", "Programmed"),
                 what="Programmed")
        # Pending (the other replica could not serve a new answer yet), then
        # Programmed: one Normal Event, none for Pending.
        wait_for(lambda: reasons(cluster, namespace, "prog") == ["Programmed"],
                 what="the Programmed Event")
        for p in (a, b):
            assert a_records(p, "crd-prog.internal.") == ["10.20.1.1"]
        leases = cluster.request(
            "GET", f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
            "?labelSelector=aliasd.io%2Freplica-of%3Daliasd")["items"]
        serial = programmed(cluster, namespace, "prog")[3]
        assert sorted((x["spec"]["holderIdentity"],
                       int(x["metadata"]["annotations"]["aliasd.io/serial"]) >= serial)
                      for x in leases) == [("replica-a", True), ("replica-b", True)]
        def follower() -> AliasdProcess:
            return next(p for p in (a, b) if not p.http("/readyz")[1]["alias-status"]["leader"])

        wait_for(lambda: sum(p.http("/readyz")[1]["alias-status"]["leader"] for p in (a, b))
                 == 1, what="one leader")
        lagging = follower()
        # Freeze the follower: it serves the old answer and renews nothing. The
        # edit is Pending until its Lease expires (it holds nothing back then).
        os.kill(lagging.proc.pid, signal.SIGSTOP)
        try:
            cluster.request("PATCH", path(namespace, "prog"),
                            {"spec": {"targets": [{"address": "10.20.1.2"}]}},
                            content_type="application/merge-patch+json")
            wait_for(lambda: programmed(cluster, namespace, "prog")[:2] == ("False", "Pending")
                     and conditions(cluster, namespace, "prog")["Ready"] == ("True", "Ready", 2),
                     what="Pending while a replica lags, Ready all the same")
            print(f"while frozen: {programmed(cluster, namespace, 'prog')[2]}")
            wait_for(lambda: programmed(cluster, namespace, "prog")[:2]
                     == ("True", "Programmed"), timeout=30,
                     what="Programmed once the frozen replica's Lease expired")
        finally:
            os.kill(lagging.proc.pid, signal.SIGCONT)
        # Thawed, it catches up and publishes again; an edit is Programmed
        # only once both serve it.
        cluster.request("PATCH", path(namespace, "prog"),
                        {"spec": {"targets": [{"address": "10.20.1.3"}]}},
                        content_type="application/merge-patch+json")
        wait_for(lambda: conditions(cluster, namespace, "prog").get("Programmed")
                 == ("True", "Programmed", 3), timeout=30, what="Programmed, generation 3")
        for p in (a, b):
            assert a_records(p, "crd-prog.internal.") == ["10.20.1.3"]
        # Killed (no release): Programmed waits for the Lease to expire, then
        # an edit is Programmed with the one replica left.
        gone = follower()
        gone.proc.kill()
        gone.proc.wait()
        cluster.request("PATCH", path(namespace, "prog"),
                        {"spec": {"targets": [{"address": "10.20.1.4"}]}},
                        content_type="application/merge-patch+json")
        wait_for(lambda: conditions(cluster, namespace, "prog").get("Programmed")
                 == ("True", "Programmed", 4), timeout=30,
                 what="Programmed once the killed replica's Lease expired")


def test_aliasd_list_and_the_http_api_include_aliases(cluster: LocalCluster,
                                                      aliasd: AliasdProcess,
                                                      namespace: str) -> None:
    create(cluster, namespace, "listed", {"hostnames": ["crd-listed.internal"],
                                          "targets": [{"address": "10.20.0.8"}]})
    wait_for(lambda: a_records(aliasd, "crd-listed.internal.") == ["10.20.0.8"],
             what="the alias")
    _, doc = aliasd.http("/v1/aliases")
    want = ("crd-listed.internal.", ["10.20.0.8"], f"Alias {namespace}/listed")
    assert want in [(a["name"], a["addresses"], a["owner"]) for a in doc["aliases"]]
    computed = subprocess.run(
        [sys.executable, "-m", "aliasd", "list", "-o", "json", "--kubeconfig",
         str(cluster.kubeconfig), "--namespaces", namespace], capture_output=True, text=True,
        cwd=ROOT, timeout=60, check=False)
    assert computed.returncode == 0, computed.stderr
    assert [(a["name"], a["addresses"], a["owner"])
            for a in json.loads(computed.stdout)["aliases"]] == [want]


def test_a_relist_that_changes_nothing_writes_nothing(cluster: LocalCluster,
                                                      aliasd: AliasdProcess,
                                                      namespace: str) -> None:
    create(cluster, namespace, "still", {"hostnames": ["crd-still.internal"],
                                         "targets": [{"address": "10.20.0.9"}]})
    wait_for(lambda: conditions(cluster, namespace, "still").get("Programmed")
             == ("True", "Programmed", 1), what="Programmed")
    rv = cluster.request("GET", path(namespace, "still"))["metadata"]["resourceVersion"]
    restarts = metric_or_none(aliasd, "aliasd_watch_restarts_total", resource="aliases") or 0
    with watches_expired(cluster, aliasd.proc.pid, namespace):
        pass  # nothing changes while aliasd is away: the relist finds it all the same
    wait_for(lambda: (metric_or_none(aliasd, "aliasd_watch_restarts_total",
                                     resource="aliases") or 0) > restarts,
             timeout=60, what="the Alias watch restarted (relist)")
    create(cluster, namespace, "marker", {"hostnames": ["crd-marker2.internal"],
                                          "targets": [{"address": "10.20.0.10"}]})
    wait_for(lambda: conditions(cluster, namespace, "marker").get("Programmed")
             == ("True", "Programmed", 1), timeout=30, what="the marker's status")
    wait_for(lambda: aliasd.http("/readyz")[1]["alias-status"]["pending"] == 0,
             what="nothing left to compare")
    # "still", then the marker, each once (Ready and Programmed together).
    assert aliasd.http("/readyz")[1]["alias-status"]["writes"] == 2
    assert cluster.request("GET", path(namespace, "still"))["metadata"]["resourceVersion"] == rv
