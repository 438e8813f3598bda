"""The Helm chart's lifecycle in the kind cluster, after the kustomize install
is gone (these tests run after the ``uninstall`` one, in this order): ``helm
install`` with the locally built image, a pod resolving the alias; ``helm
upgrade`` rolling the pods with no failed lookup; an upgrade to an image that
does not exist, the old pods serving until ``helm rollback``; ``helm
uninstall`` giving the Corefile back byte for byte through the chart's
pre-delete hook; and a hook that fails, leaving the release serving with its
CoreDNS block, until the cause is gone and the uninstall is run again.
The cluster is left as these tests found it."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from aliasd.coredns.plan import Forward, corefile_text
from tests.support import ROOT, quickstart
from tests.support.chart import CHART
from tests.support.kind import (
    Kind,
    aliasd_cli,
    dig,
    helm,
    helm_env,
    probers,
    report,
    say,
    wait_every_coredns,
)
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.helm]
ALIAS = "my-fruits.internal"
NAMESPACE = "aliasd-system"
RELEASE = "aliasd"
HOOK = "aliasd-uninstall"
IMAGE = "aliasd:dev"
KIND_VALUES: dict[str, Any] = {
    "image": {"repository": "aliasd", "tag": "dev", "pullPolicy": "Never"}}
"""The image hack/kind-up.sh builds and loads into the nodes (never pulled),
as docs/getting-started/helm.md installs it in kind."""
DENY = "e2e-deny-the-uninstall-hook"
DENIAL = "the e2e test denies the uninstall hook"


@pytest.fixture(scope="module", autouse=True)
def without_aliasd(kind: Kind) -> Iterator[None]:
    """No aliasd in the cluster, as the chart README's "Coming from kustomize"
    says: the kustomize install's uninstall steps (the ``uninstall`` test ran
    the first three), then its objects deleted. Afterwards, the cluster as
    found, even after a failed test: no release (its hook gives the Corefile
    back), the namespace and the CRD (which Helm never deletes) gone too."""
    if kind.kubectl("-n", NAMESPACE, "get", "deployment", "aliasd", "--ignore-not-found",
                    "-o", "name"):
        removed = aliasd_cli(kind, "coredns", "remove", "--stop-deployment",
                             f"{NAMESPACE}/aliasd")
        assert removed.returncode == 0, removed.stderr
    delete_aliasd(kind, "-k", str(ROOT / "manifests" / "kind"))
    assert kind.corefile() == kind.initial_corefile
    yield
    allow_the_hook(kind)
    if helm(kind, "status", RELEASE, "-n", NAMESPACE).returncode == 0:
        out = helm(kind, "uninstall", RELEASE, "-n", NAMESPACE, "--timeout", "300s")
        assert out.returncode == 0, out.stderr
    delete_aliasd(kind, "-f", str(CHART / "crds"))
    assert kind.corefile() == kind.initial_corefile


def delete_aliasd(kind: Kind, *what: str) -> None:
    kind.kubectl("delete", *what, "--ignore-not-found", "--wait=true", timeout=300)
    kind.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true",
                 timeout=300)


@pytest.fixture(scope="module")
def fruits_ip(kind: Kind) -> str:
    return kind.cluster_ip("micro-shake-factory", "fruits-api-service")


def wired(kind: Kind) -> str:
    """The cluster's initial Corefile with aliasd's block for the zone,
    forwarding to the release's Service."""
    text, conflicts = corefile_text(kind.initial_corefile, ["internal."], Forward(
        kind.cluster_ip(NAMESPACE, RELEASE), 53))
    assert conflicts == {}
    return text


def install(kind: Kind, client: str, fruits_ip: str) -> None:
    """The README quickstart's Helm block as written (``hack/kind-up.sh
    --helm``: ``helm upgrade --install`` with the image it built, as
    docs/getting-started/helm.md installs it in kind), then until every
    CoreDNS replica answers the alias."""
    t0 = time.monotonic()
    out = quickstart.run("helm", env=helm_env(kind))
    assert out.returncode == 0, out.stderr
    say(f"e2e time: hack/kind-up.sh --helm (image, helm install, every CoreDNS replica "
        f"answering {ALIAS}): {time.monotonic() - t0:.1f} s")
    kind.wait_settled()
    assert {c["image"] for p in kind.aliasd_pods() for c in p["spec"]["containers"]} == {
        IMAGE}
    assert kind.corefile() == wired(kind)
    # kind-up asked every replica already: asked again, by this suite's client.
    wait_every_coredns(kind, client, ALIAS, ("NOERROR", [fruits_ip]))


