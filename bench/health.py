"""What health probes cost: aliasd serving the same zone with and without
health checks, side by side in one run:

    .venv/bin/python bench/health.py [--names 500] [--interval 5] [--window 30] [--rate 2000]

Every name has two targets, a primary (priority 0) and a secondary (priority
1); with checks each target has its own, half of the names TCP and half HTTP:
``--names 500`` is 1,000 checked targets. The targets are loopback addresses
(127.1.x.y, each with its own listening socket) served by a helper process of
this script, so probe traffic never leaves the machine.

aliasd runs on CPU 1 (``taskset``), the helper, the paced client and dnsperf
on CPU 0. For each server, in this order: once every check has been probed,
aliasd's CPU (``/proc/PID/stat`` utime+stime) over a quiet window of
``--window`` seconds, in cores, with the probes per second its ``/metrics``
counted; then p50/p99 of a paced client at ``--rate`` q/s (A queries of the
names; latency at equal load) and the CPU meanwhile; then dnsperf's
saturating rate. ``--repeat`` alternates the two servers that many times.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import cast

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "hack" / "devtools")]  # aliasd, aliasd_dev

from dns_qps import dnsperf, stop, wait_dns, wires_of  # noqa: E402  (bench/)
from paced import paced_rtts  # noqa: E402

from aliasd_dev import free_port, free_udp_tcp_port  # noqa: E402

SERVER_CPU, CLIENT_CPU = "1", "0"
TICK = 1 / os.sysconf("SC_CLK_TCK")
HTTP_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def target_address(i: int) -> str:
    return f"127.1.{i // 250}.{i % 250 + 1}"


# -- the targets: one process, a listening socket per address ----------------------------------

class _Accept(asyncio.Protocol):
    """A TCP check only connects: close as soon as it is accepted."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class _Http(asyncio.Protocol):
    """Answers 200 to whatever request arrives, then closes."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if b"\r\n\r\n" in data or b"\n\n" in data:
            self._transport.write(HTTP_OK)
            self._transport.close()


async def serve(count: int) -> None:
    """Listen on ``count`` loopback addresses (port chosen by the kernel), the
    first half plain TCP, the rest HTTP; print one JSON line of the ports, then
    serve until stdin closes."""
    loop = asyncio.get_running_loop()
    ports = []
    for i in range(count):
        proto: type[asyncio.Protocol] = _Accept if i < count // 2 else _Http
        server = await loop.create_server(proto, target_address(i), 0, backlog=64)
        ports.append(server.sockets[0].getsockname()[1])
    print(json.dumps(ports), flush=True)
    await loop.run_in_executor(None, sys.stdin.read)


# -- the zone -------------------------------------------------------------------------------------

def write_aliases(path: Path, names: int, ports: list[int] | None, interval: int) -> list[str]:
    """``names`` names, a primary and a secondary target each (targets 2n and
    2n+1); with ``ports``, each target checked (TCP for the first half of the
    targets, HTTP for the rest). Returns the names."""
    lines, out = ["aliases:"], []
    for n in range(names):
        name = f"svc-{n:04d}.internal"
        out.append(name)
        lines += [f"  {name}:", "    targets:"]
        for prio, i in enumerate((2 * n, 2 * n + 1)):
            check = ""
            if ports is not None:
                http = i >= names  # the second half of the 2 * names targets
                check = (f", healthCheck: {{protocol: {'HTTP' if http else 'TCP'}, "
                         f"port: {ports[i]}{', path: /healthz' if http else ''}, "
                         f"intervalSeconds: {interval}, timeoutSeconds: {min(2, interval)}}}")
            lines.append(f"      - {{address: {target_address(i)}, priority: {prio}{check}}}")
    path.write_text("\n".join(lines) + "\n")
    return out


# -- measuring ------------------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * TICK


def probes(http_port: int) -> dict[str, float]:
    """aliasd's probe counters, by ``protocol/result``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for m in re.finditer(r'^aliasd_health_probes_total\{protocol="(\w+)",result="(\w+)"\} (\S+)',
                         text, re.M):
        out[f"{m.group(1)}/{m.group(2)}"] = float(m.group(3))
    return out


def cores_over(pid: int, seconds: float) -> float:
    cpu, start = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - cpu) / (time.monotonic() - start)


