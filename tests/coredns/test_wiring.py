"""CoreDNS wiring against the real API server and the real CoreDNS: the full
path a pod uses (dig @CoreDNS → forward → aliasd), exact undo, concurrent
edits, drift repair, leader election and the kube-dns / node-local-dns modes."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient, Configuration

from aliasd.coredns import corefile
from aliasd.coredns.patcher import COREDNS, Change, Patcher, PatcherConfig, Target
from aliasd.coredns.plan import Forward
from aliasd.coredns.wiring import Action, wire
from aliasd.model import ApplyError
from aliasd_dev import LocalCluster, free_udp_tcp_port
from tests.support import ROOT
from tests.support.coredns import CM, corefile_now, managed_zones, set_corefile, wired
from tests.support.corefiles import NODE_LOCAL
from tests.support.dnsclient import dig_short
from tests.support.kube import events, service
from tests.support.process import AliasdProcess, cli, metric, metric_or_none, run_aliasd
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster


def test_pod_path_through_coredns_restart_writes_nothing_remove_is_exact(
        coredns: LocalCluster, namespace: str, tmp_path: Path) -> None:
    ip = service(coredns, namespace, "fruits-api-service",
                 alias="my-fruits.internal")["spec"]["clusterIP"]
    port = free_udp_tcp_port()
    with run_aliasd(wired(coredns, port), tmp=tmp_path, dns_port=port) as p:
        # The question a pod asks, asked of the real CoreDNS, which forwards it.
        wait_for(lambda: dig_short(coredns.coredns_addr, "my-fruits.internal") == [ip],
                 timeout=30, what="CoreDNS to forward my-fruits.internal to aliasd")
        text = corefile_now(coredns)
        assert text.startswith(coredns.initial_corefile) and managed_zones(text) == ["internal"]
        assert f"internal:{coredns.dns_port} {{" in text and "bind 127.0.0.1" in text
        _, ready = p.http("/readyz")
        assert ready["coredns"] == {"mode": "corefile", "targets": ["kube-system/coredns"],
                                    "forward_to": f"127.0.0.1:{port}", "leader": True,
                                    "conflicts": {}, "takeovers": [], "error": None}
        assert metric(p, "aliasd_corefile_patches_total", result="applied") == 1.0
    rv = coredns.request("GET", f"{CM}/coredns")["metadata"]["resourceVersion"]
    with run_aliasd(wired(coredns, port), tmp=tmp_path, dns_port=port) as p:
        wait_for(lambda: metric(p, "aliasd_corefile_patches_total", result="unchanged") >= 1,
                 what="the restarted aliasd to reconcile")
        # A result never counted has no series: absent is zero attempts.
        assert (metric_or_none(p, "aliasd_corefile_patches_total", result="attempt")
                or 0.0) == 0.0
    assert coredns.request("GET", f"{CM}/coredns")["metadata"]["resourceVersion"] == rv
    kc = str(coredns.kubeconfig)
    diff = cli("coredns", "diff", "--kubeconfig", kc, "--forward-to", f"127.0.0.1:{port}")
    assert (diff.returncode, diff.stdout) == (0, "")
    removed = cli("coredns", "remove", "--kubeconfig", kc)
    assert removed.returncode == 0, removed.stderr
    assert "kube-system/coredns: removed aliasd's part" in removed.stderr
    assert corefile_now(coredns) == coredns.initial_corefile


def test_cli_diff_apply_remove(coredns: LocalCluster) -> None:
    kc = str(coredns.kubeconfig)
    diff = cli("coredns", "diff", "--kubeconfig", kc, "--forward-to", "127.0.0.1:5999",
               "--zone", "internal,corp")
    assert diff.returncode == 1, diff.stderr
    added = [ln for ln in diff.stdout.splitlines() if ln.startswith("+")]
    assert added[0] == "+++ b/kube-system/coredns:data.Corefile"
    assert f"+internal:{coredns.dns_port} {{" in added and f"+corp:{coredns.dns_port} {{" in added
    assert added.count("+    forward . 127.0.0.1:5999") == 2
    assert not [ln for ln in diff.stdout.splitlines()[2:] if ln.startswith("-")]
    assert corefile_now(coredns) == coredns.initial_corefile  # diff wrote nothing
    applied = cli("coredns", "apply", "--kubeconfig", kc, "--forward-to", "127.0.0.1:5999",
                  "--zone", "internal,corp")
    assert applied.returncode == 0 and applied.stdout == diff.stdout
    assert managed_zones(corefile_now(coredns)) == ["internal", "corp"]
    again = cli("coredns", "apply", "--kubeconfig", kc, "--forward-to", "127.0.0.1:5999",
                "--zone", "internal,corp")
    assert (again.returncode, again.stdout) == (0, "")
    assert "kube-system/coredns: unchanged" in again.stderr
    assert cli("coredns", "remove", "--kubeconfig", kc).returncode == 0
    assert corefile_now(coredns) == coredns.initial_corefile


def test_cli_errors_are_one_line(coredns: LocalCluster, tmp_path: Path) -> None:
    kc = str(coredns.kubeconfig)
    r = cli("coredns", "apply", "--kubeconfig", kc, "--forward-to", "dns.example:53")
    assert r.returncode == 2  # 1 is diff's "a change is pending"
    assert r.stderr == ("aliasd: error: --forward-to 'dns.example:53': need IP:PORT with an IP "
                        "address (CoreDNS resolves a host name in forward only once, at "
                        "start)\n")
    r = cli("coredns", "apply", "--kubeconfig", kc)  # no --forward-to, no aliasd Service
    assert r.returncode == 2
    assert r.stderr.startswith("aliasd: error: cannot read aliasd's Service aliasd-system/"
                               "aliasd for the forward target: HTTP 404: ")
    assert r.stderr.count("\n") == 1
    r = cli("coredns", "diff", "--kubeconfig", str(tmp_path / "missing"))
    assert r.returncode == 2 and r.stderr.startswith("aliasd: error: cannot load Kubernetes "
                                                     "config from ")
    assert corefile_now(coredns) == coredns.initial_corefile


def test_remove_refuses_while_aliasd_holds_the_lease(coredns: LocalCluster,
                                                    lease_ns: str) -> None:
    """A running aliasd would put its blocks back at once: `remove`
    says how to stop it, changes nothing, and exits 2; --force removes anyway."""
    kc = str(coredns.kubeconfig)
    assert cli("coredns", "apply", "--kubeconfig", kc, "--forward-to",
               "127.0.0.1:5999").returncode == 0
    patched = corefile_now(coredns)
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    coredns.request("POST", f"/apis/coordination.k8s.io/v1/namespaces/{lease_ns}/leases", {
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "aliasd-refuse"},
        "spec": {"holderIdentity": "aliasd-7d9f-x1_abc123", "leaseDurationSeconds": 15,
                 "acquireTime": now, "renewTime": now}})
    lease = f"{lease_ns}/aliasd-refuse"
    try:
        r = cli("coredns", "remove", "--kubeconfig", kc, "--leader-lease", lease)
        assert r.returncode == 2
        assert r.stderr == (
            f"aliasd: error: aliasd is running (Lease {lease} held by aliasd-7d9f-x1_abc123) "
            f"and would put its blocks back; stop it first: kubectl -n {lease_ns} scale "
            "deployment aliasd --replicas=0 (or pass --force)\n")
        assert corefile_now(coredns) == patched
        r = cli("coredns", "remove", "--kubeconfig", kc, "--leader-lease", lease, "--force")
        assert r.returncode == 0, r.stderr
        assert corefile_now(coredns) == coredns.initial_corefile
    finally:
        coredns.request("DELETE", f"/apis/coordination.k8s.io/v1/namespaces/{lease_ns}/leases/"
                                  "aliasd-refuse")


def test_remove_waits_out_a_just_released_lease(coredns: LocalCluster, lease_ns: str) -> None:
    """A rollout releases the Lease and another replica takes it within seconds:
    `remove` in between waits to see, refuses when it is taken, and goes on
    when nobody takes it."""
    kc = str(coredns.kubeconfig)
    leases = f"/apis/coordination.k8s.io/v1/namespaces/{lease_ns}/leases"

    def stamp(ago: float) -> str:
        t = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=ago)
        return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    assert cli("coredns", "apply", "--kubeconfig", kc, "--forward-to",
               "127.0.0.1:5999").returncode == 0
    patched = corefile_now(coredns)
    # Released just now (as LeaderElector.release leaves it): no holder.
    coredns.request("POST", leases, {
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "aliasd-handover"},
        "spec": {"leaseDurationSeconds": 1, "renewTime": stamp(0)}})
    lease = f"{lease_ns}/aliasd-handover"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(ROOT)}
    try:
        with subprocess.Popen([sys.executable, "-m", "aliasd", "coredns", "remove",
                               "--kubeconfig", kc, "--leader-lease", lease],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) as proc:
            assert proc.stderr is not None
            first = proc.stderr.readline()
            assert first.startswith(f"aliasd: Lease {lease} was just released; waiting up to ")
            # Another replica takes it: remove refuses, nothing changed.
            obj = coredns.request("GET", f"{leases}/aliasd-handover")
            obj["spec"].update(holderIdentity="aliasd-7d9f-x2_def456", leaseDurationSeconds=15,
                               acquireTime=stamp(0), renewTime=stamp(0))
            coredns.request("PUT", f"{leases}/aliasd-handover", obj)
            assert proc.wait(timeout=30) == 2
            assert proc.stderr.read() == (
                f"aliasd: error: aliasd is running (Lease {lease} held by aliasd-7d9f-x2_def456) "
                f"and would put its blocks back; stop it first: kubectl -n {lease_ns} scale "
                "deployment aliasd --replicas=0 (or pass --force)\n")
        assert corefile_now(coredns) == patched
        # Released 5 s ago and nobody took it: remove waits the rest, then removes.
        # (Not later: the command must start, on a loaded machine, within the
        # 10 s left, or it finds the handover over and says nothing of it.)
        obj = coredns.request("GET", f"{leases}/aliasd-handover")
        obj["spec"].update(holderIdentity=None, leaseDurationSeconds=1, renewTime=stamp(5))
        coredns.request("PUT", f"{leases}/aliasd-handover", obj)
        r = cli("coredns", "remove", "--kubeconfig", kc, "--leader-lease", lease)
        assert r.returncode == 0, r.stderr
        assert r.stderr.startswith(f"aliasd: Lease {lease} was just released; waiting up to ")
        assert corefile_now(coredns) == coredns.initial_corefile
    finally:
        coredns.request("DELETE", f"{leases}/aliasd-handover")


def test_forward_target_is_the_aliasd_service_cluster_ip(coredns: LocalCluster,
                                                         lease_ns: str) -> None:
    svc = coredns.request("POST", f"/api/v1/namespaces/{lease_ns}/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "aliasd"},
        "spec": {"ports": [{"name": "dns", "port": 53, "targetPort": 5353, "protocol": "UDP"},
                           {"name": "dns-tcp", "port": 53, "targetPort": 5353,
                            "protocol": "TCP"}]}})
    try:
        r = cli("coredns", "apply", "--kubeconfig", str(coredns.kubeconfig))
        assert r.returncode == 0, r.stderr
        assert f"forward . {svc['spec']['clusterIP']}:53\n" in corefile_now(coredns)
    finally:
        coredns.request("DELETE", f"/api/v1/namespaces/{lease_ns}/services/aliasd")


class EditingPatcher(Patcher):
    """Another client edits the Corefile right after our first read."""

    edited = False

    def __init__(self, api: ApiClient, config: PatcherConfig, cluster: LocalCluster,
                 results: Counter[str]) -> None:
        super().__init__(api, config, results=results)
        self.cluster = cluster

    async def _read(self, target: Target) -> dict[str, Any] | None:
        obj = await super()._read(target)
        if not self.edited:
            self.edited = True
            text = obj["data"]["Corefile"] if obj else ""
            await asyncio.to_thread(set_corefile, self.cluster,
                                    text + "example.org:53 {\n    forward . 192.0.2.1\n}\n")
        return obj


async def test_concurrent_edit_during_apply_loses_neither(coredns: LocalCluster,
                                                           kube: ApiClient) -> None:
    results: Counter[str] = Counter()
    config = PatcherConfig(zones=("internal.",), mode="corefile",
                           forward_to=Forward("127.0.0.1", 5999))
    patcher = EditingPatcher(kube, config, coredns, results)
    patcher.forward = config.forward_to
    change = await patcher.apply(COREDNS)
    assert patcher.edited and results == Counter(attempt=2, conflict=1, applied=1)
    text = await asyncio.to_thread(corefile_now, coredns)
    assert text == change.new_value
    assert [b.keys for b in corefile.server_blocks(text)] == [
        (f".:{coredns.dns_port}",), ("example.org:53",), (f"internal:{coredns.dns_port}",)]
    assert corefile.remove_managed(text) == (coredns.initial_corefile
                                             + "example.org:53 {\n    forward . 192.0.2.1\n}\n")


def test_drift_is_repaired_and_user_blocks_are_conflicts(
        coredns: LocalCluster, namespace: str, tmp_path: Path) -> None:
    port = free_udp_tcp_port()
    with run_aliasd(wired(coredns, port, "--zone", "corp"), tmp=tmp_path, dns_port=port) as p:
        wait_for(lambda: managed_zones(corefile_now(coredns)) == ["internal", "corp"],
                 what="aliasd's blocks")
        # Someone deletes the managed block by hand: it comes back within seconds.
        set_corefile(coredns, corefile.remove_managed(corefile_now(coredns), "internal"))
        wait_for(lambda: managed_zones(corefile_now(coredns)) == ["corp", "internal"],
                 timeout=10, what="the deleted block to be restored")
        # ...or alters it: rewritten.
        set_corefile(coredns, corefile_now(coredns).replace(f"127.0.0.1:{port}", "10.9.9.9:53"))
        wait_for(lambda: "10.9.9.9" not in corefile_now(coredns), timeout=10,
                 what="the altered block to be rewritten")
        wait_for(lambda: f"-    forward . 10.9.9.9:53\n+    forward . 127.0.0.1:{port}"
                 in p.logs(), what="the repair's diff in the log")
        assert "was changed by someone else; restoring aliasd's part" in p.logs()
        # A user-owned block for a zone: aliasd withdraws its own and reports.
        user = (corefile.remove_managed(corefile_now(coredns))
                + f"corp:{coredns.dns_port} {{\n    forward . 192.0.2.53\n}}\n")
        set_corefile(coredns, user)
        wait_for(lambda: managed_zones(corefile_now(coredns)) == ["internal"], timeout=10,
                 what="aliasd to leave the user's corp block alone")
        assert corefile.remove_managed(corefile_now(coredns)) == user
        _, ready = wait_for(lambda: (lambda r: r if r[1]["coredns"]["conflicts"] else None)(
            p.http("/readyz")), what="the conflict in /readyz")
        assert ready["ready"] is True
        assert ready["coredns"]["conflicts"] == {"kube-system/coredns": ["corp"]}
        got = wait_for(lambda: [m for r, m in events(coredns, "kube-system", "coredns")
                                if r == "CorefileConflict"], what="CorefileConflict Event")
        assert got == ["zone corp already has a server block aliasd does not own; aliasd "
                       "leaves it alone, so that block decides where corp goes"]
    for e in coredns.request("GET", "/api/v1/namespaces/kube-system/events")["items"]:
        coredns.request("DELETE", f"/api/v1/namespaces/kube-system/events/"
                        f"{e['metadata']['name']}")


def test_two_replicas_one_writer_and_takeover(coredns: LocalCluster, lease_ns: str,
                                              tmp_path: Path) -> None:
    port = free_udp_tcp_port()
    lease = f"{lease_ns}/wiring-{port}"
    args = ["--kubeconfig", str(coredns.kubeconfig), "--zone", "internal", "--coredns-mode",
            "corefile", "--forward-to", f"127.0.0.1:{port}", "--leader-lease", lease,
            "--leader-lease-duration", "3"]
    with run_aliasd(args, tmp=tmp_path) as a, run_aliasd(args, tmp=tmp_path) as b:
        def one_leader() -> AliasdProcess | None:
            leaders = [p for p in (a, b) if p.http("/readyz")[1]["coredns"]["leader"]]
            return leaders[0] if len(leaders) == 1 else None

        leader: AliasdProcess = wait_for(one_leader, what="exactly one leader")
        other = b if leader is a else a
        wait_for(lambda: managed_zones(corefile_now(coredns)) == ["internal"],
                 what="the leader to patch")
        holder = coredns.request("GET", f"/apis/coordination.k8s.io/v1/namespaces/{lease_ns}/"
                                 f"leases/{lease.split('/')[1]}")["spec"]["holderIdentity"]
        assert "became leader" in leader.logs() and holder in leader.logs()
        assert "patched kube-system/coredns" in leader.logs()
        assert "patched kube-system/coredns" not in other.logs()
        assert (metric_or_none(other, "aliasd_corefile_patches_total", result="attempt")
                or 0.0) == 0.0  # no series: never counted
        leader.proc.send_signal(signal.SIGKILL)  # no graceful release: the Lease must expire
        leader.proc.wait()
        set_corefile(coredns, coredns.initial_corefile)
        wait_for(lambda: other.http("/readyz")[1]["coredns"]["leader"], timeout=20,
                 what="the other replica to take over")
        wait_for(lambda: managed_zones(corefile_now(coredns)) == ["internal"], timeout=10,
                 what="the new leader to restore the block")
        assert "patched kube-system/coredns" in other.logs()


@pytest.fixture
def extra_configmap(cluster: LocalCluster) -> Iterator[Any]:
    made: list[str] = []

    def create(name: str, data: dict[str, str]) -> None:
        cluster.request("POST", CM, {"apiVersion": "v1", "kind": "ConfigMap",
                                     "metadata": {"name": name}, "data": data})
        made.append(name)

    yield create
    for name in made:
        cluster.request("DELETE", f"{CM}/{name}")


def test_kube_dns_mode_keeps_other_stub_domains(coredns: LocalCluster,
                                                extra_configmap: Any) -> None:
    stub = '{"acme.local": ["1.2.3.4"],\n "corp.example": ["10.0.0.53"]}'
    extra_configmap("kube-dns", {"stubDomains": stub, "upstreamNameservers": '["8.8.8.8"]'})
    kc = str(coredns.kubeconfig)
    r = cli("coredns", "apply", "--kubeconfig", kc, "--coredns-mode", "kube-dns",
            "--forward-to", "10.96.0.53:53")
    assert r.returncode == 0, r.stderr
    cm = coredns.request("GET", f"{CM}/kube-dns")
    assert json.loads(cm["data"]["stubDomains"]) == {
        "acme.local": ["1.2.3.4"], "corp.example": ["10.0.0.53"], "internal": ["10.96.0.53"]}
    assert cm["data"]["upstreamNameservers"] == '["8.8.8.8"]'
    assert corefile_now(coredns) == coredns.initial_corefile  # only kube-dns was touched
    r = cli("coredns", "apply", "--kubeconfig", kc, "--coredns-mode", "kube-dns",
            "--forward-to", "10.96.0.53:5353")
    assert r.returncode == 2 and "must listen on port 53" in r.stderr
    assert cli("coredns", "remove", "--kubeconfig", kc, "--coredns-mode",
               "kube-dns").returncode == 0
    cm = coredns.request("GET", f"{CM}/kube-dns")
    assert cm["data"] == {"stubDomains": stub, "upstreamNameservers": '["8.8.8.8"]'}
    assert "annotations" not in cm["metadata"] or not cm["metadata"]["annotations"]


def test_auto_mode_wires_node_local_dns_too(coredns: LocalCluster,
                                            extra_configmap: Any) -> None:
    extra_configmap("node-local-dns", {"Corefile": NODE_LOCAL})
    kc = str(coredns.kubeconfig)
    r = cli("coredns", "apply", "--kubeconfig", kc, "--forward-to", "10.96.0.53:53")
    assert r.returncode == 0, r.stderr
    assert "kube-system/coredns: patched" in r.stderr
    assert "kube-system/node-local-dns: patched" in r.stderr
    nl = coredns.request("GET", f"{CM}/node-local-dns")["data"]["Corefile"]
    (ours,) = [b for b in corefile.server_blocks(nl) if b.managed]
    assert ours.keys == ("internal:53",)
    assert corefile.directive(ours, "bind") == ["169.254.20.10", "10.96.0.10"]
    assert corefile.directive(ours, "forward") == [".", "10.96.0.53:53"]
    assert cli("coredns", "remove", "--kubeconfig", kc).returncode == 0
    assert coredns.request("GET", f"{CM}/node-local-dns")["data"]["Corefile"] == NODE_LOCAL
    assert corefile_now(coredns) == coredns.initial_corefile


async def test_wire_is_the_pass_behind_the_cli(coredns: LocalCluster, kube: ApiClient) -> None:
    """``aliasd coredns`` prints what ``wire`` yields: one Change per target,
    written only by apply and remove; what the HTTP API can call too."""
    config = PatcherConfig(zones=("internal.",), mode="corefile",
                           forward_to=Forward("127.0.0.1", 5999))

    async def changes(action: Action) -> list[Change]:
        return [c async for c in wire(kube, config, action=action)]

    [diff] = await changes("diff")
    assert (diff.target, diff.changed) == (COREDNS, True)
    assert await asyncio.to_thread(corefile_now, coredns) == coredns.initial_corefile
    [applied] = await changes("apply")
    assert applied.new_value == diff.new_value
    assert await asyncio.to_thread(corefile_now, coredns) == diff.new_value
    [again] = await changes("apply")
    assert not again.changed
    [removed] = await changes("remove")
    assert removed.changed and removed.new_value == coredns.initial_corefile
    assert await asyncio.to_thread(corefile_now, coredns) == coredns.initial_corefile


async def test_wire_reports_an_unreachable_api_server_as_apply_error() -> None:
    with socket.socket() as held:  # bound, never listening: connections are refused
        held.bind(("127.0.0.1", 0))
        api = ApiClient(Configuration(host=f"http://127.0.0.1:{held.getsockname()[1]}"))
        config = PatcherConfig(zones=("internal.",), mode="corefile",
                               forward_to=Forward("127.0.0.1", 5999))
        try:
            with pytest.raises(ApplyError) as e:
                [c async for c in wire(api, config, action="diff")]
        finally:
            await api.close()
    assert str(e.value).startswith("Kubernetes API: ")