def revisions(kind: Kind) -> list[tuple[int, str]]:
    out = helm(kind, "history", RELEASE, "-n", NAMESPACE, "-o", "json")
    assert out.returncode == 0, out.stderr
    return [(h["revision"], h["status"]) for h in json.loads(out.stdout)]


def replica_sets(kind: Kind) -> set[str]:
    return {o["name"] for p in kind.aliasd_pods() for o in p["metadata"]["ownerReferences"]}


def test_a_values_typo_is_refused_by_the_schema_and_installs_nothing(kind: Kind) -> None:
    out = helm(kind, "install", RELEASE, str(CHART), "-n", NAMESPACE, "--create-namespace",
               "--set", "replica=3", values=KIND_VALUES)
    assert out.returncode == 1
    assert [line for line in out.stderr.splitlines() if line] == [
        "Error: INSTALLATION FAILED: values don't meet the specifications of the schema(s) "
        "in the following chart(s):", "aliasd:",
        "- at '': additional properties 'replica' not allowed"]
    assert helm(kind, "status", RELEASE, "-n", NAMESPACE).returncode == 1
    assert kind.corefile() == kind.initial_corefile


def test_helm_install_then_a_pod_resolves_the_alias(kind: Kind, client: str,
                                                    fruits_ip: str) -> None:
    install(kind, client, fruits_ip)
    assert dig(kind, client, ALIAS) == ("NOERROR", [fruits_ip])  # the pod's own resolver
    assert revisions(kind) == [(1, "deployed")]
    lines = quickstart.ask(kind.env)  # the quickstart's "then" block
    assert fruits_ip in lines, lines
    rows = quickstart.listed("\n".join(lines), ALIAS + ".")
    assert [row[1] for row in rows] == [fruits_ip], lines


def test_kind_up_will_not_apply_kustomize_over_the_release(kind: Kind) -> None:
    done = subprocess.run(["hack/kind-up.sh"], cwd=ROOT, env=helm_env(kind),
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines()[-1] == (
        "kind-up: error: aliasd is installed here with Helm; rerun with --helm, or "
        "`helm uninstall aliasd -n aliasd-system` first")
    assert revisions(kind) == [(1, "deployed")]


def test_helm_upgrade_rolls_the_pods_with_zero_failed_lookups(kind: Kind,
                                                              fruits_ip: str) -> None:
    kind.wait_settled()
    before = replica_sets(kind)
    via_coredns, direct = probers(kind, fruits_ip)
    out = helm(kind, "upgrade", RELEASE, str(CHART), "-n", NAMESPACE, "--wait", "--timeout",
               "180s", values=KIND_VALUES | {"podAnnotations": {"e2e.aliasd.io/revision": "2"}})
    assert out.returncode == 0, out.stderr
    kind.wait_settled()
    a, b = via_coredns.stop(), direct.stop()
    report("helm upgrade (pods rolled)", via_coredns=a, direct=b)
    assert (a["failed"], b["failed"]) == (0, 0)
    pods = kind.aliasd_pods()
    assert replica_sets(kind).isdisjoint(before)
    assert {p["metadata"]["annotations"].get("e2e.aliasd.io/revision") for p in pods} == {"2"}
    assert kind.corefile() == wired(kind)
    assert revisions(kind) == [(1, "superseded"), (2, "deployed")]


def test_an_upgrade_to_a_missing_image_serves_from_the_old_pods_until_rollback(
        kind: Kind, fruits_ip: str) -> None:
    """Without ``--wait`` (Helm 3's default) helm returns at once; the one new
    pod cannot start (the image is in no node), so the Deployment keeps both
    old ones (with 2 replicas its default strategy removes none before a new
    one is ready)."""
    kind.wait_settled()
    good = replica_sets(kind)
    via_coredns, direct = probers(kind, fruits_ip)
    out = helm(kind, "upgrade", RELEASE, str(CHART), "-n", NAMESPACE,
               values=KIND_VALUES | {"podAnnotations": {"e2e.aliasd.io/revision": "2"}}
               | {"image": KIND_VALUES["image"] | {"tag": "no-such-tag"}})
    assert out.returncode == 0, out.stderr

    def stuck() -> list[str]:
        return [s["state"]["waiting"]["reason"] for p in kind.aliasd_pods()
                for s in p["status"].get("containerStatuses", [])
                if s["image"] == "aliasd:no-such-tag" and "waiting" in s["state"]]

    wait_for(lambda: stuck() == ["ErrImageNeverPull"], timeout=120,
             what="the new pod failing to start")
    ready = [p for p in kind.aliasd_pods() if any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in p["status"].get("conditions", []))]
    assert [p["spec"]["containers"][0]["image"] for p in ready] == [IMAGE, IMAGE]
    assert {o["name"] for p in ready for o in p["metadata"]["ownerReferences"]} == good
    assert kind.corefile() == wired(kind)
    out = helm(kind, "rollback", RELEASE, "2", "-n", NAMESPACE, "--wait", "--timeout", "180s")
    assert out.returncode == 0, out.stderr
    kind.wait_settled()
    a, b = via_coredns.stop(), direct.stop()
    report("helm upgrade to a missing image, then helm rollback", via_coredns=a, direct=b)
    assert (a["failed"], b["failed"]) == (0, 0)
    # Back on the previous revision's pod template: its ReplicaSet again.
    assert replica_sets(kind) == good
    assert {c["image"] for p in kind.aliasd_pods() for c in p["spec"]["containers"]} == {
        IMAGE}
    assert kind.corefile() == wired(kind)
    assert revisions(kind) == [(1, "superseded"), (2, "superseded"), (3, "superseded"),
                               (4, "deployed")]


