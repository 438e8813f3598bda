"""The controller against the real API server: Services, EndpointSlices and
ServiceEntries become aliases, conflicts are reported, outages are survived."""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from pathlib import Path
from typing import Any

import dns.rcode
import pytest

from aliasd_dev import ClusterError, LocalCluster
from tests.support.dnsclient import a_records, answers, query, rcode
from tests.support.kube import endpoint_slice, events, service, watches_expired
from tests.support.process import AliasdProcess, metric_or_none, run_aliasd
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster


def set_alias(cluster: LocalCluster, ns: str, name: str, alias: str) -> None:
    cluster.request("PATCH", f"/api/v1/namespaces/{ns}/services/{name}",
                    {"metadata": {"annotations": {"aliasd.io/alias": alias}}},
                    content_type="application/merge-patch+json")


def delete(cluster: LocalCluster, ns: str, name: str, kind: str = "services") -> None:
    cluster.request("DELETE", f"/api/v1/namespaces/{ns}/{kind}/{name}")


def test_service_alias_follows_every_step(cluster: LocalCluster, aliasd: AliasdProcess,
                                          namespace: str) -> None:
    other = namespace + "-b"
    cluster.request("POST", "/api/v1/namespaces", {"metadata": {"name": other}})
    svc = service(cluster, namespace, "web", alias="steps-web.internal, steps-web-bare")
    ip = svc["spec"]["clusterIP"]
    wait_for(lambda: a_records(aliasd, "steps-web.internal.") == [ip], what="alias")
    assert a_records(aliasd, "steps-web-bare.internal.") == [ip]  # bare label → default zone
    srv = answers(query(aliasd.dns, "_http._tcp.steps-web.internal.", "SRV"), "SRV")
    assert srv == ["0 100 80 steps-web.internal."]
    # Change the annotation: the old name goes, the new one comes.
    set_alias(cluster, namespace, "web", "steps-renamed.internal")
    wait_for(lambda: a_records(aliasd, "steps-renamed.internal.") == [ip], what="rename")
    assert rcode(aliasd, "steps-web.internal.") == "NXDOMAIN"
    # Delete: gone.
    delete(cluster, namespace, "web")
    wait_for(lambda: rcode(aliasd, "steps-renamed.internal.") == "NXDOMAIN", what="delete")
    # Recreate in another namespace with the same alias: the new cluster IP.
    svc2 = service(cluster, other, "web-moved", alias="steps-renamed.internal")
    ip2 = svc2["spec"]["clusterIP"]
    wait_for(lambda: a_records(aliasd, "steps-renamed.internal.") == [ip2], what="move")
    _, doc = aliasd.http("/v1/aliases")
    entry = next(a for a in doc["aliases"] if a["name"] == "steps-renamed.internal.")
    assert entry["owner"] == f"Service {other}/web-moved"
    delete(cluster, other, "web-moved")


def test_dual_stack_externalname_and_ttl(cluster: LocalCluster, aliasd: AliasdProcess,
                                         namespace: str) -> None:
    ext = service(cluster, namespace, "ext", alias="ext-db.internal", ttl="7",
                  type="ExternalName", externalName="db.example.com", ports=[])
    assert ext["spec"]["type"] == "ExternalName"
    wait_for(lambda: answers(query(aliasd.dns, "ext-db.internal.", "A"), "CNAME")
             == ["db.example.com."], what="ExternalName alias")
    assert query(aliasd.dns, "ext-db.internal.", "A").answer[0].ttl == 7
    bad = service(cluster, namespace, "badttl", alias="bad-ttl.internal", ttl="a day")
    wait_for(lambda: a_records(aliasd, "bad-ttl.internal.") == [bad["spec"]["clusterIP"]],
             what="alias with a bad ttl")
    assert query(aliasd.dns, "bad-ttl.internal.", "A").answer[0].ttl == 30
    wait_for(lambda: [r for r, _ in events(cluster, namespace, "badttl")] == ["InvalidTTL"],
             what="InvalidTTL event")


