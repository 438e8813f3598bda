"""Health-checked failover in a real kind cluster: an Alias with a primary
and a secondary target (each a pod behind its own ClusterIP Service), probed
over HTTP by every aliasd replica. A client pod resolves the name through the
cluster DNS and makes HTTP requests in a loop while the primary's pod is
killed and restored, several times: its lookups move to the secondary and
back. The time from each kill to the client's first lookup of the secondary,
and the requests that failed meanwhile, are printed (never asserted)."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support import ROOT
from tests.support.kind import Kind, say
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e
NS = "failover"
NAME = "checkout.internal"
KILLS = 5
CLIENT = (ROOT / "tests" / "e2e" / "http_client.py").read_text()
# Answers every GET with its own name (argv[1]); python from the aliasd image.
SERVER = """
import http.server, sys
body = sys.argv[1].encode()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("", 8080), H).serve_forever()
"""
CHECK = {"protocol": "HTTP", "port": 80, "path": "/", "intervalSeconds": 1,
         "timeoutSeconds": 1, "healthyThreshold": 2, "unhealthyThreshold": 2}


@dataclass(frozen=True)
class Round:
    """One line of the client's log: when, the address looked up, the HTTP result."""

    t: float
    ip: str
    result: str


def backend(kind: Kind, role: str) -> None:
    """The pod that answers for ``role`` (recreated: a restored target)."""
    kind.pod(role, "aliasd:dev", ["python", "-c", SERVER, role], namespace=NS,
             labels={"app": role})


def rounds(kind: Kind, since: float) -> list[Round]:
    out = []
    for line in kind.kubectl("-n", NS, "logs", "client").splitlines():
        t, ip, result = line.split(" ", 2)
        if float(t) >= since:
            out.append(Round(float(t), ip, result))
    return out


@pytest.fixture(scope="module")
def targets(kind: Kind) -> Iterator[dict[str, str]]:
    """primary and secondary: their Services' cluster IPs."""
    kind.kubectl("create", "namespace", NS, check=False)
    ips = {}
    for role in ("primary", "secondary"):
        backend(kind, role)
        kind.kubectl("-n", NS, "apply", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": role},
            "spec": {"selector": {"app": role},
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}))
        ips[role] = kind.cluster_ip(NS, role)
    kind.kubectl("-n", NS, "apply", "-f", "-", input=json.dumps({
        "apiVersion": "aliasd.io/v1alpha1", "kind": "Alias", "metadata": {"name": "checkout"},
        "spec": {"hostnames": [NAME], "targets": [
            {"address": ips["primary"], "priority": 0, "healthCheck": CHECK},
            {"address": ips["secondary"], "priority": 1, "healthCheck": CHECK}]}}))
    kind.pod("client", "aliasd:dev", ["python", "-c", CLIENT, NAME + ".", "80"], namespace=NS)
    try:
        yield ips
    finally:
        # The client looks the name up 10 times a second and, as PID 1, ignores
        # SIGTERM: killed now and gone before the next test, which counts the
        # queries CoreDNS sees.
        kind.kubectl("-n", NS, "delete", "pod", "client", "--grace-period=1", "--wait=true",
                     check=False, timeout=120)
        kind.kubectl("delete", "namespace", NS, "--wait=false", check=False)


def first(kind: Kind, since: float, ip: str, body: str, what: str) -> Round:
    """The client's first round after ``since`` that looked up ``ip`` and got ``body``."""
    def seen() -> Round | None:
        return next((r for r in rounds(kind, since) if r.ip == ip and r.result == body), None)
    found: Round = wait_for(seen, timeout=90, interval=0.5, what=what)
    return found


def test_lookups_follow_the_healthy_target_across_kills(
        kind: Kind, targets: dict[str, str]) -> None:
    primary, secondary = targets["primary"], targets["secondary"]
    first(kind, 0, primary, "primary", "the client on the primary")
    failovers, failbacks, failed, failed_lookups = [], [], [], []
    for n in range(KILLS):
        killed = time.time()
        kind.kubectl("-n", NS, "delete", "pod", "primary", "--wait=false")
        moved = first(kind, killed, secondary, "secondary", f"kill {n + 1}: the secondary")
        failovers.append(moved.t - killed)
        during = [r for r in rounds(kind, killed) if r.t <= moved.t]
        failed.append(sum(r.ip != "-" and r.result.startswith("ERR:") for r in during))
        failed_lookups.append(sum(r.ip == "-" for r in during))
        restored = time.time()
        backend(kind, "primary")
        back = first(kind, restored, primary, "primary", f"kill {n + 1}: back to the primary")
        failbacks.append(back.t - restored)
    seen = {r.ip for r in rounds(kind, 0)}
    assert seen <= {primary, secondary, "-"}, seen  # never an address of neither target
    assert {primary, secondary} <= seen

    def p(xs: list[float], q: float) -> float:
        xs = sorted(xs)
        return xs[min(len(xs) - 1, max(0, int(len(xs) * q + 0.999) - 1))]

    say(f"e2e: failover over {KILLS} kills of the primary (HTTP check, interval 1 s, "
        f"unhealthy threshold 2): kill -> client's first lookup of the secondary "
        f"p50 {statistics.median(failovers):.1f} s, p99 {p(failovers, 0.99):.1f} s "
        f"({', '.join(f'{s:.1f}' for s in failovers)}); failed HTTP requests per kill "
        f"{failed} (of 10 a second), failed lookups {failed_lookups}; primary back "
        f"(pod recreated -> lookups) p50 {statistics.median(failbacks):.1f} s, "
        f"max {max(failbacks):.1f} s")