def test_helm_uninstall_gives_the_corefile_back(kind: Kind, client: str) -> None:
    kind.wait_settled()
    out = helm(kind, "uninstall", RELEASE, "-n", NAMESPACE, "--timeout", "300s")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [f'release "{RELEASE}" uninstalled']
    assert kind.corefile() == kind.initial_corefile
    assert kind.aliasd_pods() == []
    # The hook's objects went with the release's (hook-succeeded).
    for what in (("-n", NAMESPACE, "job", HOOK), ("-n", NAMESPACE, "serviceaccount", HOOK),
                 ("-n", "kube-system", "role", HOOK), ("-n", NAMESPACE, "deployment", RELEASE)):
        assert kind.kubectl("get", *what, "--ignore-not-found", "-o", "name") == "", what
    seconds = wait_every_coredns(kind, client, ALIAS, ("NXDOMAIN", []))
    say(f"e2e: helm uninstall: every CoreDNS replica answers {ALIAS} NXDOMAIN "
        f"{seconds:.1f} s after the uninstall")
    assert dig(kind, client, ALIAS) == ("NXDOMAIN", [])
    # What Helm leaves (docs/operations/uninstall.md): aliasd's Lease.
    kind.kubectl("-n", NAMESPACE, "delete", "lease", "aliasd")


def deny_the_hook(kind: Kind) -> None:
    """An admission policy refusing the hook's ServiceAccount any change of the
    Deployment's scale: the hook fails where it would stop aliasd."""
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": DENY},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": ["apps"], "apiVersions": ["*"], "operations": ["UPDATE"],
                "resources": ["deployments/scale"]}]},
            "matchConditions": [{"name": "the-uninstall-hook", "expression":
                                 "request.userInfo.username == 'system:serviceaccount:"
                                 f"{NAMESPACE}:{HOOK}'"}],
            "validations": [{"expression": "false", "message": DENIAL}]}}
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": DENY},
        "spec": {"policyName": DENY, "validationActions": ["Deny"]}}
    kind.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([policy, binding]))
    wait_for(lambda: hook_denied(kind), timeout=60, interval=0.5, what="the policy in force")


def allow_the_hook(kind: Kind) -> None:
    """The policy gone, if there is one."""
    if kind.kubectl("delete", "validatingadmissionpolicybinding,validatingadmissionpolicy",
                    DENY, "--ignore-not-found"):
        wait_for(lambda: not hook_denied(kind), timeout=60, interval=0.5,
                 what="the policy out of force")