def test_invalid_aliases_get_events_and_the_rest_still_works(
        cluster: LocalCluster, aliasd: AliasdProcess, namespace: str) -> None:
    svc = service(cluster, namespace, "mixed", alias="good-one.internal bad_label x.example.com")
    ip = svc["spec"]["clusterIP"]
    wait_for(lambda: a_records(aliasd, "good-one.internal.") == [ip], what="valid alias")
    assert rcode(aliasd, "x.example.com.") == "REFUSED"  # never served
    got = wait_for(lambda: sorted(m for r, m in events(cluster, namespace, "mixed")
                                  if r == "InvalidAlias") if len(
        events(cluster, namespace, "mixed")) >= 2 else None, what="InvalidAlias events")
    assert got == [
        "alias 'bad_label': label 'bad_label' is not a valid DNS label "
        "(lower-case letters, digits and '-', not at either end)",
        "alias 'x.example.com' is outside the served zones (internal.)",
    ]
    # Not repeated on later rebuilds.
    service(cluster, namespace, "other", alias="unrelated.internal")
    wait_for(lambda: a_records(aliasd, "unrelated.internal."), what="another change")
    time.sleep(0.5)
    assert len(events(cluster, namespace, "mixed")) == 2
    _, metrics = aliasd.http("/metrics")
    assert "aliasd_invalid_aliases 2.0" in metrics


def test_seed_scenario_serviceentry_endpoint_names_a_service(
        cluster: LocalCluster, aliasd: AliasdProcess) -> None:
    ns = "micro-shake-factory"
    try:
        cluster.request("POST", "/api/v1/namespaces", {"metadata": {"name": ns}})
    except ClusterError as e:
        assert "409" in str(e)
    svc = service(cluster, ns, "fruits-api-service")
    cluster.request("POST", f"/apis/networking.istio.io/v1/namespaces/{ns}/serviceentries", {
        "apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
        "metadata": {"name": "fruits"},
        "spec": {"hosts": ["my-fruits.internal", "api.example.com"], "location": "MESH_INTERNAL",
                 "resolution": "DNS", "ports": [{"name": "http", "number": 80,
                                                 "protocol": "HTTP"}],
                 "endpoints": [
                     {"address": "fruits-api-service.micro-shake-factory.svc.cluster.local"}]},
    })
    try:
        ip = svc["spec"]["clusterIP"]
        wait_for(lambda: a_records(aliasd, "my-fruits.internal.") == [ip], what="seed alias")
        assert rcode(aliasd, "api.example.com.") == "REFUSED"  # host outside our zones
        # Followed live: the Service is recreated with a new IP, the alias follows.
        delete(cluster, ns, "fruits-api-service")
        wait_for(lambda: rcode(aliasd, "my-fruits.internal.") == "NXDOMAIN",
                 what="alias to go with its Service")
        svc2 = service(cluster, ns, "fruits-api-service")
        assert svc2["spec"]["clusterIP"] != ip
        wait_for(lambda: a_records(aliasd, "my-fruits.internal.") == [svc2["spec"]["clusterIP"]],
                 what="alias to follow the new IP")
    finally:
        cluster.request("DELETE", f"/apis/networking.istio.io/v1/namespaces/{ns}/"
                        "serviceentries/fruits")
        delete(cluster, ns, "fruits-api-service")


def test_serviceentry_target_order(cluster: LocalCluster, aliasd: AliasdProcess,
                                   namespace: str) -> None:
    base = f"/apis/networking.istio.io/v1beta1/namespaces/{namespace}/serviceentries"

    def se(name: str, spec: dict[str, Any], status: dict[str, Any] | None = None) -> None:
        obj = cluster.request("POST", base, {"apiVersion": "networking.istio.io/v1beta1",
                                             "kind": "ServiceEntry", "metadata": {"name": name},
                                             "spec": spec})
        if status is not None:
            obj["status"] = status
            cluster.request("PUT", f"{base}/{name}/status", obj)

    se("addr", {"hosts": ["se-addr.internal"], "addresses": ["10.99.0.1/32", "10.98.0.0/16"],
                "endpoints": [{"address": "192.0.2.9"}]})
    se("auto", {"hosts": ["se-auto.internal"], "resolution": "DNS"},
       {"addresses": [{"value": "240.240.0.5", "host": "se-auto.internal"}]})
    se("ips", {"hosts": ["se-ips.internal"], "endpoints": [
        {"address": "192.0.2.1"}, {"address": "2001:db8::1"}]})
    se("cname", {"hosts": ["se-cname.internal"], "endpoints": [{"address": "db.example.com"}]})
    se("empty", {"hosts": ["se-empty.internal"], "resolution": "DNS"})
    wait_for(lambda: answers(query(aliasd.dns, "se-cname.internal.", "A"), "CNAME")
             == ["db.example.com."], what="the last ServiceEntry")
    assert a_records(aliasd, "se-addr.internal.") == ["10.99.0.1"]
    wait_for(lambda: a_records(aliasd, "se-auto.internal.") == ["240.240.0.5"], what="status")
    assert a_records(aliasd, "se-ips.internal.") == ["192.0.2.1"]
    assert answers(query(aliasd.dns, "se-ips.internal.", "AAAA"), "AAAA") == ["2001:db8::1"]
    assert rcode(aliasd, "se-empty.internal.") == "NXDOMAIN"
    got = wait_for(lambda: events(cluster, namespace, "empty"), what="NoUsableAddress event")
    assert got == [("NoUsableAddress", "host se-empty.internal: no spec.addresses, no "
                    "status.addresses and no usable spec.endpoints; it is not served")]


