"""The kind cluster of the e2e suite: kubectl, helm and aliasd's CLI against
it, pods on its control-plane node, digging at every CoreDNS replica, DNS
probers, the aliasd Lease, and the figures measured there (printed at the end
of the run by tests/e2e/conftest.py)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from aliasd_dev import ensure_binaries
from tests.support import ROOT
from tests.support.waiting import wait_for

REPORT: list[str] = []
"""Measured figures, printed at the end of the run (never asserted)."""


def say(line: str) -> None:
    REPORT.append(line)
    print(line)


PROBER = (ROOT / "tests" / "e2e" / "prober.py").read_text()
"""What a prober pod runs (``start_prober``)."""


@dataclass
class Kind:
    env: dict[str, str]
    initial_corefile: str
    control_plane: str
    times: dict[str, float] = field(default_factory=dict)

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 120) -> str:
        p = subprocess.run(["kubectl", *args], env=self.env, input=input, text=True,
                           capture_output=True, timeout=timeout, check=False)
        if check and p.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: exit {p.returncode}: {p.stderr}")
        return p.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json"))

    def corefile(self) -> str:
        return str(self.json("-n", "kube-system", "get", "configmap", "coredns")["data"][
            "Corefile"])

    def cluster_ip(self, namespace: str, name: str) -> str:
        return str(self.json("-n", namespace, "get", "service", name)["spec"]["clusterIP"])

    def aliasd_pods(self) -> list[dict[str, Any]]:
        return list(self.json("-n", "aliasd-system", "get", "pods", "-l",
                              "app.kubernetes.io/name=aliasd")["items"])

    def settled(self, replicas: int = 2) -> bool:
        """Exactly ``replicas`` aliasd pods, all Ready, none terminating."""
        pods = self.aliasd_pods()
        return len(pods) == replicas and all(
            "deletionTimestamp" not in p["metadata"] and any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in p["status"].get("conditions", [])) for p in pods)

    def wait_settled(self, replicas: int = 2) -> None:
        wait_for(lambda: self.settled(replicas), timeout=180, interval=0.5,
                 what=f"{replicas} ready aliasd pods and no terminating one")

    def pod(self, name: str, image: str, command: list[str], *, namespace: str = "default",
            service_account: str = "default", token_audience: str | None = None,
            labels: dict[str, str] | None = None) -> None:
        """A pod on the control-plane node (never drained, never restarted);
        ``token_audience``: the ServiceAccount's token for that audience is
        mounted at /var/run/secrets/tokens/token (a projected volume)."""
        ns = ["-n", namespace]
        self.kubectl(*ns, "delete", "pod", name, "--ignore-not-found", "--wait=true")
        container: dict[str, Any] = {"name": "c", "image": image, "imagePullPolicy": "Never",
                                     "command": command}
        pod_spec: dict[str, Any] = {
            "nodeName": self.control_plane, "restartPolicy": "Never",
            "serviceAccountName": service_account,
            "tolerations": [{"operator": "Exists"}], "terminationGracePeriodSeconds": 1,
            "containers": [container]}
        if token_audience is not None:
            container["volumeMounts"] = [{"name": "token", "mountPath": "/var/run/secrets/tokens",
                                          "readOnly": True}]
            pod_spec["volumes"] = [{"name": "token", "projected": {"sources": [
                {"serviceAccountToken": {"path": "token", "audience": token_audience,
                                         "expirationSeconds": 3600}}]}}]
        spec = {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "labels": labels or {}}, "spec": pod_spec}
        self.kubectl(*ns, "apply", "-f", "-", input=json.dumps(spec))
        self.kubectl(*ns, "wait", "--for=condition=Ready", f"pod/{name}", "--timeout=120s")


@dataclass
class Prober:
    kind: Kind
    name: str

    def stop(self) -> dict[str, Any]:
        self.kind.kubectl("exec", self.name, "--", "python", "-c",
                          "open('/tmp/stop', 'w').close()")
        wait_for(lambda: "RESULT " in self.kind.kubectl("logs", self.name), timeout=30,
                 what=f"{self.name}'s result")
        logs = self.kind.kubectl("logs", self.name)
        result: dict[str, Any] = json.loads(logs.split("RESULT ", 1)[1])
        result["fail_lines"] = [ln for ln in logs.splitlines() if ln.startswith("FAIL")][:20]
        self.kind.kubectl("delete", "pod", self.name, "--wait=false")
        return result


def start_prober(kind: Kind, name: str, *, server: str, port: int = 53,
                 qname: str = "my-fruits.internal", want: str, rate: int = 25) -> Prober:
    """A pod querying ``server`` ``rate`` times a second until stopped."""
    kind.pod(name, "aliasd:dev", ["python", "-c", PROBER, server, str(port), qname, want,
                                  str(rate)])
    return Prober(kind, name)


def lease_holder(kind: Kind) -> str:
    lease = kind.json("-n", "aliasd-system", "get", "lease", "aliasd")
    return str(lease["spec"].get("holderIdentity") or "")


def probers(kind: Kind, want: str) -> tuple[Prober, Prober]:
    """One prober through CoreDNS (kube-dns), one asking aliasd's Service directly."""
    via_coredns = start_prober(kind, "probe-coredns", server=kind.cluster_ip(
        "kube-system", "kube-dns"), want=want)
    direct = start_prober(kind, "probe-aliasd", server=kind.cluster_ip(
        "aliasd-system", "aliasd"), want=want)
    return via_coredns, direct


