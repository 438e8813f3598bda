"""Weighted answers against the real API server with a real client:
Services sharing a name by ``aliasd.io/weight``, ServiceEntry endpoint weights."""

from __future__ import annotations

from collections import Counter

import pytest

from aliasd_dev import LocalCluster
from tests.support.dnsclient import query
from tests.support.kube import events, service
from tests.support.process import AliasdProcess
from tests.support.stats import CHI2_1DF_P1E9, chi2
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster


def split(p: AliasdProcess, name: str, n: int) -> Counter[str]:
    got: Counter[str] = Counter()
    for _ in range(n):
        (rrset,) = query(p.dns, name, "A").answer
        got[rrset[0].address] += 1
    return got


def weights(p: AliasdProcess, name: str) -> list[int | None]:
    """The weights /v1/aliases lists for ``name``, by owner (blue before green)."""
    _, doc = p.http("/v1/aliases")
    return [a["weight"] for a in sorted(doc["aliases"], key=lambda a: str(a["owner"]))
            if a["name"] == name]


def annotate(cluster: LocalCluster, ns: str, name: str, annotations: dict[str, str]) -> None:
    cluster.request("PATCH", f"/api/v1/namespaces/{ns}/services/{name}",
                    {"metadata": {"annotations": annotations}},
                    content_type="application/merge-patch+json")


def test_services_share_a_name_by_weight(cluster: LocalCluster, aliasd: AliasdProcess,
                                         namespace: str) -> None:
    ann = {"aliasd.io/weight": "10", "aliasd.io/ttl": "1"}
    blue = service(cluster, namespace, "shop-blue", alias="shop.internal")
    annotate(cluster, namespace, "shop-blue", ann)
    green = service(cluster, namespace, "shop-green", alias="shop.internal")
    b, g = blue["spec"]["clusterIP"], green["spec"]["clusterIP"]
    # Green has no weight yet: the usual conflict (blue, older, wins; no round robin).
    wait_for(lambda: split(aliasd, "shop.internal.", 20) == Counter({b: 20}),
             what="the conflict rule")
    annotate(cluster, namespace, "shop-green", {**ann, "aliasd.io/weight": "90"})
    wait_for(lambda: weights(aliasd, "shop.internal.") == [10, 90], what="the weighted group")
    counts = split(aliasd, "shop.internal.", 10_000)
    assert chi2(counts, {b: 0.1, g: 0.9}) < CHI2_1DF_P1E9, counts
    (rrset,) = query(aliasd.dns, "shop.internal.", "A").answer
    assert rrset.ttl == 1
    _, doc = aliasd.http("/v1/aliases")
    assert sorted((a["owner"], a["weight"], a["conflicts"]) for a in doc["aliases"]
                  if a["name"] == "shop.internal.") == [
        (f"Service {namespace}/shop-blue", 10, []), (f"Service {namespace}/shop-green", 90, [])]
    # Shift the weights: the next TTL's worth of queries follows the new split.
    annotate(cluster, namespace, "shop-blue", {"aliasd.io/weight": "90"})
    annotate(cluster, namespace, "shop-green", {"aliasd.io/weight": "10"})
    # Both changes served (between the two the split is 90/90, which a sample
    # of answers can mistake for the new one): wait on the state, not on draws.
    wait_for(lambda: weights(aliasd, "shop.internal.") == [90, 10], what="the new weights")
    counts = split(aliasd, "shop.internal.", 10_000)
    assert chi2(counts, {b: 0.9, g: 0.1}) < CHI2_1DF_P1E9, counts
    # Drain blue: weight 0 is never answered, but still listed.
    annotate(cluster, namespace, "shop-blue", {"aliasd.io/weight": "0"})
    wait_for(lambda: split(aliasd, "shop.internal.", 200) == Counter({g: 200}),
             what="blue drained")
    _, doc = aliasd.http("/v1/aliases")
    assert [a["weight"] for a in doc["aliases"] if a["name"] == "shop.internal."] == [0, 10]


