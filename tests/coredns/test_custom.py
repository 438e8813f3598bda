"""coredns-custom mode (AKS, k3s) through the real API server and the real
CoreDNS: the platform's Corefile (k3s- and AKS-shaped) stays byte for byte as
it was while the alias resolves through the server blocks aliasd adds as
``coredns-custom`` keys, which the local CoreDNS imports from where the
devcluster materialises them (like the ConfigMap volume on those platforms)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from aliasd.coredns import corefile
from aliasd_dev import ClusterError, LocalCluster, free_udp_tcp_port
from tests.support.coredns import CM, corefile_now
from tests.support.corefiles import SHAPES, on_loopback
from tests.support.dnsclient import dig_short
from tests.support.kube import events, service
from tests.support.process import cli, run_aliasd
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster

CUSTOM = f"{CM}/coredns-custom"
NODE_HOSTS = "192.0.2.77 k3s-server-0\n"
# AKS users keep their own customisations in the same ConfigMap.
AKS_USER_KEYS = {"marker.override": "hosts {\n    192.0.2.78 aks-marker\n    fallthrough\n}\n",
                 "corp.server": "corp.example:53 {\n    errors\n    forward . 127.0.0.1:9\n}\n"}


def custom_data(cluster: LocalCluster) -> dict[str, str] | None:
    try:
        data: dict[str, str] = cluster.request("GET", CUSTOM).get("data") or {}
    except ClusterError as e:
        if "HTTP 404" in str(e):
            return None
        raise
    return data


def put_coredns(cluster: LocalCluster, data: dict[str, str]) -> None:
    cluster.request("PUT", f"{CM}/coredns", {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "coredns", "namespace": "kube-system"}, "data": data})


def settle(cluster: LocalCluster, check: Callable[[], bool], *, what: str) -> None:
    """Wait until CoreDNS serves what ``check`` asks and has finished that
    reload: only then may a test change an imported file again, or CoreDNS
    takes the change for what it already runs (coredns/coredns#6243)."""
    wait_for(lambda: check() and cluster.coredns_idle(), timeout=60, what=what)


@pytest.fixture(params=sorted(SHAPES))
def platform(request: pytest.FixtureRequest, cluster: LocalCluster
             ) -> Iterator[tuple[str, dict[str, str]]]:
    """kube-system/coredns as the distribution ships it (on loopback), and its
    coredns-custom as shipped: none on k3s, AKS's with a user's keys. Both put
    back afterwards (the kubeadm Corefile, no coredns-custom). Each step waits
    for CoreDNS to have reloaded, so no case starts while CoreDNS is reloading."""
    shape = request.param
    text = on_loopback(SHAPES[shape], ports=cluster.coredns_ports,
                       kubeconfig=str(cluster.kubeconfig), directory=cluster.corefile.parent)
    data = {"Corefile": text}
    if shape == "k3s":
        data["NodeHosts"] = NODE_HOSTS
    else:
        # While the kubeadm Corefile runs, nothing imports custom/: its files
        # are in place before the Corefile that imports them.
        cluster.request("POST", CM, {"apiVersion": "v1", "kind": "ConfigMap",
                                     "metadata": {"name": "coredns-custom"},
                                     "data": AKS_USER_KEYS})
        wait_for(lambda: cluster.materialised_keys("coredns-custom") == sorted(AKS_USER_KEYS),
                 what="coredns-custom's files")
    put_coredns(cluster, data)
    marker = ("k3s-server-0", "192.0.2.77") if shape == "k3s" else ("aks-marker", "192.0.2.78")
    settle(cluster, lambda: dig_short(cluster.coredns_addr, marker[0]) == [marker[1]],
           what=f"CoreDNS to reload the {shape}-shaped Corefile")
    try:
        yield shape, data
    finally:
        # The kubeadm Corefile first, so that removing coredns-custom's files
        # (which k3s's Corefile imports as *.override too) reloads nothing.
        put_coredns(cluster, {"Corefile": cluster.initial_corefile})
        try:
            settle(cluster, lambda: dig_short(cluster.coredns_addr, marker[0]) == [],
                   what="CoreDNS to reload the kubeadm Corefile")
        finally:
            with contextlib.suppress(ClusterError):
                cluster.request("DELETE", CUSTOM)
            wait_for(lambda: cluster.materialised_keys("coredns-custom") == [],
                     what="coredns-custom's files to go")
            for e in cluster.request("GET", "/api/v1/namespaces/kube-system/events")["items"]:
                cluster.request("DELETE", f"/api/v1/namespaces/kube-system/events/"
                                f"{e['metadata']['name']}")


def test_alias_resolves_through_coredns_custom_and_the_corefile_is_untouched(
        platform: tuple[str, dict[str, str]], cluster: LocalCluster, namespace: str,
        tmp_path: Path) -> None:
    shape, shipped = platform
    user_keys = AKS_USER_KEYS if shape == "aks" else {}
    ip = service(cluster, namespace, "fruits-api-service",
                 alias="my-fruits.internal")["spec"]["clusterIP"]
    port = free_udp_tcp_port()
    args = ["--kubeconfig", str(cluster.kubeconfig), "--zone", "internal",
            "--coredns-mode", "auto", "--forward-to", f"127.0.0.1:{port}",
            "--leader-election", "off"]
    ours = ("# managed by aliasd; `aliasd coredns remove` deletes this key\n"
            f"internal:{cluster.dns_port} {{\n    bind 127.0.0.1\n    errors\n"
            f"    forward . 127.0.0.1:{port}\n}}\n")
    with run_aliasd(args, tmp=tmp_path, dns_port=port) as p:
        # The question a pod asks, asked of the real CoreDNS (which reloads within
        # 2-3 s of the key's file changing, then syncs its kubernetes plugin).
        try:
            settle(cluster, lambda: dig_short(cluster.coredns_addr, "my-fruits.internal") == [ip],
                   what="CoreDNS to forward my-fruits.internal")
        except AssertionError as e:
            raise AssertionError(f"{e}\ncustom/: {cluster.materialised_keys('coredns-custom')}"
                                 f"\ncoredns-custom: {custom_data(cluster)}\nCoreDNS:\n"
                                 f"{cluster.logs('coredns', 30)}\naliasd:\n{p.logs()[-3000:]}"
                                 ) from None
        assert custom_data(cluster) == {**user_keys, "aliasd-internal.server": ours}
        assert cluster.request("GET", f"{CM}/coredns")["data"] == shipped  # byte for byte
        assert (cluster.corefile.parent / "custom" / "aliasd-internal.server").read_text() == ours
        _, ready = p.http("/readyz")
        assert ready["coredns"]["targets"] == ["kube-system/coredns-custom"]
        assert ready["coredns"]["error"] is None and ready["coredns"]["conflicts"] == {}
        # Drift and conflict are asserted on the ConfigMap. The kubelet would
        # not show CoreDNS their intermediate states (it writes what it sees at
        # a sync), and a reload that starts on one of them would miss the next
        # change (coredns/coredns#6243): CoreDNS sees only where they end.
        with cluster.hold_configmap("coredns-custom"):
            # The key deleted by hand comes back; the Corefile is still not touched.
            cluster.request("PATCH", CUSTOM, {"data": {"aliasd-internal.server": None}},
                            content_type="application/merge-patch+json")
            wait_for(lambda: (custom_data(cluster) or {}).get("aliasd-internal.server") == ours,
                     timeout=10, what="the deleted key to be restored")
            assert "was changed by someone else; restoring aliasd's part" in p.logs()
            # Someone else's block for a zone aliasd serves: aliasd withdraws its key.
            cluster.request("PATCH", CUSTOM, {"data": {"theirs.server": ours.replace(
                "# managed by aliasd; `aliasd coredns remove` deletes this key\n", "")}},
                            content_type="application/merge-patch+json")
            wait_for(lambda: "aliasd-internal.server" not in (custom_data(cluster) or {}),
                     timeout=10, what="aliasd to leave the zone to the other block")
            got = wait_for(lambda: [m for r, m in events(cluster, "kube-system",
                                                         "coredns-custom")
                                    if r == "CorefileConflict"], what="CorefileConflict Event")
            assert got[0].startswith(
                "zone internal already has a server block aliasd does not own")
            cluster.request("PATCH", CUSTOM, {"data": {"theirs.server": None}},
                            content_type="application/merge-patch+json")
            wait_for(lambda: (custom_data(cluster) or {}).get("aliasd-internal.server") == ours,
                     timeout=10, what="aliasd's key back once the zone is free")
        assert cluster.materialised_keys("coredns-custom") == sorted(
            [*user_keys, "aliasd-internal.server"])
        settle(cluster, lambda: dig_short(cluster.coredns_addr, "my-fruits.internal") == [ip],
               what="the alias through CoreDNS again")
    kc = str(cluster.kubeconfig)
    diff = cli("coredns", "diff", "--kubeconfig", kc, "--forward-to", f"127.0.0.1:{port}")
    assert (diff.returncode, diff.stdout) == (0, ""), diff.stderr
    removed = cli("coredns", "remove", "--kubeconfig", kc)
    assert removed.returncode == 0, removed.stderr
    assert "kube-system/coredns-custom: removed aliasd's part" in removed.stderr
    assert custom_data(cluster) == user_keys  # only aliasd's keys went
    assert cluster.request("GET", f"{CM}/coredns")["data"] == shipped
    settle(cluster, lambda: dig_short(cluster.coredns_addr, "my-fruits.internal") == [],
           what="CoreDNS to stop forwarding the zone")


LONG = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 49, "example.com"])  # 253: a valid name


