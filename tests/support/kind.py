"""The kind cluster of the e2e suite: kubectl against it, pods on its
control-plane node, DNS probers, the aliasd Lease, and the figures measured
there (printed at the end of the run by tests/e2e/conftest.py)."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from typing import Any

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
            service_account: str = "default") -> None:
        """A pod on the control-plane node (never drained, never restarted)."""
        ns = ["-n", namespace]
        self.kubectl(*ns, "delete", "pod", name, "--ignore-not-found", "--wait=true")
        spec = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {
            "nodeName": self.control_plane, "restartPolicy": "Never",
            "serviceAccountName": service_account,
            "tolerations": [{"operator": "Exists"}], "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": image, "imagePullPolicy": "Never",
                            "command": command}]}}
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