def test_serviceentry_exported_to_its_namespace_only_is_no_alias(
        cluster: LocalCluster, aliasd: AliasdProcess, namespace: str) -> None:
    base = f"/apis/networking.istio.io/v1/namespaces/{namespace}/serviceentries"
    cluster.request("POST", base, {
        "apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
        "metadata": {"name": "private"},
        "spec": {"hosts": ["se-private.internal"], "addresses": ["10.99.0.7"],
                 "exportTo": ["."], "resolution": "STATIC"}})
    got = wait_for(lambda: events(cluster, namespace, "private"), what="NotExported event")
    assert got == [("NotExported", "spec.exportTo '.': the entry is exported to its own "
                    "namespace only, and an alias answers every pod in the cluster; "
                    "se-private.internal not served (export it to '*' to serve it)")]
    assert rcode(aliasd, "se-private.internal.") == "NXDOMAIN"
    cluster.request("PATCH", f"{base}/private", {"spec": {"exportTo": ["*"]}},
                    content_type="application/merge-patch+json")
    wait_for(lambda: a_records(aliasd, "se-private.internal.") == ["10.99.0.7"],
             what="the entry exported to every namespace")


def test_headless_service_ready_endpoints_only(cluster: LocalCluster, aliasd: AliasdProcess,
                                               namespace: str) -> None:
    service(cluster, namespace, "db", alias="headless-db.internal", headless=True)
    # No ready endpoint and no aliasd.io/fallback: SERVFAIL (the last
    # stage of the fallback chain), neither a cached "no address" nor NXDOMAIN.
    wait_for(lambda: any(a["name"] == "headless-db.internal."
                         for a in aliasd.http("/v1/aliases")[1]["aliases"]), what="alias")
    for qtype in ("A", "AAAA"):
        r = query(aliasd.dns, "headless-db.internal.", qtype)
        assert r.rcode() == dns.rcode.SERVFAIL and r.answer == []
    endpoint_slice(cluster, namespace, "db",
                   {"10.244.0.1": True, "10.244.0.2": None, "10.244.0.3": False})
    wait_for(lambda: a_records(aliasd, "headless-db.internal.") == ["10.244.0.1", "10.244.0.2"],
             what="ready endpoints")
    endpoint_slice(cluster, namespace, "db",
                   {"10.244.0.1": False, "10.244.0.2": True, "10.244.0.3": True})
    wait_for(lambda: a_records(aliasd, "headless-db.internal.") == ["10.244.0.2", "10.244.0.3"],
             what="readiness change")


def test_conflict_oldest_wins_then_hands_over(cluster: LocalCluster, aliasd: AliasdProcess,
                                              namespace: str) -> None:
    old = service(cluster, namespace, "first", alias="contested.internal")
    wait_for(lambda: a_records(aliasd, "contested.internal.") == [old["spec"]["clusterIP"]],
             what="first claim")
    time.sleep(1.1)  # creationTimestamp has one-second resolution
    new = service(cluster, namespace, "second", alias="contested.internal")
    got = wait_for(lambda: events(cluster, namespace, "second"), what="AliasConflict event")
    assert got == [("AliasConflict", f"alias contested.internal. is already served for Service "
                    f"{namespace}/first (the older claim wins); this claim takes over when "
                    "that one goes away")]
    assert a_records(aliasd, "contested.internal.") == [old["spec"]["clusterIP"]]  # no mixing
    _, doc = aliasd.http("/v1/aliases")
    assert {"name": "contested.internal.", "winner": f"Service {namespace}/first",
            "loser": f"Service {namespace}/second"} in doc["conflicts"]
    delete(cluster, namespace, "first")
    wait_for(lambda: a_records(aliasd, "contested.internal.") == [new["spec"]["clusterIP"]],
             what="takeover")
    assert events(cluster, namespace, "first") == []


