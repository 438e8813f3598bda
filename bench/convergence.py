"""Convergence: from an API write returning to aliasd serving the new answer.

    .venv/bin/python bench/convergence.py [--services 1000] [--sync 10000]

On the local control plane (real kube-apiserver + etcd): creates N annotated
Services, then renames each one's alias, one at a time, and measures the time
from the PATCH returning to the new name answering over DNS. Then it grows the
cluster to --sync annotated Services and measures a fresh aliasd's initial
sync (process start → /readyz 200 with every alias served) and its RSS.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dns.message

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "hack" / "devtools")]  # aliasd, aliasd_dev

from aliasd_dev import LocalCluster, ensure_binaries, free_port, free_udp_tcp_port  # noqa: E402


def create_services(c: LocalCluster, ns: str, start: int, stop: int) -> None:
    def one(i: int) -> None:
        c.request("POST", f"/api/v1/namespaces/{ns}/services", {
            "metadata": {"name": f"svc-{i}", "annotations": {"aliasd.io/alias": f"conv-{i}"}},
            "spec": {"ports": [{"name": "http", "port": 80}]}})

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(start, stop)))


def start_aliasd(c: LocalCluster) -> tuple[subprocess.Popen[bytes], int, int]:
    d, h = free_udp_tcp_port(), free_port()
    p = subprocess.Popen([sys.executable, "-m", "aliasd", "--log-level", "warning", "run",
                          "--kubeconfig", str(c.kubeconfig), "--dns-listen", f"127.0.0.1:{d}",
                          "--http-listen", f"127.0.0.1:{h}"], cwd=ROOT)
    return p, d, h


def aliases_served(http_port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v1/aliases", timeout=5) as r:
            doc = json.load(r)
    except OSError:
        return -1
    return len(doc["aliases"]) if doc["ready"] else -1


def answers(sock: socket.socket, port: int, name: str) -> bool:
    q = dns.message.make_query(name, "A").to_wire()
    sock.sendto(q, ("127.0.0.1", port))
    try:
        resp = sock.recv(4096)
    except TimeoutError:
        return False
    return resp[3] & 0x0F == 0 and resp[6:8] != b"\x00\x00"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--sync", type=int, default=10_000)
    args = ap.parse_args()
    with LocalCluster(bin_dir=ensure_binaries()) as c:
        ns = "bench"
        c.request("POST", "/api/v1/namespaces", {"metadata": {"name": ns}})
        t = time.monotonic()
        create_services(c, ns, 0, args.services)
        print(f"created {args.services} Services in {time.monotonic() - t:.1f}s")
        p, dport, hport = start_aliasd(c)
        try:
            while aliases_served(hport) != args.services:
                time.sleep(0.1)
            lat: list[float] = []
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(0.5)
                for i in range(args.services):
                    c.request("PATCH", f"/api/v1/namespaces/{ns}/services/svc-{i}",
                              {"metadata": {"annotations": {"aliasd.io/alias": f"conv-{i}-v2"}}},
                              content_type="application/merge-patch+json")
                    t0 = time.perf_counter()
                    while not answers(s, dport, f"conv-{i}-v2.internal."):
                        time.sleep(0.0005)
                    lat.append(time.perf_counter() - t0)
            lat.sort()
            print(f"convergence over {len(lat)} updates: p50 {statistics.median(lat) * 1000:.1f} ms"
                  f", p99 {lat[int(len(lat) * 0.99) - 1] * 1000:.1f} ms, "
                  f"max {lat[-1] * 1000:.1f} ms")
            print(f"RSS with {args.services} Services: {rss_mb(p.pid):.0f} MB")
        finally:
            p.terminate()
            p.wait()
        t = time.monotonic()
        create_services(c, ns, args.services, args.sync)
        print(f"created {args.sync - args.services} more Services in {time.monotonic() - t:.1f}s")
        t0 = time.monotonic()
        p, dport, hport = start_aliasd(c)
        try:
            while aliases_served(hport) != args.sync:
                time.sleep(0.05)
            print(f"initial sync of {args.sync} annotated Services: "
                  f"{time.monotonic() - t0:.2f}s (process start to all served)")
            print(f"RSS with {args.sync} Services: {rss_mb(p.pid):.0f} MB")
        finally:
            p.terminate()
            p.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