def measure(*, label: str, aliases: Path, qfile: Path, checks: int, args: argparse.Namespace
            ) -> dict[str, float | str]:
    port, http_port = free_udp_tcp_port(), free_port()
    proc = subprocess.Popen(
        ["taskset", "-c", SERVER_CPU, sys.executable, "-m", "aliasd", "--log-level", "warning",
         "run", "--aliases-file", str(aliases), "--dns-listen", f"127.0.0.1:{port}",
         "--http-listen", f"127.0.0.1:{http_port}"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_dns(port)
        if checks:  # until every check has been probed once (each starts within an interval)
            deadline = time.monotonic() + 3 * args.interval + 30
            while sum(probes(http_port).values()) < checks:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit(f"{label}: the checks were not all probed")
                time.sleep(0.5)
        time.sleep(args.settle)
        before = probes(http_port)
        idle = cores_over(proc.pid, args.window)
        after = probes(http_port)
        passed = sum(v - before.get(k, 0) for k, v in after.items() if k.endswith("passed"))
        failed = sum(v - before.get(k, 0) for k, v in after.items() if k.endswith("failed"))
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        rtts = asyncio.run(paced_rtts(port, wires_of(qfile), args.rate, args.paced))
        loaded = (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0)
        got = [r for r in rtts if r != float("inf")]
        qps = dnsperf(port, qfile, args.duration, SERVER_CPU)["qps"]
        return {"server": label, "checks": checks, "idle": idle, "probes/s": passed / args.window,
                "failed/s": failed / args.window, "loaded": loaded,
                "p50": statistics.median(got) if got else float("nan"),
                "p99": got[int(len(got) * 0.99) - 1] if got else float("nan"),
                "lost": len(rtts) - len(got), "qps": qps}
    finally:
        stop(proc)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--names", type=int, default=500, help="names, two checked targets each")
    ap.add_argument("--interval", type=int, default=5, help="intervalSeconds of every check")
    ap.add_argument("--settle", type=float, default=5,
                    help="seconds after the first round of probes before measuring")
    ap.add_argument("--window", type=float, default=30, help="seconds of the quiet CPU window")
    ap.add_argument("--rate", type=int, default=2000, help="paced client, queries/s")
    ap.add_argument("--paced", type=float, default=15, help="seconds of the paced client")
    ap.add_argument("--duration", type=float, default=5, help="seconds of dnsperf")
    ap.add_argument("--repeat", type=int, default=1, help="alternate the two servers this often")
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # the helper process
    args = ap.parse_args()
    if args.serve is not None:
        asyncio.run(serve(args.serve))
        return 0
    for tool in ("dnsperf", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: run hack/setup.sh")
    os.sched_setaffinity(0, {int(CLIENT_CPU)})  # this process (the paced client) on CPU 0
    targets = 2 * args.names
    tmp = Path(tempfile.mkdtemp(prefix="aliasd-bench-health-"))
    helper = subprocess.Popen([sys.executable, __file__, "--serve", str(targets)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    load_before = os.getloadavg()
    rows = []
    try:
        assert helper.stdout is not None
        ports = json.loads(helper.stdout.readline())
        plain, checked = tmp / "plain.yaml", tmp / "checked.yaml"
        names = write_aliases(plain, args.names, None, args.interval)
        write_aliases(checked, args.names, ports, args.interval)
        qfile = tmp / "queries.txt"
        rng = random.Random(1)
        qfile.write_text("".join(f"{rng.choice(names)} A\n" for _ in range(20_000)))
        with socket.create_connection((target_address(targets - 1), ports[-1]), timeout=5):
            pass  # the helper serves
        for _ in range(args.repeat):
            rows.append(measure(label="no checks", aliases=plain, qfile=qfile, checks=0,
                                args=args))
            rows.append(measure(label="checks", aliases=checked, qfile=qfile, checks=targets,
                                args=args))
    finally:
        if helper.stdin is not None:
            helper.stdin.close()  # the helper serves until its stdin closes
        helper.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    load_after = os.getloadavg()
    print(f"\n{args.names} names, {targets} targets ({targets // 2} TCP + {targets // 2} HTTP "
          f"checks at a {args.interval} s interval where checked); load average before "
          f"{load_before[0]:.2f}, after {load_after[0]:.2f} (1 min) on {os.cpu_count()} CPUs")
    print(f"{'server':<11}{'checks':>7}{'idle core':>10}{'probes/s':>9}{'failed/s':>9}"
          f"{'paced core':>11}{'p50 ms':>8}{'p99 ms':>8}{'lost':>6}{'qps':>8}")
    for r in rows:
        print(f"{r['server']:<11}{r['checks']:>7}{r['idle']:>10.4f}{r['probes/s']:>9.1f}"
              f"{r['failed/s']:>9.1f}{r['loaded']:>11.3f}{r['p50']:>8.3f}{r['p99']:>8.3f}"
              f"{r['lost']:>6}{r['qps']:>8.0f}")
    print(f"idle core: aliasd's CPU over {args.window:g} s with no queries (the probes' cost); "
          f"paced core: its CPU under the paced client ({args.rate} q/s, {args.paced:g} s), "
          f"p50/p99 of that client; qps: dnsperf -c 4 -q 100 for {args.duration:g} s "
          "(saturating)")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
