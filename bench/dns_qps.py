"""aliasd (asyncio and uvloop) vs CoreDNS (``file``) vs NSD, same zone, same
queries, one run, two views:

    .venv/bin/python bench/dns_qps.py [--names 1000] [--duration 5] [--rate 2000]

* **pinned**: the server on CPU 1, dnsperf (and the paced client) on CPU 0,
  so each server gets exactly one core (CoreDNS runs with GOMAXPROCS=1, NSD
  with one server process);
* **whole machine**: server and dnsperf on both cores, each scheduled as the
  kernel likes (CoreDNS GOMAXPROCS=2, NSD two server processes).

In the pinned view, on a freshly started server, in this order: the query mix
(60% A, 15% AAAA, 15% NXDOMAIN, 10% 0x20 mixed case); existing names only
(A/AAAA on the same names, warm); a flood of random nonexistent names
(``x<random>.internal``, distinct, each sent once); then existing names that had never been
asked (a second set of names in the same zone), right after the flood; then
p50/p99 of a paced client at a fixed rate (latency at equal load, not at
saturation). dnsperf: 4 clients, 100 outstanding, 2 s timeout.
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
from collections.abc import Callable
from pathlib import Path

import dns.message
import dns.query

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "hack" / "devtools")]  # aliasd, aliasd_dev

from paced import paced_rtts  # noqa: E402  (bench/, the script's directory)

from aliasd_dev import ensure_binaries, free_port, free_udp_tcp_port  # noqa: E402

PINNED, WHOLE = "1", "0,1"


def address(i: int) -> str:
    return f"10.{96 + i // 65536}.{(i // 256) % 256}.{i % 256}"


def write_inputs(tmp: Path, n: int, flood: int, repeat: int,
                 seed: int = 1) -> dict[str, Path]:
    rng = random.Random(seed)
    names = [f"svc-{i:04d}" for i in range(n)]
    # Exist, never asked before the flood: a set per repetition.
    fresh = [f"new{r}-{i:04d}" for r in range(repeat) for i in range(n)]
    aliases = ["aliases:"]
    zone = ["$ORIGIN internal.", "$TTL 30",
            "@ 30 IN SOA ns.internal. hostmaster.internal. 1 60 10 1209600 5",
            "@ 30 IN NS ns.internal.", "ns 30 IN A 127.0.0.1"]
    for i, name in enumerate(names + fresh):
        v4, v6 = address(i), f"fd00::{i:x}"
        aliases.append(f"  {name}: {{addresses: [{v4}, \"{v6}\"], ttl: 30}}")
        zone += [f"{name} 30 IN A {v4}", f"{name} 30 IN AAAA {v6}"]
    (tmp / "aliases.yaml").write_text("\n".join(aliases) + "\n")
    (tmp / "internal.zone").write_text("\n".join(zone) + "\n")

    def mixed(name: str) -> str:
        return "".join(c.upper() if rng.random() < 0.5 else c for c in name)

    mix, existing = [], []
    for _ in range(20_000):
        r, name = rng.random(), rng.choice(names)
        if r < 0.60:
            mix.append(f"{name}.internal A")
        elif r < 0.75:
            mix.append(f"{name}.internal AAAA")
        elif r < 0.90:
            mix.append(f"missing-{rng.randrange(n)}.internal A")
        else:
            mix.append(f"{mixed(name)}.InTeRnAl A")
        existing.append(f"{mixed(name) if r < 0.1 else name}.internal "
                        f"{'AAAA' if r > 0.8 else 'A'}")
    groups: list[tuple[str, list[str]]] = [("mix", mix), ("existing", existing)]
    for r in range(repeat):
        floods = {f"x{rng.getrandbits(48):012x}.internal A" for _ in range(flood)}
        after = [f"{name}.internal {t}" for name in fresh[r * n:(r + 1) * n] for t in ("A", "AAAA")]
        rng.shuffle(after)
        groups += [(f"flood{r}", sorted(floods)), (f"after{r}", after)]
    files = {}
    for key, lines in groups:
        files[key] = tmp / f"{key}.txt"
        files[key].write_text("\n".join(lines) + "\n")
    return files


def wait_dns(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    q = dns.message.make_query("svc-0000.internal.", "A")
    while time.monotonic() < deadline:
        try:
            if dns.query.udp(q, "127.0.0.1", port=port, timeout=0.5).answer:
                return
        except Exception:
            time.sleep(0.1)
    raise SystemExit(f"server on port {port} did not answer")


def dnsperf(port: int, qfile: Path, duration: float, cpus: str) -> dict[str, float]:
    """dnsperf for ``duration`` seconds, or through the file once if 0."""
    limit = ["-l", str(duration)] if duration else ["-n", "1"]
    out = subprocess.run(
        ["taskset", "-c", "0" if cpus == PINNED else WHOLE, "dnsperf", "-s", "127.0.0.1",
         "-p", str(port), "-d", str(qfile), *limit, "-c", "4", "-q", "100",
         "-t", "2"], capture_output=True, text=True, check=True).stdout

    def num(pattern: str) -> float:
        m = re.search(pattern, out)
        return float(m.group(1)) if m else float("nan")

    return {"qps": num(r"Queries per second:\s+([\d.]+)"),
            "lost": num(r"Queries lost:\s+(\d+)"),
            "avg_ms": num(r"Average Latency \(s\):\s+([\d.]+)") * 1000}


def wires_of(qfile: Path, n: int = 5000) -> list[bytes]:
    lines = qfile.read_text().split("\n")[:n]
    pairs = (line.split() for line in lines if line)  # dnsperf's "name type"
    return [dns.message.make_query(name, qtype).to_wire() for name, qtype in pairs]


async def paced_latency(port: int, wires: list[bytes], rate: int,
                        seconds: float) -> tuple[float, float, int]:
    """Send at ``rate`` q/s for ``seconds``; per-query RTT p50/p99 in ms, and losses."""
    rtts = await paced_rtts(port, wires, rate, seconds)
    got = [r for r in rtts if r != float("inf")]
    p50 = statistics.median(got) if got else float("nan")
    p99 = got[int(len(got) * 0.99) - 1] if got else float("nan")
    return p50, p99, len(rtts) - len(got)


Launcher = Callable[[Path, int, str], list[str]]


def launchers(bin_dir: Path, baseline: Path | None) -> dict[str, Launcher]:
    def aliasd(loop: str, tree: Path = ROOT) -> Launcher:
        def cmd(tmp: Path, port: int, cpus: str) -> list[str]:
            boot = f"import sys; sys.path.insert(0, {str(tree)!r}); "
            if loop == "asyncio":
                boot += "sys.modules['uvloop'] = None; "
            boot += "from aliasd.cli import main; sys.exit(main())"
            return [sys.executable, "-c", boot, "--log-level", "warning", "run", "--aliases-file",
                    str(tmp / "aliases.yaml"), "--dns-listen", f"127.0.0.1:{port}",
                    "--http-listen", f"127.0.0.1:{free_port()}"]
        return cmd

    def coredns(tmp: Path, port: int, cpus: str) -> list[str]:
        (tmp / f"Corefile.{port}").write_text(
            f"internal:{port} {{\n    bind 127.0.0.1\n    file {tmp / 'internal.zone'}\n}}\n")
        return [str(bin_dir / "coredns"), "-conf", str(tmp / f"Corefile.{port}")]

    def nsd(tmp: Path, port: int, cpus: str) -> list[str]:
        # Its own config, zone and state in the temp dir, in the foreground;
        # rrl-ratelimit 0, or response-rate limiting caps one client at 200 q/s.
        d = tmp / f"nsd.{port}"
        d.mkdir()
        (d / "nsd.conf").write_text(f"""server:
    ip-address: 127.0.0.1@{port}
    server-count: {1 if cpus == PINNED else 2}
    username: ""
    chroot: ""
    database: ""
    zonesdir: "{d}"
    zonelistfile: "{d}/zone.list"
    xfrdfile: "{d}/xfrd.state"
    xfrdir: "{d}"
    pidfile: "{d}/nsd.pid"
    logfile: "{d}/nsd.log"
    verbosity: 0
    rrl-ratelimit: 0