def test_apiserver_down_dns_keeps_answering_and_recovers(
        cluster: LocalCluster, aliasd: AliasdProcess, namespace: str) -> None:
    svc = service(cluster, namespace, "steady", alias="steady.internal")
    ip = svc["spec"]["clusterIP"]
    wait_for(lambda: a_records(aliasd, "steady.internal.") == [ip], what="alias")
    cluster.stop_apiserver()
    try:
        for _ in range(20):  # over a few seconds of outage, every answer is right
            assert a_records(aliasd, "steady.internal.") == [ip]
            time.sleep(0.1)
        status, _ = aliasd.http("/healthz")
        assert status == 200
    finally:
        cluster.start_apiserver()
    svc2 = service(cluster, namespace, "after", alias="after-restart.internal")
    wait_for(lambda: a_records(aliasd, "after-restart.internal.") == [svc2["spec"]["clusterIP"]],
             timeout=60, what="a change after the restart")
    assert a_records(aliasd, "steady.internal.") == [ip]
    _, metrics = aliasd.http("/metrics")
    assert 'aliasd_watch_restarts_total{resource="services"}' in metrics


def test_not_ready_until_synced_servfail_not_nxdomain(cluster: LocalCluster, tmp_path: Path,
                                                      namespace: str) -> None:
    cluster.stop_apiserver()
    try:
        with run_aliasd(["--kubeconfig", str(cluster.kubeconfig)], tmp=tmp_path,
                        wait_ready=False) as p:
            status, body = p.http("/readyz")
            assert status == 503
            assert body["ready"] is False and body["not_synced"] == ["kubernetes", "overrides"]
            assert body["degraded"] is False  # no state file: nothing to fall back on
            assert rcode(p, "anything.internal.") == "SERVFAIL"
            assert rcode(p, "example.com.") == "REFUSED"
            cluster.start_apiserver()
            wait_for(lambda: p.http("/readyz")[0] == 200, timeout=60, what="readiness")
            assert rcode(p, "anything.internal.") == "NXDOMAIN"
    finally:
        if "kube-apiserver" not in cluster._procs:
            cluster.start_apiserver()


def test_410_gone_relist_loses_nothing(cluster: LocalCluster, aliasd: AliasdProcess,
                                       namespace: str) -> None:
    keep = service(cluster, namespace, "keep", alias="gone-keep.internal")
    service(cluster, namespace, "drop", alias="gone-drop.internal")
    wait_for(lambda: a_records(aliasd, "gone-drop.internal."), what="both aliases")
    with watches_expired(cluster, aliasd.proc.pid, namespace):
        delete(cluster, namespace, "drop")
        added = service(cluster, namespace, "add", alias="gone-add.internal")
    wait_for(lambda: a_records(aliasd, "gone-add.internal.") == [added["spec"]["clusterIP"]],
             timeout=60, what="the add made while away")
    wait_for(lambda: rcode(aliasd, "gone-drop.internal.") == "NXDOMAIN", what="the delete")
    assert a_records(aliasd, "gone-keep.internal.") == [keep["spec"]["clusterIP"]]
    assert "too old (410), relisting" in aliasd.logs()


def test_serviceentry_crd_installed_later(cluster: LocalCluster, tmp_path: Path,
                                          namespace: str, no_serviceentry_crd: None) -> None:
    with run_aliasd(["--kubeconfig", str(cluster.kubeconfig)], tmp=tmp_path) as p:
        assert p.http("/readyz")[0] == 200  # an absent CRD does not block readiness
        assert "ServiceEntry CRD (networking.istio.io) not installed" in p.logs()
        cluster.install_serviceentry_crd()
        cluster.request(
            "POST", f"/apis/networking.istio.io/v1/namespaces/{namespace}/serviceentries",
            {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
             "metadata": {"name": "late"},
             "spec": {"hosts": ["late.internal"], "addresses": ["192.0.2.77"]}})
        wait_for(lambda: a_records(p, "late.internal.") == ["192.0.2.77"], timeout=30,
                 what="ServiceEntry alias after the CRD appeared")
        assert p.proc.poll() is None


def served(p: AliasdProcess, name: str, ip: str) -> bool:
    return a_records(p, name) == [ip]


