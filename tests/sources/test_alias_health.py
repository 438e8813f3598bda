"""Health checks and failover on Alias targets, against the real API server:
the answer (asked with a real DNS client) follows the targets' health and
priorities, and the status says which targets are healthy, since when and
why not, with the Healthy condition and an Event on each change."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from aliasd_dev import LocalCluster
from tests.support.aliases import CRD, alias_status, condition, create_alias
from tests.support.dnsclient import dig_short
from tests.support.kube import endpoint_slice, events, service
from tests.support.process import AliasdProcess, run_aliasd
from tests.support.targets import TargetServer
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster


def check(target: TargetServer) -> dict[str, object]:
    return {"protocol": "HTTP", "port": target.port, "path": "/healthz", "intervalSeconds": 1,
            "timeoutSeconds": 1, "healthyThreshold": 1, "unhealthyThreshold": 2}


@pytest.fixture
def aliasd(cluster: LocalCluster, namespace: str, tmp_path: Path) -> Iterator[AliasdProcess]:
    cluster.install_crd(yaml.safe_load(CRD.read_text()))
    with run_aliasd(["--kubeconfig", str(cluster.kubeconfig), "--zone", "internal",
                     "--namespaces", namespace, "--leader-election", "off"],
                    tmp=tmp_path) as p:
        yield p


@pytest.fixture
def targets() -> Iterator[tuple[TargetServer, TargetServer]]:
    servers = TargetServer("127.0.0.2"), TargetServer("127.0.0.3")
    yield servers
    for s in servers:
        s.close()


def test_the_answer_and_the_status_follow_the_targets_health(
        cluster: LocalCluster, aliasd: AliasdProcess, namespace: str,
        targets: tuple[TargetServer, TargetServer]) -> None:
    primary, secondary = targets
    create_alias(cluster, namespace, "db", {"hostnames": ["orders-db"], "targets": [
        {"address": primary.host, "healthCheck": check(primary)},
        {"address": secondary.host, "priority": 1, "healthCheck": check(secondary)}]})

    def answer() -> list[str]:
        return dig_short(aliasd.dns, "orders-db.internal", "A")

    def health() -> list[tuple[str, bool, str | None]]:
        return [(t["target"], t["healthy"], t.get("lastError"))
                for t in alias_status(cluster, namespace, "db").get("targets") or ()]

    p_url = f"http://127.0.0.2:{primary.port}/healthz"
    s_url = f"http://127.0.0.3:{secondary.port}/healthz"
    wait_for(lambda: condition(cluster, namespace, "db", "Healthy") == ("True", "Healthy"),
             what="Healthy")
    assert answer() == ["127.0.0.2"]
    assert health() == [(p_url, True, None), (s_url, True, None)]
    assert alias_status(cluster, namespace, "db")["addresses"] == ["127.0.0.2"]

    primary.stop()
    wait_for(lambda: answer() == ["127.0.0.3"], what="failover to the secondary")
    wait_for(lambda: condition(cluster, namespace, "db", "Healthy") == ("False", "Degraded"),
             what="Degraded")
    assert health() == [(p_url, False, "Connection refused"), (s_url, True, None)]
    status = alias_status(cluster, namespace, "db")
    assert status["addresses"] == ["127.0.0.3"]
    assert "lastTransitionTime" in status["targets"][0]
    assert condition(cluster, namespace, "db", "Ready") == ("True", "Ready")

    secondary.fail_every = 1  # 503 to every probe
    wait_for(lambda: condition(cluster, namespace, "db", "Healthy")
             == ("False", "AllTargetsUnhealthy"), what="AllTargetsUnhealthy")
    assert health() == [(p_url, False, "Connection refused"), (s_url, False, "HTTP 503")]
    assert answer() == ["127.0.0.2"]  # fails open with the best priority

    primary.start()
    secondary.fail_every = 0
    wait_for(lambda: condition(cluster, namespace, "db", "Healthy") == ("True", "Healthy"),
             what="Healthy again")
    assert answer() == ["127.0.0.2"]
    wait_for(lambda: {"Degraded", "AllTargetsUnhealthy", "Healthy"}
             <= {r for r, _ in events(cluster, namespace, "db")}, what="the Events")


def test_a_service_without_ready_endpoints_gives_way_to_the_next_priority(
        cluster: LocalCluster, aliasd: AliasdProcess, namespace: str) -> None:
    service(cluster, namespace, "web", headless=True)
    create_alias(cluster, namespace, "web", {"hostnames": ["web-stable"], "targets": [
        {"serviceRef": {"name": "web"}},
        {"address": "192.0.2.10", "priority": 1}]})
    wait_for(lambda: dig_short(aliasd.dns, "web-stable.internal", "A") == ["192.0.2.10"],
             what="the on-premises fallback answers")
    wait_for(lambda: condition(cluster, namespace, "web", "ResolvedRefs")
             == ("False", "NoReadyEndpoints"), what="ResolvedRefs")
    endpoint_slice(cluster, namespace, "web", {"10.1.2.3": True})
    wait_for(lambda: dig_short(aliasd.dns, "web-stable.internal", "A") == ["10.1.2.3"],
             what="the Service answers once it has a ready endpoint")
    wait_for(lambda: condition(cluster, namespace, "web", "ResolvedRefs")
             == ("True", "ResolvedRefs"), what="ResolvedRefs")
    # An invalid check is refused by the schema before aliasd sees it.
    with pytest.raises(Exception, match="only an address target has a health check"):
        create_alias(cluster, namespace, "bad", {"hostnames": ["bad"], "targets": [
            {"cname": "db.example.com", "healthCheck": {"port": 5432}}]})


def test_a_service_fails_over_to_another_service(
        cluster: LocalCluster, aliasd: AliasdProcess, namespace: str) -> None:
    service(cluster, namespace, "blue", headless=True)
    service(cluster, namespace, "green", headless=True)
    create_alias(cluster, namespace, "app", {"hostnames": ["app"], "targets": [
        {"serviceRef": {"name": "blue"}}, {"serviceRef": {"name": "green"}, "priority": 1}]})
    endpoint_slice(cluster, namespace, "green", {"10.1.0.2": True})
    wait_for(lambda: dig_short(aliasd.dns, "app.internal", "A") == ["10.1.0.2"],
             what="green, blue having no endpoints")
    endpoint_slice(cluster, namespace, "blue", {"10.1.0.1": True})
    wait_for(lambda: dig_short(aliasd.dns, "app.internal", "A") == ["10.1.0.1"],
             what="blue, the first priority, once it has one")
    endpoint_slice(cluster, namespace, "blue", {"10.1.0.1": False})
    wait_for(lambda: dig_short(aliasd.dns, "app.internal", "A") == ["10.1.0.2"],
             what="green again when blue's endpoint is not ready")
