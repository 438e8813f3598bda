"""The chart against the API server: it accepts every rendered object
(server-side dry run), and the uninstall hook, run as its own ServiceAccount,
stops aliasd and gives the Corefile back byte for byte, refuses to stop
anything it could not then restore, and is granted exactly what it uses."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from aliasd.coredns import corefile
from aliasd_dev import LocalCluster
from tests.support.chart import (
    OPTIONAL,
    container_env,
    corefile_now,
    hook_docs,
    installed,
    one,
    render,
    replicas,
    review,
    token,
)
from tests.support.process import ALIASD_SCRIPT, api_refusals, run_aliasd
from tests.support.waiting import wait_for


@pytest.mark.cluster
@pytest.mark.parametrize("values", [{}, OPTIONAL | {"serviceMonitor": {"enabled": False}}],
                         ids=["defaults", "optional-parts"])
def test_the_api_server_accepts_the_rendered_chart(cluster: LocalCluster, namespace: str,
                                                   values: dict[str, Any]) -> None:
    """Server-side dry run of every object, hooks included (the ServiceMonitor
    needs the Prometheus Operator's CRD, which this cluster does not serve)."""
    docs = render(values=values, namespace=namespace)
    for d in docs:
        cluster.apply(d, dry_run=True)



@pytest.mark.cluster
@pytest.mark.usefixtures("coredns")
def test_uninstall_hook_stops_aliasd_and_restores_the_corefile(
        cluster: LocalCluster, namespace: str, tmp_path: Path) -> None:
    """The release's objects applied, aliasd running as the chart's
    ServiceAccount and holding the Lease, CoreDNS wired; then the hook's command
    as its own ServiceAccount: it scales the Deployment to 0, waits until the
    replica (stopped here by the test, as a kubelet would) releases the Lease,
    and the Corefile is byte for byte as before. Run twice, the second run
    changes nothing."""
    release, full = "hooktest", "hooktest-aliasd"
    docs = render(release=release, namespace=namespace)
    with installed(cluster, docs):
        pod_spec = one(docs, "Deployment", full)["spec"]["template"]["spec"]
        (c,) = pod_spec["containers"]
        run_env = container_env(c, namespace) | {
            "POD_NAME": f"{full}-7d9f-x1", "ALIASD_COREDNS_MODE": "auto",  # the pod's default
            "ALIASD_STATE_FILE": str(tmp_path / "state.json"),
            "ALIASD_LEADER_LEASE_DURATION": "3",
            "KUBECONFIG": str(cluster.write_kubeconfig(
                tmp_path / "aliasd-kubeconfig", user=full,
                token=token(cluster, namespace, full)))}
        (job_c,) = one(docs, "Job", f"{full}-uninstall")["spec"]["template"]["spec"][
            "containers"]
        hook_env = container_env(job_c, namespace) | {
            "KUBECONFIG": str(cluster.write_kubeconfig(
                tmp_path / "hook-kubeconfig", user=f"{full}-uninstall",
                token=token(cluster, namespace, f"{full}-uninstall")))}
        hook_argv = [*ALIASD_SCRIPT, *job_c["args"]]
        before = corefile_now(cluster)
        assert before == cluster.initial_corefile
        assert replicas(cluster, namespace, full) == 2
        log = tmp_path / "hook.log"
        with run_aliasd([], tmp=tmp_path, env=run_env, argv=["aliasd", *c["args"]]) as p:
            wait_for(lambda: corefile.managed_regions(corefile_now(cluster)) != [],
                     what="CoreDNS wired by the running replica")
            # The chart's own RBAC under another release name: nothing refused.
            assert api_refusals(p.http("/metrics")[1]) == {}, p.logs()
            with log.open("w") as out:
                hook = subprocess.Popen(hook_argv, env=hook_env, stdout=out,
                                        stderr=subprocess.STDOUT, text=True)
            # The Deployment controller's part: the replica stops once scaled to 0.
            wait_for(lambda: replicas(cluster, namespace, full) == 0 or hook.poll() is not None,
                     timeout=30, what="the hook scaling the Deployment to 0")
            assert hook.poll() is None, log.read_text()
            assert corefile.managed_regions(corefile_now(cluster)) != []
        assert hook.wait(timeout=90) == 0, log.read_text()
        assert corefile_now(cluster) == before
        # Twice: nothing left to stop or remove, and it says so without failing.
        again = subprocess.run(hook_argv, env=hook_env, capture_output=True, text=True,
                               timeout=90, check=False)
        assert again.returncode == 0, again.stderr
        assert again.stderr.splitlines()[-1] == "kube-system/coredns: unchanged"
        assert corefile_now(cluster) == before
        assert replicas(cluster, namespace, full) == 0


@pytest.mark.cluster
def test_uninstall_hook_without_the_coredns_configmap_stops_nothing(
        cluster: LocalCluster, namespace: str, tmp_path: Path) -> None:
    """The ConfigMap the chart was told to wire does not exist: the hook says so
    and exits 2 before scaling anything, so the release stays whole."""
    release, full = "nocm", "nocm-aliasd"
    docs = render("coredns.configMap=kube-system/no-such-coredns", "coredns.mode=corefile",
                  release=release, namespace=namespace)
    with installed(cluster, docs):
        (job_c,) = one(docs, "Job", f"{full}-uninstall")["spec"]["template"]["spec"][
            "containers"]
        env = container_env(job_c, namespace) | {
            "KUBECONFIG": str(cluster.write_kubeconfig(
                tmp_path / "hook-kubeconfig", user=f"{full}-uninstall",
                token=token(cluster, namespace, f"{full}-uninstall")))}
        out = subprocess.run([*ALIASD_SCRIPT, *job_c["args"]], env=env, capture_output=True,
                             text=True, timeout=60, check=False)
        assert out.returncode == 2, out.stderr
        assert out.stderr.splitlines() == [
            "aliasd: error: ConfigMap kube-system/no-such-coredns not found; "
            "nothing was changed"]
        assert replicas(cluster, namespace, full) == 2
        assert corefile_now(cluster) == cluster.initial_corefile


@pytest.mark.cluster
def test_the_uninstall_hook_is_granted_exactly_what_it_uses(cluster: LocalCluster,
                                                            namespace: str) -> None:
    full = "grants-aliasd"
    docs = render(release="grants", namespace=namespace)
    user = f"system:serviceaccount:{namespace}:{full}-uninstall"
    with installed(cluster, hook_docs(docs)):
        allowed = [
            ("get", "deployments/scale", "apps", namespace, full),
            ("patch", "deployments/scale", "apps", namespace, full),
            ("get", "leases", "coordination.k8s.io", namespace, full),
            ("get", "configmaps", "", "kube-system", "coredns"),
            ("patch", "configmaps", "", "kube-system", "coredns"),
            ("patch", "configmaps", "", "kube-system", "coredns-custom"),
            ("patch", "configmaps", "", "kube-system", "kube-dns"),
            ("patch", "configmaps", "", "kube-system", "node-local-dns"),
        ]
        assert [a for a in allowed if not review(cluster, user, namespace, *a)] == []
        denied = [
            ("patch", "deployments", "apps", namespace, full),
            ("delete", "deployments", "apps", namespace, full),
            ("patch", "deployments/scale", "apps", namespace, "someone-else"),
            ("patch", "deployments/scale", "apps", "kube-system", "coredns"),
            ("update", "leases", "coordination.k8s.io", namespace, full),
            ("delete", "leases", "coordination.k8s.io", namespace, full),
            ("list", "configmaps", "", "kube-system", ""),
            ("update", "configmaps", "", "kube-system", "coredns"),
            ("delete", "configmaps", "", "kube-system", "coredns"),
            ("patch", "configmaps", "", "kube-system", "kube-proxy"),
            ("get", "secrets", "", namespace, "x"),
            ("create", "pods", "", namespace, ""),
            ("list", "services", "", "", ""),
        ]
        assert [d for d in denied if review(cluster, user, namespace, *d)] == []


