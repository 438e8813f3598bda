"""Scale: DNS latency under EndpointSlice churn, aliasd next to CoreDNS's
``kubernetes`` plugin on the same local API server, in one run (issue 13).

    .venv/bin/python bench/scale.py [--aliased 3000] [--plain 3000] [--rates 50,200]

Creates N aliased ClusterIP Services, N plain ones each with an EndpointSlice
(labelled the way the EndpointSlice controller labels them), and --headless
aliased headless Services with one slice each. Starts aliasd and measures its
time to ready (process start to every alias answering) and RSS. Then, per
phase, sends --qps queries/s to aliasd (aliases) and --qps to CoreDNS
(``svc.ns.svc.cluster.local`` of the same Services) and reports p50 / p99 /
p99.9 / max, each server's CPU (cores), and aliasd's rename convergence (one
alias renamed per second, PATCH returned → new name answering):

* quiet: no churn;
* churn R/s on the slices of the plain Services, for each --rates R;
* churn R/s on the slices of the aliased headless Services (answers change).

It also prints aliasd's garbage-collector pauses (the ``aliasd_gc_*`` metrics).
Numbers only: nothing here asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import dns.message

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "hack" / "devtools")]  # aliasd, aliasd_dev

from aliasd_dev import (  # noqa: E402
    LocalCluster,
    ensure_binaries,
    free_port,
    free_udp_tcp_port,
)

NS = "scale"
CONTROLLER = "endpointslice-controller.k8s.io"
TICK = 1 / 100  # os.times resolution


def create(c: LocalCluster, args: argparse.Namespace) -> None:
    svcs = f"/api/v1/namespaces/{NS}/services"
    slices = f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices"

    def aliased(i: int) -> None:
        c.request("POST", svcs, {"metadata": {"name": f"a-{i}", "annotations": {
            "aliasd.io/alias": f"scale-a-{i}"}}, "spec": {"ports": [{"name": "http",
                                                                      "port": 80}]}})

    def plain(i: int) -> None:
        c.request("POST", svcs, {"metadata": {"name": f"p-{i}"},
                                 "spec": {"ports": [{"name": "http", "port": 80}]}})
        c.request("POST", slices, slice_body(f"p-{i}", f"p-{i}-x", headless=False, n=i))

    def headless(i: int) -> None:
        c.request("POST", svcs, {"metadata": {"name": f"h-{i}", "annotations": {
            "aliasd.io/alias": f"scale-h-{i}"}}, "spec": {"clusterIP": "None", "ports": [
                {"name": "http", "port": 80}]}})
        c.request("POST", slices, slice_body(f"h-{i}", f"h-{i}-x", headless=True, n=i))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(aliased, range(args.aliased)))
        list(pool.map(plain, range(args.plain)))
        list(pool.map(headless, range(args.headless)))


def slice_body(service: str, name: str, *, headless: bool, n: int) -> dict[str, Any]:
    labels = {"kubernetes.io/service-name": service,
              "endpointslice.kubernetes.io/managed-by": CONTROLLER}
    if headless:
        labels["service.kubernetes.io/headless"] = ""
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "labels": labels}, "addressType": "IPv4",
            "endpoints": [{"addresses": [f"10.{100 + n % 100}.{n // 250 % 250}.{n % 250 + 1}"],
                           "conditions": {"ready": True}}],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * TICK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def answers(sock: socket.socket, port: int, name: str) -> bool:
    q = dns.message.make_query(name, "A")
    sock.sendto(q.to_wire(), ("127.0.0.1", port))
    while True:
        try:
            resp = sock.recv(4096)
        except TimeoutError:
            return False
        if resp[:2] == q.to_wire()[:2]:
            return resp[3] & 0x0F == 0 and resp[6:8] != b"\x00\x00"


def metrics(http_port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as r:
        return str(r.read().decode())


def gc_line(text: str) -> str:
    out = []
    for gen in "012":
        n = re.search(rf'^aliasd_gc_pauses_total{{generation="{gen}"}} (\S+)', text, re.M)
        t = re.search(rf'^aliasd_gc_pause_seconds_total{{generation="{gen}"}} (\S+)', text,
                      re.M)
        m = re.search(rf'^aliasd_gc_pause_max_seconds{{generation="{gen}"}} (\S+)', text, re.M)
        if n and t and m:
            out.append(f"gen{gen} {float(n.group(1)):.0f} passes, "
                       f"{float(t.group(1)) * 1000:.0f} ms total, "
                       f"max {float(m.group(1)) * 1000:.1f} ms")
    return "; ".join(out)


async def paced(port: int, names: list[str], rate: int, seconds: float) -> list[float]:
    """Send at ``rate`` q/s for ``seconds``; every RTT in ms (lost = inf)."""
    loop = asyncio.get_running_loop()
    sent: dict[int, float] = {}
    rtts: list[float] = []

    class P(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            t = sent.pop(int.from_bytes(data[:2], "big"), None)
            if t is not None:
                rtts.append((time.perf_counter() - t) * 1000)

    transport, _ = await loop.create_datagram_endpoint(P, remote_addr=("127.0.0.1", port))
    wires = [dns.message.make_query(n, "A").to_wire() for n in names]
    total = int(rate * seconds)
    start = time.perf_counter()
    for i in range(total):
        qid = i % 65536
        sent[qid] = time.perf_counter()
        transport.sendto(qid.to_bytes(2, "big") + wires[i % len(wires)][2:])
        delay = start + (i + 1) / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
    await asyncio.sleep(1)
    transport.close()
    rtts += [float("inf")] * len(sent)
    return sorted(rtts)


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def fmt(xs: list[float]) -> str:
    return (f"{pct(xs, 0.5):.2f} / {pct(xs, 0.99):.2f} / {pct(xs, 0.999):.2f} / "
            f"{xs[-1] if xs else float('nan'):.1f}")


class Churn(threading.Thread):
    """PUTs EndpointSlices at ``rate``/s, round robin over ``names``."""

    def __init__(self, c: LocalCluster, names: list[str], rate: int, headless: bool) -> None:
        super().__init__(daemon=True)
        self.c, self.names, self.rate, self.headless = c, names, rate, headless
        self.stop = threading.Event()
        self.done = 0

    def run(self) -> None:
        path = f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices"
        counter = itertools.count()
        start = time.perf_counter()

        def one(i: int) -> None:
            svc = self.names[i % len(self.names)]
            body = slice_body(svc, f"{svc}-x", headless=self.headless, n=i)
            try:
                self.c.request("PUT", f"{path}/{svc}-x", body)  # no rv: last write wins
                self.done += 1
            except Exception as e:  # keep churning; the count shows what landed
                print(f"churn: {e}", file=sys.stderr)

        with ThreadPoolExecutor(8) as pool:
            while not self.stop.is_set():
                i = next(counter)
                pool.submit(one, i)
                delay = start + (i + 1) / self.rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)


class Renamer(threading.Thread):
    """Renames one alias per second; the time to the new name answering."""

    def __init__(self, c: LocalCluster, dns_port: int, n: int, tag: str) -> None:
        super().__init__(daemon=True)
        self.c, self.port, self.n, self.tag = c, dns_port, n, tag
        self.stop = threading.Event()
        self.latencies: list[float] = []

    def run(self) -> None:
        rng = random.Random(7)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.5)
            k = 0
            while not self.stop.is_set():
                i = rng.randrange(self.n)
                k += 1
                new = f"scale-a-{i}-{self.tag}{k}"
                t_next = time.monotonic() + 1
                self.c.request("PATCH", f"/api/v1/namespaces/{NS}/services/a-{i}",
                               {"metadata": {"annotations": {"aliasd.io/alias": new}}},
                               content_type="application/merge-patch+json")
                t0 = time.perf_counter()
                while not answers(s, self.port, f"{new}.internal."):
                    if time.perf_counter() - t0 > 10:
                        break
                    time.sleep(0.0005)
                self.latencies.append((time.perf_counter() - t0) * 1000)
                self.stop.wait(max(0.0, t_next - time.monotonic()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--aliased", type=int, default=3000)
    ap.add_argument("--plain", type=int, default=3000)
    ap.add_argument("--headless", type=int, default=200)
    ap.add_argument("--rates", default="50,200", help="churn rates, slice updates/s")
    ap.add_argument("--qps", type=int, default=500, help="queries/s to each server")
    ap.add_argument("--phase", type=float, default=20.0, help="seconds per phase")
    args = ap.parse_args()
    rates = [int(r) for r in args.rates.split(",") if r]
    with LocalCluster(bin_dir=ensure_binaries()) as c:
        c.request("POST", "/api/v1/namespaces", {"metadata": {"name": NS}})
        t = time.monotonic()
        create(c, args)
        print(f"created {args.aliased} aliased + {args.plain} plain Services "
              f"(+{args.plain} slices) + {args.headless} aliased headless in "
              f"{time.monotonic() - t:.0f}s", flush=True)
        dport, hport = free_udp_tcp_port(), free_port()
        t0 = time.monotonic()
        p = subprocess.Popen([sys.executable, "-m", "aliasd", "--log-level", "warning", "run",
                              "--kubeconfig", str(c.kubeconfig), "--coredns-mode", "off",
                              "--zone", "internal", "--dns-listen", f"127.0.0.1:{dport}",
                              "--http-listen", f"127.0.0.1:{hport}"], cwd=ROOT)
        coredns = c._procs["coredns"].popen
        assert coredns is not None
        try:
            last = f"scale-a-{args.aliased - 1}.internal."
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(0.2)
                while not answers(s, dport, last):
                    if p.poll() is not None:
                        raise SystemExit("aliasd exited")
                    time.sleep(0.02)
            ready = time.monotonic() - t0
            print(f"aliasd ready (every alias answering) {ready:.2f}s after start; "
                  f"RSS {rss_mb(p.pid):.0f} MB; CoreDNS RSS {rss_mb(coredns.pid):.0f} MB",
                  flush=True)
            time.sleep(2)
            print(f"GC after the initial sync: {gc_line(metrics(hport))}")
            alias_names = [f"scale-a-{i}.internal." for i in range(0, args.aliased, 7)]
            svc_names = [f"a-{i}.{NS}.svc.cluster.local." for i in range(0, args.aliased, 7)]
            phases: list[tuple[str, str, int]] = [("quiet", "", 0)]
            phases += [(f"churn {r}/s plain", "plain", r) for r in rates]
            phases += [(f"churn {r}/s headless", "headless", r) for r in rates]
            rows = []
            for label, target, rate in phases:
                churn = None
                if target == "plain":
                    churn = Churn(c, [f"p-{i}" for i in range(args.plain)], rate, False)
                elif target == "headless":
                    churn = Churn(c, [f"h-{i}" for i in range(args.headless)], rate, True)
                renamer = Renamer(c, dport, args.aliased, f"{target or 'q'}{rate}x")
                if churn:
                    churn.start()
                renamer.start()
                time.sleep(1)
                cpu_a, cpu_c, w0 = cpu_seconds(p.pid), cpu_seconds(coredns.pid), time.monotonic()

                async def both() -> tuple[list[float], list[float]]:
                    a, b = await asyncio.gather(
                        paced(dport, alias_names, args.qps, args.phase),
                        paced(c.dns_port, svc_names, args.qps, args.phase))
                    return a, b

                lat_a, lat_c = asyncio.run(both())
                wall = time.monotonic() - w0
                cores_a = (cpu_seconds(p.pid) - cpu_a) / wall
                cores_c = (cpu_seconds(coredns.pid) - cpu_c) / wall
                renamer.stop.set()
                if churn:
                    churn.stop.set()
                    churn.join()
                renamer.join()
                ren = sorted(renamer.latencies)
                landed = f" ({churn.done / wall:.0f}/s landed)" if churn else ""
                rows.append((label + landed, fmt(lat_a), fmt(lat_c), f"{cores_a:.2f}",
                             f"{cores_c:.2f}",
                             f"{pct(ren, 0.5):.0f} / {pct(ren, 0.99):.0f}" if ren else "-"))
                print(f"{label}{landed}: aliasd {fmt(lat_a)} ms, {cores_a:.2f} core; CoreDNS "
                      f"{fmt(lat_c)} ms, {cores_c:.2f} core; rename p50/p99 "
                      f"{rows[-1][-1]} ms", flush=True)
            print(f"\naliasd RSS {rss_mb(p.pid):.0f} MB, CoreDNS RSS {rss_mb(coredns.pid):.0f} MB; "
                  f"GC: {gc_line(metrics(hport))}")
            print(f"\n{args.aliased} aliased + {args.plain} plain Services, {args.qps} q/s each "
                  f"server; latency p50 / p99 / p99.9 / max in ms\n")
            print("| phase | aliasd | CoreDNS kubernetes | aliasd CPU | CoreDNS CPU | "
                  "rename p50 / p99 ms |")
            print("|---|---|---|---|---|---|")
            for r in rows:
                print("| " + " | ".join(r) + " |")
            print(json.dumps({"ready_s": round(ready, 2)}))
        finally:
            p.terminate()
            p.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
