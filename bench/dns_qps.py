"""aliasd vs CoreDNS (``file`` plugin), same zone, same query mix, one run.

    .venv/bin/python bench/dns_qps.py [--names 1000] [--duration 10]

Each server is pinned to CPU 1 and dnsperf to CPU 0 (taskset), so both get one
core: aliasd is single-threaded, and CoreDNS then runs with GOMAXPROCS=1.
Throughput and lost queries come from dnsperf (as many queries as the server
takes, 100 outstanding); p50/p99 latency from a paced asyncio client at a fixed
rate, so latency is compared at equal load rather than at saturation.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dns.message
import dns.query

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "hack" / "devtools")]  # aliasd, aliasd_dev

from aliasd_dev import ensure_binaries, free_port, free_udp_tcp_port  # noqa: E402


def make_inputs(tmp: Path, n: int, seed: int = 1) -> tuple[Path, Path, list[tuple[str, str]]]:
    rng = random.Random(seed)
    names = [f"svc-{i:04d}" for i in range(n)]
    aliases = ["aliases:"]
    zone = ["$ORIGIN internal.", "$TTL 30",
            "@ 30 IN SOA ns.internal. hostmaster.internal. 1 60 10 1209600 5",
            "@ 30 IN NS ns.internal.", "ns 30 IN A 127.0.0.1"]
    for i, name in enumerate(names):
        v4 = f"10.{96 + i // 65536}.{(i // 256) % 256}.{i % 256}"
        v6 = f"fd00::{i:x}"
        aliases.append(f"  {name}: {{addresses: [{v4}, \"{v6}\"], ttl: 30}}")
        zone += [f"{name} 30 IN A {v4}", f"{name} 30 IN AAAA {v6}"]
    (tmp / "aliases.yaml").write_text("\n".join(aliases) + "\n")
    (tmp / "zone.db").write_text("\n".join(zone) + "\n")
    # The mix: 60% A hits, 15% AAAA hits, 15% NXDOMAIN, 10% mixed-case A hits.
    queries: list[tuple[str, str]] = []
    for _ in range(20_000):
        r = rng.random()
        name = rng.choice(names)
        if r < 0.60:
            queries.append((f"{name}.internal", "A"))
        elif r < 0.75:
            queries.append((f"{name}.internal", "AAAA"))
        elif r < 0.90:
            queries.append((f"missing-{rng.randrange(n)}.internal", "A"))
        else:
            mixed = "".join(c.upper() if rng.random() < 0.5 else c for c in name)
            queries.append((f"{mixed}.InTeRnAl", "A"))
    qfile = tmp / "queries.txt"
    qfile.write_text("".join(f"{q} {t}\n" for q, t in queries))
    return tmp / "aliases.yaml", qfile, queries


def wait_dns(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    q = dns.message.make_query("svc-0000.internal.", "A")
    while time.monotonic() < deadline:
        try:
            r = dns.query.udp(q, "127.0.0.1", port=port, timeout=0.5)
            if r.answer:
                return
        except Exception:
            time.sleep(0.1)
    raise SystemExit(f"server on port {port} did not answer")


def dnsperf(port: int, qfile: Path, duration: int) -> dict[str, float]:
    out = subprocess.run(
        ["taskset", "-c", "0", "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(qfile),
         "-l", str(duration), "-q", "100", "-t", "2"],
        capture_output=True, text=True, check=True).stdout

    def num(pattern: str) -> float:
        m = re.search(pattern, out)
        return float(m.group(1)) if m else float("nan")

    return {"sent": num(r"Queries sent:\s+(\d+)"), "completed": num(r"Queries completed:\s+(\d+)"),
            "lost": num(r"Queries lost:\s+(\d+)"), "qps": num(r"Queries per second:\s+([\d.]+)"),
            "avg_ms": num(r"Average Latency \(s\):\s+([\d.]+)") * 1000}


async def paced_latency(port: int, queries: list[tuple[str, str]], rate: int,
                        seconds: float) -> tuple[float, float, int]:
    """Send at ``rate`` q/s for ``seconds``; per-query RTT p50/p99 in ms, and losses."""
    loop = asyncio.get_running_loop()
    sent: dict[int, float] = {}
    rtts: list[float] = []

    class P(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            t = sent.pop(int.from_bytes(data[:2], "big"), None)
            if t is not None:
                rtts.append(time.perf_counter() - t)

    transport, _ = await loop.create_datagram_endpoint(P, remote_addr=("127.0.0.1", port))
    wires = [dns.message.make_query(q, t).to_wire() for q, t in queries[:5000]]
    total = int(rate * seconds)
    start = time.perf_counter()
    for i in range(total):
        qid = i % 65536
        w = qid.to_bytes(2, "big") + wires[i % len(wires)][2:]
        sent[qid] = time.perf_counter()
        transport.sendto(w)
        delay = start + (i + 1) / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
    await asyncio.sleep(1)
    transport.close()
    rtts.sort()
    p50 = statistics.median(rtts) * 1000 if rtts else float("nan")
    p99 = rtts[int(len(rtts) * 0.99) - 1] * 1000 if rtts else float("nan")
    return p50, p99, total - len(rtts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--names", type=int, default=1000)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--rate", type=int, default=2000, help="paced latency probe, queries/s")
    args = ap.parse_args()
    for tool in ("dnsperf", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: run hack/setup.sh (apt-get install dnsperf)")
    bin_dir = ensure_binaries()
    tmp = Path(tempfile.mkdtemp(prefix="aliasd-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        aliases, qfile, queries = make_inputs(tmp, args.names)
        a_port, c_port = free_udp_tcp_port(), free_udp_tcp_port()
        (tmp / "Corefile").write_text(
            f"internal:{c_port} {{\n    bind 127.0.0.1\n    file {tmp / 'zone.db'}\n}}\n")
        procs.append(subprocess.Popen(
            ["taskset", "-c", "1", sys.executable, "-m", "aliasd", "--log-level", "warning",
             "run", "--aliases-file", str(aliases), "--dns-listen", f"127.0.0.1:{a_port}",
             "--http-listen", f"127.0.0.1:{free_port()}"], cwd=ROOT))
        procs.append(subprocess.Popen(
            ["taskset", "-c", "1", str(bin_dir / "coredns"), "-conf", str(tmp / "Corefile")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp))
        wait_dns(a_port)
        wait_dns(c_port)
        results = {}
        for name, port in (("aliasd", a_port), ("coredns", c_port)):
            dnsperf(port, qfile, 2)  # warm-up
            r = dnsperf(port, qfile, args.duration)
            p50, p99, lost = asyncio.run(paced_latency(port, queries, args.rate, 5))
            r.update(p50_ms=p50, p99_ms=p99, paced_lost=lost)
            results[name] = r
        print(f"\n{args.names} names, query mix 60% A / 15% AAAA / 15% NXDOMAIN / 10% mixed "
              f"case; {args.duration}s dnsperf per server, server on 1 core")
        print(f"{'server':<9}{'qps':>10}{'sent':>10}{'lost':>7}{'avg ms':>9}"
              f"{'p50 ms':>9}{'p99 ms':>9}  (p50/p99 at {args.rate} q/s paced)")
        for name, r in results.items():
            print(f"{name:<9}{r['qps']:>10.0f}{r['sent']:>10.0f}{r['lost']:>7.0f}"
                  f"{r['avg_ms']:>9.3f}{r['p50_ms']:>9.3f}{r['p99_ms']:>9.3f}")
        ratio = results["aliasd"]["qps"] / results["coredns"]["qps"]
        print(f"ratio aliasd/coredns queries/s: {ratio:.2f}x")
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
