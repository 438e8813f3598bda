"""A migration end to end, through the real API server and the real CoreDNS: a
takeover migration with shifting weights, a refused takeover, the HTTP
failover switch across restarts and replicas, the state file while the API
server is down, and aliasd.io/fallback."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import dns.rcode
import pytest

from aliasd.state import StateFile
from aliasd_dev import LocalCluster, free_udp_tcp_port
from tests.support.coredns import DATACENTER_IP, corefile_now, managed_zones, wired
from tests.support.dnsclient import a_records, answers, query, rcode
from tests.support.kube import endpoint_slice, events, service
from tests.support.process import AliasdProcess, http_json, metric, run_aliasd
from tests.support.stats import CHI2_1DF_P1E9, chi2
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster

SE_PATH = "/apis/networking.istio.io/v1/namespaces/{ns}/serviceentries"


def via_coredns(cluster: LocalCluster, name: str, n: int = 1) -> Counter[str]:
    """``n`` A queries through CoreDNS (what a pod does); answers counted."""
    got: Counter[str] = Counter()
    for _ in range(n):
        r = query(cluster.coredns_addr, name, "A")
        got[",".join(answers(r, "A")) or dns.rcode.to_text(r.rcode())] += 1
    return got


def ttl_via_coredns(cluster: LocalCluster, name: str) -> int | None:
    r = query(cluster.coredns_addr, name, "A")
    return r.answer[0].ttl if r.answer else None


def serviceentry(cluster: LocalCluster, ns: str, name: str, *, hosts: list[str],
                 endpoints: list[dict[str, Any]], annotations: dict[str, str]) -> None:
    path = SE_PATH.format(ns=ns)
    body: dict[str, Any] = {
        "apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"hosts": hosts, "resolution": "STATIC", "location": "MESH_EXTERNAL",
                 "ports": [{"number": 443, "name": "https", "protocol": "TLS"}],
                 "endpoints": endpoints}}
    existing = cluster.request("GET", path)["items"]
    if any(i["metadata"]["name"] == name for i in existing):
        current = cluster.request("GET", f"{path}/{name}")
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        cluster.request("PUT", f"{path}/{name}", body)
    else:
        cluster.request("POST", path, body)


def test_takeover_migration_with_shifting_weights_then_release(
        coredns: LocalCluster, datacenter: AliasdProcess, namespace: str,
        tmp_path: Path) -> None:
    cluster = coredns
    # Before: the client-side name resolves upstream, to the datacenter.
    assert via_coredns(cluster, "legacy-lb.example.com") == Counter({DATACENTER_IP: 1})
    new_ip = service(cluster, namespace, "fruits-v2")["spec"]["clusterIP"]
    port = free_udp_tcp_port()
    args = wired(cluster, port, "--allow-takeover", f"example.com,namespace={namespace}")
    with run_aliasd(args, tmp=tmp_path, dns_port=port) as p:
        def weights(dc: int, k8s: int) -> None:
            serviceentry(cluster, namespace, "legacy-lb", hosts=["legacy-lb.example.com"],
                         annotations={"aliasd.io/takeover": "legacy-lb.example.com",
                                      "aliasd.io/ttl": "5"},
                         endpoints=[{"address": DATACENTER_IP, "weight": dc},
                                    {"address": f"fruits-v2.{namespace}.svc.cluster.local",
                                     "weight": k8s}])

        weights(100, 0)
        # aliasd adds a server block for exactly that name, forwarding to itself.
        wait_for(lambda: managed_zones(corefile_now(cluster)) == [
            "internal", "legacy-lb.example.com"], what="the takeover block")
        text = corefile_now(cluster)
        assert f"legacy-lb.example.com:{cluster.coredns_ports.dns} {{" in text
        # The whole line: a bare "127.0.0.1:{port}" is also a prefix of a longer port.
        assert f"    forward . 127.0.0.1:{port}\n" in text.split("legacy-lb.example.com:")[1]
        wait_for(lambda: p.http("/v1/aliases")[1]["aliases"][0]["takeover"], what="takeover")
        # CoreDNS reloads the Corefile, then answers from aliasd (TTL 5 from the
        # ServiceEntry; the datacenter says 30).
        wait_for(lambda: ttl_via_coredns(cluster, "legacy-lb.example.com") == 5,
                 what="CoreDNS to answer from aliasd")
        assert via_coredns(cluster, "legacy-lb.example.com", 50) == Counter(
            {DATACENTER_IP: 50})
        # Only that name: a sibling still resolves upstream, aliasd refuses it.
        assert via_coredns(cluster, "other.example.com") == Counter({"NXDOMAIN": 1})
        assert query(p.dns, "other.example.com", "A").rcode() == dns.rcode.REFUSED

        weights(50, 50)
        wait_for(lambda: len(via_coredns(cluster, "legacy-lb.example.com", 20)) == 2,
                 what="both targets")
        got = via_coredns(cluster, "legacy-lb.example.com", 2000)
        assert set(got) == {DATACENTER_IP, new_ip}
        assert chi2(dict(got), {DATACENTER_IP: 0.5, new_ip: 0.5}) < CHI2_1DF_P1E9, got

        weights(0, 100)
        wait_for(lambda: via_coredns(cluster, "legacy-lb.example.com", 50) == Counter(
            {new_ip: 50}), what="all traffic on the new target")

        # Release: the annotation goes, so do the name and the block.
        serviceentry(cluster, namespace, "legacy-lb", hosts=["legacy-lb.example.com"],
                     annotations={}, endpoints=[{"address": DATACENTER_IP}])
        wait_for(lambda: managed_zones(corefile_now(cluster)) == ["internal"],
                 what="the takeover block removed")
        wait_for(lambda: via_coredns(cluster, "legacy-lb.example.com") == Counter(
            {DATACENTER_IP: 1}) and ttl_via_coredns(cluster, "legacy-lb.example.com") == 30,
            what="upstream resolution again")
        assert query(p.dns, "legacy-lb.example.com", "A").rcode() == dns.rcode.REFUSED


def test_takeover_refused_without_permission(coredns: LocalCluster, namespace: str,
                                             tmp_path: Path) -> None:
    cluster = coredns
    port = free_udp_tcp_port()
    with run_aliasd(wired(cluster, port, "--allow-takeover", "example.org"), tmp=tmp_path,
                    dns_port=port) as p:
        wait_for(lambda: managed_zones(corefile_now(cluster)) == ["internal"], what="wiring")
        before = corefile_now(cluster)
        serviceentry(cluster, namespace, "grab", hosts=["legacy-lb.example.com"],
                     annotations={"aliasd.io/takeover": "legacy-lb.example.com"},
                     endpoints=[{"address": "10.1.2.3"}])
        got = wait_for(lambda: events(cluster, namespace, "grab"), what="the Event")
        assert got == [("TakeoverNotAllowed", "takeover of legacy-lb.example.com. refused: "
                        "legacy-lb.example.com. is not under an allowed suffix (example.org.)")]
        _, doc = p.http("/v1/aliases")
        assert [i["name"] for i in doc["invalid"]] == ["legacy-lb.example.com"]
        assert corefile_now(cluster) == before  # nothing in CoreDNS changed
        assert query(p.dns, "legacy-lb.example.com", "A").rcode() == dns.rcode.REFUSED


CLUSTER_ZONE = ("which the cluster DNS serves itself (Service discovery, reverse lookups); "
                "no allowance reaches it")


def test_takeover_never_reaches_the_cluster_zones_or_the_allowed_suffix(
        coredns: LocalCluster, namespace: str, tmp_path: Path) -> None:
    cluster = coredns
    ip = service(cluster, namespace, "web")["spec"]["clusterIP"]
    kubernetes = cluster.request("GET", "/api/v1/namespaces/default/services/kubernetes")[
        "spec"]["clusterIP"]
    port = free_udp_tcp_port()
    # A namespace allowed to take over anything still cannot take the cluster's
    # own zones: Service discovery and reverse lookups keep working.
    with run_aliasd(wired(cluster, port, "--allow-takeover", f"namespace={namespace}"),
                    tmp=tmp_path, dns_port=port) as p:
        wait_for(lambda: managed_zones(corefile_now(cluster)) == ["internal"], what="wiring")
        before = corefile_now(cluster)
        cluster.request("PATCH", f"/api/v1/namespaces/{namespace}/services/web", {
            "metadata": {"annotations": {
                "aliasd.io/takeover": "svc.cluster.local, in-addr.arpa"}}},
            content_type="application/merge-patch+json")
        got = wait_for(lambda: (lambda e: e if len(e) == 2 else None)(
            sorted(events(cluster, namespace, "web"))), what="both Events")
        assert got == [
            ("TakeoverNotAllowed", "takeover of in-addr.arpa. refused: in-addr.arpa. overlaps "
             f"in-addr.arpa., {CLUSTER_ZONE}"),
            ("TakeoverNotAllowed", "takeover of svc.cluster.local. refused: svc.cluster.local. "
             f"overlaps cluster.local., {CLUSTER_ZONE}")]
        _, doc = p.http("/v1/aliases")
        assert sorted(i["name"] for i in doc["invalid"]) == ["in-addr.arpa",
                                                             "svc.cluster.local"]
        assert corefile_now(cluster) == before  # no block for either
        assert query(p.dns, "kubernetes.default.svc.cluster.local", "A").rcode() == \
            dns.rcode.REFUSED
        assert via_coredns(cluster, "kubernetes.default.svc.cluster.local") == Counter(
            {kubernetes: 1})
        assert metric(p, "aliasd_invalid_aliases_by_reason", reason="TakeoverNotAllowed") == 2
    # --allow-takeover example.com: names strictly below it, never example.com
    # itself (aliasd would answer NXDOMAIN for every name below it).
    cluster.request("PATCH", f"/api/v1/namespaces/{namespace}/services/web", {
        "metadata": {"annotations": {"aliasd.io/takeover": "example.com, lb.example.com"}}},
        content_type="application/merge-patch+json")
    with run_aliasd(wired(cluster, port, "--allow-takeover", "example.com"),
                    tmp=tmp_path, dns_port=port) as p:
        wait_for(lambda: managed_zones(corefile_now(cluster)) == ["internal", "lb.example.com"],
                 what="the takeover block of lb.example.com only")
        suffix = ("TakeoverNotAllowed", "takeover of example.com. refused: example.com. is "
                  "an allowed suffix itself; only names strictly below it may be taken over")
        wait_for(lambda: suffix in events(cluster, namespace, "web"), what="the Event")
        assert a_records(p, "lb.example.com.") == [ip]
        assert query(p.dns, "www.example.com", "A").rcode() == dns.rcode.REFUSED


def test_failover_switch_through_coredns_restarts_and_replicas(
        coredns: LocalCluster, namespace: str, tmp_path: Path) -> None:
    cluster = coredns
    ip = service(cluster, namespace, "valkey", alias="valkey-master.internal",
                 ttl="5")["spec"]["clusterIP"]
    (tmp_path / "token").write_text("failover-token\n")
    port = free_udp_tcp_port()
    common = ["--overrides-configmap", f"{namespace}/aliasd-overrides",
              "--api-token-file", str(tmp_path / "token")]
    args = wired(cluster, port, *common)
    with run_aliasd(args, tmp=tmp_path, dns_port=port) as p:
        wait_for(lambda: via_coredns(cluster, "valkey-master.internal") == Counter({ip: 1}),
                 what="the alias through CoreDNS")
        status, doc = http_json(p, "PUT", "/v1/overrides/valkey-master.internal",
                                {"addresses": ["10.0.0.7"], "ttl": 5}, token="failover-token")
        assert status == 201, doc
        # The very next query through CoreDNS has it (no cache in aliasd's block).
        assert via_coredns(cluster, "valkey-master.internal") == Counter({"10.0.0.7": 1})
        # It is stored in the ConfigMap every replica watches...
        data = cluster.request(
            "GET", f"/api/v1/namespaces/{namespace}/configmaps/aliasd-overrides")["data"]
        stored = json.loads(data["valkey-master.internal"])
        assert (stored["addresses"], stored["ttl"], stored["by"]) == (["10.0.0.7"], 5,
                                                                      "127.0.0.1")
        # ...so a second replica serves it too.
        with run_aliasd(["--kubeconfig", str(cluster.kubeconfig), *common],
                        tmp=tmp_path) as second:
            assert a_records(second, "valkey-master.internal.") == ["10.0.0.7"]
            _, doc = second.http("/v1/aliases")
            (entry,) = [a for a in doc["aliases"] if a["name"] == "valkey-master.internal."]
            assert entry["override"] and entry["overridden"] == [f"Service {namespace}/valkey"]
            assert metric(second, "aliasd_overrides") == 1.0
    # A restart keeps it (ready means the overrides ConfigMap was read).
    with run_aliasd(args, tmp=tmp_path, dns_port=port) as p:
        assert a_records(p, "valkey-master.internal.") == ["10.0.0.7"]
        assert via_coredns(cluster, "valkey-master.internal") == Counter({"10.0.0.7": 1})
        assert http_json(p, "DELETE", "/v1/overrides/valkey-master.internal",
                         token="failover-token")[0] == 200
        assert via_coredns(cluster, "valkey-master.internal") == Counter({ip: 1})


def test_state_file_answers_while_the_apiserver_is_down(cluster: LocalCluster, namespace: str,
                                                        tmp_path: Path) -> None:
    ip = service(cluster, namespace, "db", alias="stateful-db.internal")["spec"]["clusterIP"]
    state = tmp_path / "state.json"
    args = ["--kubeconfig", str(cluster.kubeconfig), "--state-file", str(state),
            "--overrides-configmap", f"{namespace}/aliasd-overrides"]
    with run_aliasd(args, tmp=tmp_path) as p:
        assert wait_for(lambda: a_records(p, "stateful-db.internal.")) == [ip]
        wait_for(lambda: "stateful-db.internal" in state.read_text(), what="the state file")
    cluster.stop_apiserver()
    try:
        with run_aliasd(args, tmp=tmp_path) as p:  # ready: degraded, not failed
            status, body = p.http("/readyz")
            assert (status, body["ready"], body["degraded"]) == (200, True, True)
            assert body["not_synced"] == ["kubernetes", "overrides"]
            assert a_records(p, "stateful-db.internal.") == [ip]
            assert metric(p, "aliasd_degraded") == 1.0
            cluster.start_apiserver()
            wait_for(lambda: p.http("/readyz")[1]["degraded"] is False, timeout=60,
                     what="the watch to sync")
            assert metric(p, "aliasd_degraded") == 0.0
            # Live again: a change in the cluster shows.
            cluster.request("DELETE", f"/api/v1/namespaces/{namespace}/services/db")
            wait_for(lambda: query(p.dns, "stateful-db.internal.", "A").rcode()
                     == dns.rcode.NXDOMAIN, what="the deletion")
    finally:
        if "kube-apiserver" not in cluster._procs:
            cluster.start_apiserver()


def test_state_file_follows_each_change(cluster: LocalCluster, namespace: str,
                                       tmp_path: Path) -> None:
    """The writer re-encodes only the objects that changed: a rename, a
    deletion and a policy denial each reach the file, the untouched objects
    stay in it, and a restart with the API server down serves exactly that."""
    ips = {n: service(cluster, namespace, n, alias=f"{n}-sf.internal")["spec"]["clusterIP"]
           for n in ("keep", "rename", "gone", "denied")}
    state = tmp_path / "state.json"
    args = ["--kubeconfig", str(cluster.kubeconfig), "--state-file", str(state)]

    def stored() -> list[str]:
        loaded = StateFile(state).load()
        return sorted(c.name for c in loaded.claims) if loaded else []

    with run_aliasd(args, tmp=tmp_path) as p:
        wait_for(lambda: stored() == [f"{n}-sf.internal" for n in sorted(ips)],
                 what="every alias in the state file")
        svc = f"/api/v1/namespaces/{namespace}/services"
        cluster.request("PATCH", f"{svc}/rename", {"metadata": {"annotations": {
            "aliasd.io/alias": "renamed-sf.internal"}}},
            content_type="application/merge-patch+json")
        cluster.request("DELETE", f"{svc}/gone")
        cluster.request("PATCH", f"/api/v1/namespaces/{namespace}", {"metadata": {
            "annotations": {"aliasd.io/allowed-names": "keep-sf.internal, *.sf.internal, "
                                                       "renamed-sf.internal"}}},
            content_type="application/merge-patch+json")
        wait_for(lambda: rcode(p, "denied-sf.internal.") == "NXDOMAIN", what="the denial")
        wait_for(lambda: stored() == ["keep-sf.internal", "renamed-sf.internal"],
                 what="the changes in the state file")
    cluster.stop_apiserver()
    try:
        with run_aliasd(args, tmp=tmp_path) as p:  # served from the file alone
            assert p.http("/readyz")[1]["degraded"] is True
            assert a_records(p, "keep-sf.internal.") == [ips["keep"]]
            assert a_records(p, "renamed-sf.internal.") == [ips["rename"]]
            assert [rcode(p, f"{n}-sf.internal.") for n in ("rename", "gone", "denied")] \
                == ["NXDOMAIN"] * 3
    finally:
        if "kube-apiserver" not in cluster._procs:
            cluster.start_apiserver()


def test_fallback_answers_when_nothing_else_can(cluster: LocalCluster, namespace: str,
                                                tmp_path: Path) -> None:
    cluster.request("POST", f"/api/v1/namespaces/{namespace}/services", {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "cache", "annotations": {
            "aliasd.io/alias": "cache.internal", "aliasd.io/fallback": "10.0.0.9"}},
        "spec": {"clusterIP": "None", "ports": [{"name": "redis", "port": 6379}]}})
    cluster.request("POST", f"/api/v1/namespaces/{namespace}/services", {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "broken", "annotations": {
            "aliasd.io/alias": "broken.internal", "aliasd.io/fallback": "10.0.0.999"}},
        "spec": {"clusterIP": "None", "ports": [{"name": "redis", "port": 6379}]}})
    with run_aliasd(["--kubeconfig", str(cluster.kubeconfig)], tmp=tmp_path) as p:
        # No ready endpoint: the fallback answers, and /v1/aliases says so.
        assert wait_for(lambda: a_records(p, "cache.internal.")) == ["10.0.0.9"]
        _, doc = p.http("/v1/aliases")
        (entry,) = [a for a in doc["aliases"] if a["name"] == "cache.internal."]
        assert entry["fallback"] is True
        # An invalid fallback: an Event, and nothing usable left, so SERVFAIL.
        assert wait_for(lambda: events(cluster, namespace, "broken")) == [
            ("InvalidFallback", "aliasd.io/fallback: '10.0.0.999' is not an IP address; "
                                "no fallback is used")]
        assert query(p.dns, "broken.internal.", "A").rcode() == dns.rcode.SERVFAIL
        # A ready endpoint appears: it wins over the fallback.
        endpoint_slice(cluster, namespace, "cache", {"10.244.1.5": True})
        wait_for(lambda: a_records(p, "cache.internal.") == ["10.244.1.5"], what="endpoint")
        endpoint_slice(cluster, namespace, "cache", {"10.244.1.5": False})
        wait_for(lambda: a_records(p, "cache.internal.") == ["10.0.0.9"], what="fallback")