def test_a_name_too_long_for_its_key_is_refused_alone(
        platform: tuple[str, dict[str, str]], cluster: LocalCluster, namespace: str,
        tmp_path: Path) -> None:
    shape, shipped = platform
    user_keys = AKS_USER_KEYS if shape == "aks" else {}
    cluster.request("POST", f"/api/v1/namespaces/{namespace}/services", {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "lb", "annotations": {
            "aliasd.io/alias": "lb.internal",
            "aliasd.io/takeover": f"{LONG}, lb.example.com"}},
        "spec": {"ports": [{"name": "http", "port": 80}]}})
    port = free_udp_tcp_port()
    args = ["--kubeconfig", str(cluster.kubeconfig), "--zone", "internal",
            "--coredns-mode", "auto", "--forward-to", f"127.0.0.1:{port}",
            "--leader-election", "off", "--allow-takeover", "example.com"]
    with run_aliasd(args, tmp=tmp_path, dns_port=port) as p:
        # The long name's key would be 267 characters: that name alone is
        # refused, the zone and the other takeover are wired.
        wait_for(lambda: sorted(custom_data(cluster) or {}) == sorted(
            [*user_keys, "aliasd-internal.server", "aliasd-lb.example.com.server"]),
                 what="the keys of the zone and of lb.example.com")
        got = wait_for(lambda: [m for r, m in events(cluster, "kube-system", "coredns-custom")
                                if r == "CorefileConflict"], what="CorefileConflict Event")
        # (k3s ships no coredns-custom: the first Event may name it before aliasd
        # created it, without a uid, and the next one the created object.)
        assert set(got) == {f"name {LONG}: its coredns-custom key would be 267 characters, "
                            "longer than a ConfigMap key may be (253); aliasd adds no key for it"}
        _, ready = p.http("/readyz")
        assert ready["coredns"]["error"] is None
        assert ready["coredns"]["conflicts"] == {"kube-system/coredns-custom": [LONG]}
        assert cluster.request("GET", f"{CM}/coredns")["data"] == shipped