def test_a_weight_from_another_namespace_is_a_conflict_not_a_share(
        cluster: LocalCluster, aliasd: AliasdProcess, namespace: str,
        other_namespace: str) -> None:
    # Created within one second, the claims tie on age and the namespace name
    # decides: other-... sorts first, so team-b is older either way.
    team_b, team_a = other_namespace, namespace
    blue = service(cluster, team_b, "pay-blue", alias="payments.internal")
    green = service(cluster, team_b, "pay-green", alias="payments.internal")
    annotate(cluster, team_b, "pay-blue", {"aliasd.io/weight": "50", "aliasd.io/ttl": "1"})
    annotate(cluster, team_b, "pay-green", {"aliasd.io/weight": "50", "aliasd.io/ttl": "1"})
    wait_for(lambda: weights(aliasd, "payments.internal.") == [50, 50],
             what="team-b's blue/green")
    # team-a, later, asks for the same name with the heaviest weight (in one
    # request: never an unweighted claim in between, which would be a conflict
    # whatever the rule for weights).
    hijack = cluster.request("POST", f"/api/v1/namespaces/{team_a}/services", {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "pay", "annotations": {"aliasd.io/alias": "payments.internal",
                                                    "aliasd.io/weight": "10000"}},
        "spec": {"ports": [{"name": "http", "port": 80}]}})
    got = wait_for(lambda: [m for r, m in events(cluster, team_a, "pay")
                            if r == "AliasConflict"], what="the AliasConflict Event")
    assert got == [f"alias payments.internal. is already served for Service {team_b}/pay-blue "
                   "(the older claim wins); this claim takes over when that one goes away"]
    _, doc = aliasd.http("/v1/aliases")
    assert [(c["name"], c["loser"]) for c in doc["conflicts"]] == [
        ("payments.internal.", f"Service {team_a}/pay")]
    assert weights(aliasd, "payments.internal.") == [50, 50]  # the hijack is no member
    team_b_ips = {blue["spec"]["clusterIP"], green["spec"]["clusterIP"]}
    counts = split(aliasd, "payments.internal.", 2000)
    assert set(counts) == team_b_ips, counts
    assert hijack["spec"]["clusterIP"] not in counts


def test_invalid_weight_is_an_event_and_the_conflict_rule_holds(
        cluster: LocalCluster, aliasd: AliasdProcess, namespace: str) -> None:
    # Created in the same second maybe: then the name decides; "first" wins either way.
    first = service(cluster, namespace, "first", alias="cart.internal")
    annotate(cluster, namespace, "first", {"aliasd.io/weight": "10"})
    service(cluster, namespace, "second", alias="cart.internal")
    annotate(cluster, namespace, "second", {"aliasd.io/weight": "-5"})
    got = wait_for(lambda: [m for r, m in events(cluster, namespace, "second")
                            if r == "InvalidWeight"], what="InvalidWeight Event")
    assert got == ["aliasd.io/weight: weight '-5' must be a whole number 0..10000; the "
                   "Service does not share its aliases"]
    assert split(aliasd, "cart.internal.", 20) == Counter({first["spec"]["clusterIP"]: 20})
    wait_for(lambda: sorted(r for r, _ in events(cluster, namespace, "second")) == [
        "AliasConflict", "InvalidWeight"], what="the AliasConflict Event too")


def test_serviceentry_endpoint_weights(cluster: LocalCluster, aliasd: AliasdProcess,
                                       namespace: str) -> None:
    cluster.request("POST", f"/apis/networking.istio.io/v1/namespaces/{namespace}/"
                    "serviceentries", {
                        "apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
                        "metadata": {"name": "payments",
                                     "annotations": {"aliasd.io/ttl": "5"}},
                        "spec": {"hosts": ["payments.internal"], "resolution": "STATIC",
                                 "ports": [{"number": 443, "name": "https",
                                            "protocol": "TLS"}],
                                 "endpoints": [{"address": "192.0.2.10", "weight": 25},
                                               {"address": "192.0.2.20", "weight": 75}]}})
    wait_for(lambda: len(split(aliasd, "payments.internal.", 50)) == 2,
             what="both endpoints answered")
    counts = split(aliasd, "payments.internal.", 4000)
    assert chi2(counts, {"192.0.2.10": 0.25, "192.0.2.20": 0.75}) < CHI2_1DF_P1E9, counts