def report(what: str, **results: dict[str, Any]) -> None:
    """Say what the probers counted."""
    for path, r in results.items():
        say(f"e2e: {what}: {path}: {r['failed']} failed / {r['total']} lookups in "
            f"{r['seconds']} s {r['kinds'] or ''} {r['fail_lines'][:5] or ''}"
            f"(first tries failed: {r['first_try_failed']})")


def aliasd_cli(kind: Kind, *args: str) -> subprocess.CompletedProcess[str]:
    """``aliasd ARGS`` from outside the cluster, with the admin kubeconfig."""
    return subprocess.run([sys.executable, "-m", "aliasd", *args], env=kind.env,
                          capture_output=True, text=True, timeout=60, check=False)


def helm_env(kind: Kind) -> dict[str, str]:
    """The cluster's environment with ``helm`` on PATH, its cache and config
    next to the kubeconfig."""
    home = Path(kind.env["KUBECONFIG"]).parent / "helm"
    return {**kind.env, "PATH": f"{ensure_binaries()}:{kind.env['PATH']}",
            "HELM_CACHE_HOME": str(home / "cache"), "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data")}


def helm(kind: Kind, *args: str, values: dict[str, Any] | None = None,
         timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``helm ARGS`` against the cluster (VALUES as a values file on stdin)."""
    given = ["--values", "-"] if values is not None else []
    return subprocess.run([str(ensure_binaries() / "helm"), *args, *given], env=helm_env(kind),
                          input=yaml.safe_dump(values or {}), capture_output=True, text=True,
                          timeout=timeout, check=False)


def dig(kind: Kind, client: str, name: str, *, server: str | None = None
        ) -> tuple[str, list[str]]:
    """(rcode, A records) of one try from pod ``client``, through its resolver
    or asking ``server``; ("no answer", []) when none came."""
    at = [f"@{server}"] if server else []
    out = kind.kubectl("exec", client, "--", "dig", "+time=2", "+tries=1", *at, name, "A",
                       check=False)
    status = re.search(r"status: (\w+)", out)
    if status is None:
        return "no answer", []
    return status.group(1), [f[4] for line in out.splitlines()
                             if not line.startswith(";") and len(f := line.split()) == 5
                             and f[3] == "A"]


def coredns_ips(kind: Kind) -> list[str]:
    return sorted(p["status"]["podIP"] for p in kind.json(
        "-n", "kube-system", "get", "pods", "-l", "k8s-app=kube-dns")["items"])


def wait_every_coredns(kind: Kind, client: str, name: str, want: tuple[str, list[str]],
                       *, timeout: float = 240) -> float:
    """Until every CoreDNS replica, asked directly, answers ``name`` with
    ``want`` (rcode, A records): the kubelet syncs a changed ConfigMap into each
    pod (its sync period is a minute, plus jitter) and CoreDNS's reload plugin
    picks it up (it checks every 30 s, plus up to 15 s of jitter), typically
    30-75 s after the change, up to ~135 s seen here. The seconds it took."""
    t0 = time.monotonic()
    wait_for(lambda: all(dig(kind, client, name, server=ip) == want
                         for ip in coredns_ips(kind)),
             timeout=timeout, interval=1, what=f"every CoreDNS replica to answer {name} {want}")
    return time.monotonic() - t0