def test_cli_in_coredns_custom_mode(platform: tuple[str, dict[str, str]],
                                    cluster: LocalCluster) -> None:
    shape, shipped = platform
    kc = str(cluster.kubeconfig)
    base = ["--kubeconfig", kc, "--forward-to", "127.0.0.1:5999", "--zone", "internal,corp"]
    diff = cli("coredns", "diff", *base)
    assert diff.returncode == 1, diff.stderr
    assert [ln for ln in diff.stdout.splitlines() if ln.startswith("+++")] == [
        "+++ b/kube-system/coredns-custom:data.aliasd-corp.server",
        "+++ b/kube-system/coredns-custom:data.aliasd-internal.server"]
    assert custom_data(cluster) == (None if shape == "k3s" else AKS_USER_KEYS)  # wrote nothing
    applied = cli("coredns", "apply", *base)
    assert applied.returncode == 0 and applied.stdout == diff.stdout, applied.stderr
    assert sorted(custom_data(cluster) or {}) == sorted(
        [*(AKS_USER_KEYS if shape == "aks" else {}), "aliasd-corp.server",
         "aliasd-internal.server"])
    again = cli("coredns", "apply", *base)
    assert (again.returncode, again.stdout) == (0, "")
    assert "kube-system/coredns-custom: unchanged" in again.stderr
    assert cli("coredns", "remove", "--kubeconfig", kc).returncode == 0
    assert custom_data(cluster) == ({} if shape == "k3s" else AKS_USER_KEYS)
    assert cluster.request("GET", f"{CM}/coredns")["data"] == shipped


def test_explicit_coredns_custom_mode_on_a_kubeadm_corefile_is_refused(
        cluster: LocalCluster) -> None:
    r = cli("coredns", "apply", "--kubeconfig", str(cluster.kubeconfig), "--coredns-mode",
            "coredns-custom", "--forward-to", "127.0.0.1:5999")
    assert r.returncode == 2  # an error, not "a change is pending" (diff(1) convention)
    assert r.stderr == ("aliasd: error: kube-system/coredns has no Corefile that imports "
                        "custom/*.server, so server blocks in kube-system/coredns-custom would "
                        "not be served; use --coredns-mode corefile (or auto)\n")
    assert custom_data(cluster) is None
    assert corefile.managed_regions(corefile_now(cluster)) == []