def test_a_bad_annotation_loop_produces_a_bounded_number_of_events(
        cluster: LocalCluster, namespace: str, tmp_path: Path) -> None:
    """A controller rewriting a Service with a bad annotation in a loop: each
    version is a new problem, but the Events on the object stay within its
    budget (client-go's spam filter); the rest are counted, not recorded."""
    ns = namespace
    loops, burst = 30, 10  # aliasd.events.OBJECT_BURST
    with run_aliasd(["--kubeconfig", str(cluster.kubeconfig), "--zone", "internal",
                     "--namespaces", ns], tmp=tmp_path) as p:
        ip = service(cluster, ns, "loop", alias="loop-0.internal")["spec"]["clusterIP"]
        for i in range(1, loops + 1):
            cluster.request("PATCH", f"/api/v1/namespaces/{ns}/services/loop", {
                "metadata": {"annotations": {"aliasd.io/alias": f"loop-{i}.internal",
                                             "aliasd.io/ttl": f"bad-{i}"}}},
                content_type="application/merge-patch+json")
            # Each version seen on its own: a new InvalidTTL problem every time.
            wait_for(functools.partial(served, p, f"loop-{i}.internal.", ip),
                     what=f"version {i}")
        wait_for(lambda: metric_or_none(p, "aliasd_events_total", result="left_out")
                 == loops - burst, what="the Events over the budget counted")
        wait_for(lambda: metric_or_none(p, "aliasd_events_total", result="created") == burst,
                 what="the Events within the budget created")
        got = events(cluster, ns, "loop")
        assert len(got) == burst
        assert sorted(m for r, m in got if r == "InvalidTTL") == sorted(
            f"aliasd.io/ttl: ttl 'bad-{i}' is not a whole number of seconds; using the "
            "default 30s"
            for i in range(1, burst + 1))
        # A problem that goes and comes back with the same message raises the
        # recorded Event's count (client-go's EventLogger), no new Event.
        for i, weight in enumerate(["heavy", None, "heavy"]):
            cluster.request("PATCH", f"/api/v1/namespaces/{ns}/services/loop", {
                "metadata": {"annotations": {"aliasd.io/alias": f"weight-{i}.internal",
                                             "aliasd.io/weight": weight}}},
                content_type="application/merge-patch+json")
            wait_for(functools.partial(served, p, f"weight-{i}.internal.", ip),
                     what=f"weight version {i}")
        wait_for(lambda: metric_or_none(p, "aliasd_events_total", result="counted") == 1,
                 what="the repeated Event counted")
        weights = cluster.request(
            "GET", f"/api/v1/namespaces/{ns}/events?fieldSelector=reason%3DInvalidWeight")
        assert [(e["involvedObject"]["name"], e["count"]) for e in weights["items"]] == [
            ("loop", 2)]


def test_a_name_is_held_for_its_namespace_while_the_owner_recreates_its_service(
        cluster: LocalCluster, namespace: str, other_namespace: str, tmp_path: Path) -> None:
    """A claim from another namespace waits on team-b's name; team-b deletes
    and recreates its Service (younger now): with --name-hold the waiting
    claim never answers, before, during or after the recreation."""
    team_b, team_a = namespace, other_namespace
    args = ["--kubeconfig", str(cluster.kubeconfig), "--zone", "internal",
            "--namespaces", f"{team_b},{team_a}", "--name-hold", "600"]
    with run_aliasd(args, tmp=tmp_path) as p:
        ip = service(cluster, team_b, "pay", alias="held-pay.internal")["spec"]["clusterIP"]
        wait_for(functools.partial(served, p, "held-pay.internal.", ip), what="the owner")
        time.sleep(1.1)  # creationTimestamp has one-second resolution: the squat is younger
        squat = service(cluster, team_a, "squat", alias="held-pay.internal")["spec"]["clusterIP"]
        wait_for(lambda: [r for r, _ in events(cluster, team_a, "squat")] == ["AliasConflict"],
                 what="the squat waiting")
        seen: set[str] = set()
        stop = threading.Event()

        def watch() -> None:  # every answer while the owner recreates its Service
            while not stop.is_set():
                with contextlib.suppress(Exception):
                    seen.update(a_records(p, "held-pay.internal."))

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            delete(cluster, team_b, "pay")
            wait_for(lambda: rcode(p, "held-pay.internal.") == "NXDOMAIN", what="the gap")
            got = wait_for(lambda: [m for r, m in events(cluster, team_a, "squat")
                                    if r == "AliasReserved"], what="the AliasReserved Event")
            assert got[0].startswith(f"alias held-pay.internal. is reserved for namespace "
                                     f"{team_b} until ")
            ip2 = service(cluster, team_b, "pay", alias="held-pay.internal")["spec"][
                "clusterIP"]
            wait_for(functools.partial(served, p, "held-pay.internal.", ip2),
                     what="the recreated owner")
            # The watcher answers for itself: until it too has seen the new owner.
            wait_for(lambda: ip2 in seen, what="the watcher seeing the recreated owner")
        finally:
            stop.set()
            watcher.join()
        assert squat not in seen and ip2 in seen
        _, doc = p.http("/v1/aliases")
        assert [(c["winner"], c["loser"]) for c in doc["conflicts"]] == [
            (f"Service {team_b}/pay", f"Service {team_a}/squat")]