remote-control:
    control-enable: no
zone:
    name: internal
    zonefile: "{tmp / 'internal.zone'}"
""")
        return ["nsd", "-d", "-c", str(d / "nsd.conf")]

    out = {"aliasd asyncio": aliasd("asyncio"), "aliasd uvloop": aliasd("uvloop"),
           "coredns file": coredns, "nsd": nsd}
    if baseline is not None:
        out = {"before uvloop": aliasd("uvloop", baseline), **out}
    return out


def stop(p: subprocess.Popen[bytes]) -> None:
    p.terminate()
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def keep_best(results: dict[str, float], key: str, value: float) -> None:
    results[key] = max(results.get(key, float("-inf")), value)


def rss_mib(pid: int) -> float:
    try:
        m = re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())
    except OSError:
        return float("nan")
    return int(m.group(1)) / 1024 if m else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--names", type=int, default=1000)
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--flood", type=int, default=150_000,
                    help="distinct random names per flood, each sent once (more than the "
                         "100,000 answers the cache once held)")
    ap.add_argument("--rate", type=int, default=2000, help="paced latency probe, queries/s")
    ap.add_argument("--repeat", type=int, default=3,
                    help="measure each rate this many times, keep the best (the machine is "
                         "shared: the best run is the one least disturbed)")
    ap.add_argument("--baseline", metavar="COMMIT",
                    help="also run aliasd (uvloop) as of COMMIT, e.g. 725a818")
    ap.add_argument("--only", action="append", help="run only these servers")
    args = ap.parse_args()
    for tool in ("dnsperf", "taskset", "nsd"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: run hack/setup.sh")
    os.sched_setaffinity(0, {0})  # this process (the paced client) on CPU 0
    tmp = Path(tempfile.mkdtemp(prefix="aliasd-bench-"))
    baseline = None
    if args.baseline:
        baseline = tmp / "baseline"
        baseline.mkdir()
        archive = subprocess.run(["git", "archive", args.baseline, "aliasd"], cwd=ROOT,
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(baseline)], input=archive, check=True)
    servers = launchers(ensure_binaries(), baseline)
    if args.only:
        unknown = sorted(set(args.only) - set(servers))
        if unknown:
            raise SystemExit(f"--only: no server named {', '.join(map(repr, unknown))} "
                             f"(servers: {', '.join(map(repr, servers))})")
        servers = {k: v for k, v in servers.items() if k in args.only}
    load_before = os.getloadavg()
    results: dict[str, dict[str, float]] = {}
    try:
        files = write_inputs(tmp, args.names, args.flood, args.repeat)
        d = args.duration
        for name, launch in servers.items():
            r = results[name] = {}
            for cpus in (PINNED, WHOLE):
                port = free_udp_tcp_port()
                proc = subprocess.Popen(["taskset", "-c", cpus, *launch(tmp, port, cpus)],
                                        cwd=tmp, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
                try:
                    wait_dns(port)
                    dnsperf(port, files["mix"], 1, cpus)  # warm-up
                    for rep in range(args.repeat):
                        def rate(qfile: str, port: int = port, cpus: str = cpus) -> float:
                            # A flood sends every one of its distinct names once.
                            seconds = 0 if qfile.startswith("flood") else d
                            return dnsperf(port, files[qfile], seconds, cpus)["qps"]
                        if cpus == WHOLE:
                            keep_best(r, "whole", rate("mix"))
                            continue
                        keep_best(r, "pinned", rate("mix"))
                        keep_best(r, "existing", rate("existing"))
                        rss = rss_mib(proc.pid)
                        keep_best(r, "flood", rate(f"flood{rep}"))
                        keep_best(r, "rss_flood", rss_mib(proc.pid) - rss)
                        keep_best(r, "after", rate(f"after{rep}"))
                    if cpus == WHOLE:
                        continue
                    probe = paced_latency(port, wires_of(files["mix"]), args.rate, 5)
                    p50, p99, lost = asyncio.run(probe)
                    r.update(p50=p50, p99=p99, paced_lost=lost)
                finally:
                    stop(proc)
        load_after = os.getloadavg()
        print(f"\n{args.names} names (+{args.names} per repetition asked only after a flood), "
              f"{d:g}s of dnsperf (-c 4 -q 100) per measure, best of {args.repeat}; "
              f"{args.flood} distinct names per flood; "
              f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} "
              f"(1 min) on {os.cpu_count()} CPUs")
        head = (f"{'server':<16}{'pinned':>9}{'whole':>9}{'existing':>10}{'flood':>9}"
                f"{'fl/ex':>7}{'after':>9}{'af/ex':>7}{'p50 ms':>8}{'p99 ms':>8}{'dRSS':>7}")
        print(head)
        for name, r in results.items():
            print(f"{name:<16}{r['pinned']:>9.0f}{r['whole']:>9.0f}{r['existing']:>10.0f}"
                  f"{r['flood']:>9.0f}{r['flood'] / r['existing']:>7.2f}{r['after']:>9.0f}"
                  f"{r['after'] / r['existing']:>7.2f}{r['p50']:>8.3f}{r['p99']:>8.3f}"
                  f"{r['rss_flood']:>6.1f}M")
        print("pinned/whole: the query mix, q/s; existing: A/AAAA of asked names (pinned); "
              "flood: random nonexistent names; after: existing names never asked before, "
              f"right after the flood; p50/p99: paced at {args.rate} q/s (pinned, mix); "
              "dRSS: server RSS growth over the flood")
        if "nsd" in results:
            for name in ("aliasd asyncio", "aliasd uvloop"):
                if name in results:
                    print(f"{name} / nsd per core: "
                          f"{results[name]['pinned'] / results['nsd']['pinned']:.2f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
