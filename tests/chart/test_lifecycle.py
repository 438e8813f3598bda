"""``helm install``, ``upgrade``, ``rollback`` and ``uninstall`` themselves on
the local control plane, the test playing the controllers it does not run."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from aliasd.coredns import corefile
from aliasd_dev import LocalCluster, ensure_binaries
from aliasd_dev.cluster import resource_path
from tests.support.chart import (
    CHART,
    container_env,
    corefile_now,
    finish_job,
    get_or_none,
    helm_env,
    key,
    replicas,
    run_helm,
    run_hook_job,
    token,
)
from tests.support.process import run_aliasd
from tests.support.waiting import wait_for


@pytest.mark.cluster
@pytest.mark.usefixtures("coredns")
def test_helm_install_then_uninstall_gives_the_corefile_back(
        cluster: LocalCluster, namespace: str, tmp_path: Path) -> None:
    """``helm install`` and ``helm uninstall`` themselves, on the local control
    plane. It runs no controllers, so the test plays their parts: aliasd runs
    as the release's pod (as its ServiceAccount), stopped once the hook scaled
    the Deployment to 0; the hook Job's command runs as its pod would, and its
    outcome is written to the Job's status, which helm waits for."""
    env = helm_env(cluster, tmp_path)
    release, full = "lifecycle", "lifecycle-aliasd"
    before = corefile_now(cluster)
    out = run_helm(env, "install", release, str(CHART), "-n", namespace)
    assert out.returncode == 0, out.stderr
    try:
        pod_spec = cluster.request(
            "GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/{full}")["spec"][
            "template"]["spec"]
        (c,) = pod_spec["containers"]
        run_env = container_env(c, namespace) | {
            "POD_NAME": f"{full}-7d9f-x1", "ALIASD_COREDNS_MODE": "auto",
            "ALIASD_STATE_FILE": str(tmp_path / "state.json"),
            "KUBECONFIG": str(cluster.write_kubeconfig(
                tmp_path / "aliasd-kubeconfig", user=full,
                token=token(cluster, namespace, full)))}
        job = f"{full}-uninstall"
        with run_aliasd([], tmp=tmp_path, env=run_env, argv=["aliasd", *c["args"]]):
            wait_for(lambda: corefile.managed_regions(corefile_now(cluster)) != [],
                     what="CoreDNS wired by the release's replica")
            uninstall = subprocess.Popen(
                [str(ensure_binaries() / "helm"), "uninstall", release, "-n", namespace,
                 "--timeout", "120s"], env=env, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True)
            wait_for(lambda: get_or_none(
                cluster, f"/apis/batch/v1/namespaces/{namespace}/jobs/{job}"),
                timeout=60, what="helm creating the hook Job")
            hook = run_hook_job(cluster, namespace, job, tmp_path)
            wait_for(lambda: replicas(cluster, namespace, full) == 0 or hook.poll() is not None,
                     timeout=30, what="the hook scaling the Deployment to 0")
        assert hook.wait(timeout=90) == 0, (tmp_path / f"{job}.log").read_text()
        finish_job(cluster, namespace, job, succeeded=True)
        stdout, stderr = uninstall.communicate(timeout=150)
        assert uninstall.returncode == 0, stderr
        assert stdout.splitlines() == [f'release "{release}" uninstalled']
        assert corefile_now(cluster) == before
        # The release's objects and the hook's are gone.
        for path in (f"/apis/apps/v1/namespaces/{namespace}/deployments/{full}",
                     f"/api/v1/namespaces/{namespace}/serviceaccounts/{job}",
                     f"/apis/batch/v1/namespaces/{namespace}/jobs/{job}",
                     f"/apis/rbac.authorization.k8s.io/v1/namespaces/kube-system/roles/{job}",
                     f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{full}"):
            assert get_or_none(cluster, path) is None, path
        # Twice: helm says the release is gone and changes nothing.
        again = run_helm(env, "uninstall", release, "-n", namespace)
        assert again.returncode == 1
        assert again.stderr.splitlines() == [
            f"Error: uninstall: Release not loaded: {release}: release: not found"]
    finally:
        run_helm(env, "uninstall", release, "-n", namespace, "--no-hooks")


@pytest.mark.cluster
def test_a_failed_uninstall_hook_leaves_the_release_whole(
        cluster: LocalCluster, namespace: str, tmp_path: Path) -> None:
    """The cluster DNS ConfigMap the release wires is gone: the hook says so and
    stops nothing, helm uninstall fails, and the release is still deployed with
    all its objects and its replicas."""
    env = helm_env(cluster, tmp_path)
    release, full = "broken", "broken-aliasd"
    out = run_helm(env, "install", release, str(CHART), "-n", namespace,
                   "--set", "coredns.mode=corefile",
                   "--set", "coredns.configMap=kube-system/no-such-coredns")
    assert out.returncode == 0, out.stderr
    try:
        job = f"{full}-uninstall"
        uninstall = subprocess.Popen(
            [str(ensure_binaries() / "helm"), "uninstall", release, "-n", namespace,
             "--timeout", "120s"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        wait_for(lambda: get_or_none(
            cluster, f"/apis/batch/v1/namespaces/{namespace}/jobs/{job}"),
            timeout=60, what="helm creating the hook Job")
        hook = run_hook_job(cluster, namespace, job, tmp_path)
        assert hook.wait(timeout=60) == 2
        assert (tmp_path / f"{job}.log").read_text().splitlines() == [
            "aliasd: error: ConfigMap kube-system/no-such-coredns not found; nothing was changed"]
        finish_job(cluster, namespace, job, succeeded=False)
        _, stderr = uninstall.communicate(timeout=150)
        assert uninstall.returncode == 1
        # The reason is the Job's: its log says why (kubectl logs job/...).
        assert f"\t* job {job} failed: BackoffLimitExceeded" in stderr.splitlines(), stderr
        assert replicas(cluster, namespace, full) == 2
        # Helm 3 marks the release before it runs the hook, and leaves the mark;
        # every object of the release is still there.
        status = run_helm(env, "status", release, "-n", namespace, "-o", "json")
        assert json.loads(status.stdout)["info"]["status"] == "uninstalling"
        manifest = run_helm(env, "get", "manifest", release, "-n", namespace).stdout
        for d in yaml.safe_load_all(manifest):
            if d:
                assert get_or_none(cluster, f"{resource_path(d)}/{d['metadata']['name']}"), key(d)
        # The failed Job stays, for its pod's log.
        assert get_or_none(cluster, f"/apis/batch/v1/namespaces/{namespace}/jobs/{job}")
    finally:
        # With nothing to restore, --no-hooks skips the hook.
        done = run_helm(env, "uninstall", release, "-n", namespace, "--no-hooks")
        assert done.returncode == 0, done.stderr


@pytest.mark.cluster
def test_helm_upgrade_and_rollback_leave_the_hook_alone(
        cluster: LocalCluster, namespace: str, tmp_path: Path) -> None:
    """An upgrade to an image that cannot start, then a rollback: the API server
    takes both (no immutable field changes, e.g. the selector), and neither runs
    the uninstall hook. That the old pods keep serving through such an upgrade
    is the Deployment controller's part, measured in kind."""
    env = helm_env(cluster, tmp_path)
    release, full = "rolling", "rolling-aliasd"
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments/{full}"

    def image() -> str:
        (c,) = cluster.request("GET", path)["spec"]["template"]["spec"]["containers"]
        value: str = c["image"]
        return value

    typo = run_helm(env, "install", release, str(CHART), "-n", namespace, "--set", "replica=3")
    assert typo.returncode == 1
    assert [line for line in typo.stderr.splitlines() if line] == [
        "Error: INSTALLATION FAILED: values don't meet the specifications of the schema(s) "
        "in the following chart(s):", "aliasd:",
        "- at '': additional properties 'replica' not allowed"]
    assert run_helm(env, "install", release, str(CHART), "-n", namespace).returncode == 0
    try:
        assert image() == "ghcr.io/aliasd/aliasd:0.1.0"
        out = run_helm(env, "upgrade", release, str(CHART), "-n", namespace,
                       "--set", "image.tag=does-not-exist", "--set", "replicas=3")
        assert out.returncode == 0, out.stderr
        assert image() == "ghcr.io/aliasd/aliasd:does-not-exist"
        out = run_helm(env, "rollback", release, "1", "-n", namespace)
        assert out.returncode == 0, out.stderr
        assert image() == "ghcr.io/aliasd/aliasd:0.1.0"
        assert replicas(cluster, namespace, full) == 2
        history = json.loads(run_helm(env, "history", release, "-n", namespace,
                                      "-o", "json").stdout)
        assert [(h["revision"], h["status"]) for h in history] == [
            (1, "superseded"), (2, "superseded"), (3, "deployed")]
        assert get_or_none(
            cluster, f"/apis/batch/v1/namespaces/{namespace}/jobs/{full}-uninstall") is None
        assert corefile_now(cluster) == cluster.initial_corefile
    finally:
        run_helm(env, "uninstall", release, "-n", namespace, "--no-hooks")