def hook_denied(kind: Kind) -> bool:
    """Whether the API server refuses the hook's scaling of aliasd now (a
    server-side dry run, as the hook's user in a group RBAC lets do it, so only
    admission can refuse): a new policy takes effect once the API server has
    loaded it, a deleted one stops once it has dropped it."""
    out = subprocess.run(
        ["kubectl", "-n", NAMESPACE, "scale", "deployment", RELEASE, "--replicas=2",
         "--dry-run=server", f"--as=system:serviceaccount:{NAMESPACE}:{HOOK}",
         "--as-group=system:masters"], env=kind.env, capture_output=True, text=True,
        timeout=60, check=False)
    if out.returncode == 0:
        return False
    assert f"denied request: {DENIAL}" in out.stderr, out.stderr
    return True


def test_a_failed_uninstall_hook_leaves_the_release_serving(kind: Kind, client: str,
                                                           fruits_ip: str) -> None:
    """The hook may not scale aliasd's Deployment: it says so in one line and
    stops nothing, ``helm uninstall`` fails printing that line, the release
    keeps every object and serves with its block; no lookup fails. With the
    cause gone, ``helm uninstall`` again succeeds."""
    install(kind, client, fruits_ip)
    deny_the_hook(kind)
    try:
        via_coredns, direct = probers(kind, fruits_ip)
        out = helm(kind, "uninstall", RELEASE, "-n", NAMESPACE, "--timeout", "300s")
        a, b = via_coredns.stop(), direct.stop()
        report("helm uninstall with a failing hook", via_coredns=a, direct=b)
        line = (f"aliasd: error: scale Deployment {NAMESPACE}/{RELEASE} to 0: HTTP 422: "
                f'deployments.apps "{RELEASE}" is forbidden: ValidatingAdmissionPolicy '
                f"'{DENY}' with binding '{DENY}' denied request: {DENIAL}; nothing was changed")
        said = [ln for ln in out.stderr.splitlines() if ln.startswith("aliasd:")]
        say(f"e2e: helm uninstall with a failing hook: exit {out.returncode}, the hook said: "
            f"{said[:1]}")
        assert out.returncode == 1
        # helm prints the log of each of the Job's pods (backoffLimit 1: two tries).
        assert said == [line] * 2
        assert f"\t* job {HOOK} failed: BackoffLimitExceeded" in out.stderr.splitlines()
        # The failed Job stays, for its log; the line is its pods' termination message.
        assert kind.kubectl("-n", NAMESPACE, "logs", f"job/{HOOK}").splitlines() == [line]
        hook_pods = kind.json("-n", NAMESPACE, "get", "pods", "-l",
                              f"app.kubernetes.io/name={HOOK}")["items"]
        assert [(s["state"]["terminated"]["exitCode"],
                 s["state"]["terminated"]["message"].strip())
                for p in hook_pods for s in p["status"]["containerStatuses"]] == [
            (2, line), (2, line)]
        # The release is whole and serving, its block in place.
        status = helm(kind, "status", RELEASE, "-n", NAMESPACE, "-o", "json")
        assert json.loads(status.stdout)["info"]["status"] == "uninstalling"
        manifest = helm(kind, "get", "manifest", RELEASE, "-n", NAMESPACE).stdout
        for d in yaml.safe_load_all(manifest):
            if d:
                ns = ["-n", d["metadata"]["namespace"]] if "namespace" in d["metadata"] else []
                assert kind.kubectl("get", *ns, d["kind"], d["metadata"]["name"], "-o",
                                    "name").strip(), d["kind"]
        assert kind.settled()
        assert kind.corefile() == wired(kind)
        assert (a["failed"], b["failed"]) == (0, 0)
    finally:
        allow_the_hook(kind)
    # Fix the cause, uninstall again (docs/operations/uninstall.md).
    out = helm(kind, "uninstall", RELEASE, "-n", NAMESPACE, "--timeout", "300s")
    assert out.returncode == 0, out.stderr
    assert kind.corefile() == kind.initial_corefile
    assert kind.kubectl("-n", NAMESPACE, "get", "job", HOOK, "--ignore-not-found",
                        "-o", "name") == ""
