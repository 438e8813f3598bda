"""Scale: DNS latency under EndpointSlice churn, aliasd next to CoreDNS's
``kubernetes`` plugin on the same local API server, in one run.

    .venv/bin/python bench/scale.py [--aliased 3000] [--plain 3000] [--rates 50,200]
    .venv/bin/python bench/scale.py --hold F [sizes]   # build once, keep it up
    .venv/bin/python bench/scale.py --attach F [--rates 100]  # measure against it

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

It also prints aliasd's garbage-collector pauses (the ``aliasd_gc_*`` metrics)
and event-loop lag (``aliasd_loop_lag_seconds``). Numbers only: nothing here
asserts.

``--alias-objects N`` adds the Alias resource: the CRD and N Alias objects
(half ``serviceRef`` to the aliased Services, half static ``targets``), then
two runs of everything above: first with them (a cold start: the time until
every Alias is ``Ready``, and ``Programmed``, seen through a watch; status
writes a second, peak and mean; DNS latency during the status storm), then
with the CRD removed, the same window measured without a storm.

Building 10k + 10k objects takes minutes even over keep-alive connections, so
``--hold F`` builds the control plane and the objects once, writes how to
reach them to F and waits (Ctrl-C tears it down); ``--attach F`` runs the
measurement against it, as often as wanted (the renamer never touches the
names the query load and the readiness check ask for).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import http.client
import itertools
import json
import os
import random
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.message
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "hack" / "devtools")]  # aliasd, aliasd_dev

from paced import paced_rtts  # noqa: E402  (bench/, the script's directory)

from aliasd_dev import (  # noqa: E402
    LocalCluster,
    ensure_binaries,
    free_port,
    free_udp_tcp_port,
)

NS = "scale"
CONTROLLER = "endpointslice-controller.k8s.io"
TICK = 1 / 100  # os.times resolution


class Api:
    """Admin requests to the API server over keep-alive HTTPS, one connection
    per thread: a TLS handshake per request (urllib) costs the API server more
    than the request itself, and made a 10k + 10k build take half an hour."""

    def __init__(self, port: int, token: str, cafile: Path) -> None:
        self.port, self.token, self.ctx_cafile = port, token, cafile
        self.ctx = ssl.create_default_context(cafile=str(cafile))
        self.local = threading.local()

    def request(self, method: str, path: str, body: Any = None, *,
                content_type: str = "application/json") -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": content_type,
                   "Accept": "application/json"}
        for attempt in range(3):
            conn = getattr(self.local, "conn", None)
            if conn is None:
                conn = self.local.conn = http.client.HTTPSConnection(
                    "127.0.0.1", self.port, context=self.ctx, timeout=30)
            try:
                conn.request(method, path, body=data, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                self.local.conn = None
                if attempt == 2:
                    raise
                continue
            if resp.status >= 300:
                raise RuntimeError(f"{method} {path}: HTTP {resp.status}: {raw[:300]!r}")
            return json.loads(raw)
        return None


def create(api: Api, args: argparse.Namespace) -> None:
    svcs = f"/api/v1/namespaces/{NS}/services"
    slices = f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices"

    def aliased(i: int) -> None:
        api.request("POST", svcs, {"metadata": {"name": f"a-{i}", "annotations": {
            "aliasd.io/alias": f"scale-a-{i}"}}, "spec": {"ports": [{"name": "http",
                                                                      "port": 80}]}})

    def plain(i: int) -> None:
        api.request("POST", svcs, {"metadata": {"name": f"p-{i}"},
                                   "spec": {"ports": [{"name": "http", "port": 80}]}})
        api.request("POST", slices, slice_body(f"p-{i}", f"p-{i}-x", headless=False, n=i))

    def headless(i: int) -> None:
        api.request("POST", svcs, {"metadata": {"name": f"h-{i}", "annotations": {
            "aliasd.io/alias": f"scale-h-{i}"}}, "spec": {"clusterIP": "None", "ports": [
                {"name": "http", "port": 80}]}})
        api.request("POST", slices, slice_body(f"h-{i}", f"h-{i}-x", headless=True, n=i))

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(aliased, range(args.aliased)))
        list(pool.map(plain, range(args.plain)))
        list(pool.map(headless, range(args.headless)))


def create_in_etcd(etcd_port: int, args: argparse.Namespace) -> None:
    """The same objects written straight into etcd, 128 to a transaction:
    minutes instead of an hour at 50,000 Services. The API server reads JSON
    from etcd as well as protobuf, and its watch cache picks the keys up like
    any write. Cluster IPs come from 10.100.0.0/16 (inside the Service CIDR)
    with the IPAddress objects the allocator would have created, so nothing
    needs repairing; admission and defaulting are skipped, so every field the
    API server would default is written out."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    puts: list[tuple[str, dict[str, Any]]] = []

    def meta(name: str, **extra: Any) -> dict[str, Any]:
        return {"name": name, "namespace": NS, "uid": str(uuid.uuid4()),
                "creationTimestamp": now, **extra}

    def service(name: str, n: int, *, alias: str | None, headless: bool) -> None:
        ann = {"annotations": {"aliasd.io/alias": alias}} if alias else {}
        spec: dict[str, Any] = {
            "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 80}],
            "type": "ClusterIP", "sessionAffinity": "None", "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack", "internalTrafficPolicy": "Cluster"}
        if headless:
            spec.update(clusterIP="None", clusterIPs=["None"])
        else:
            ip = f"10.100.{n // 250}.{n % 250 + 1}"
            spec.update(clusterIP=ip, clusterIPs=[ip])
            puts.append((f"/registry/ipaddresses/{ip}", {
                "apiVersion": "networking.k8s.io/v1", "kind": "IPAddress",
                "metadata": {"name": ip, "uid": str(uuid.uuid4()), "creationTimestamp": now,
                             "labels": {"ipaddress.kubernetes.io/ip-family": "IPv4",
                                        "ipaddress.kubernetes.io/managed-by":
                                            "ipallocator.k8s.io"}},
                "spec": {"parentRef": {"group": "", "resource": "services",
                                       "namespace": NS, "name": name}}}))
        puts.append((f"/registry/services/specs/{NS}/{name}", {
            "apiVersion": "v1", "kind": "Service", "metadata": meta(name, **ann),
            "spec": spec, "status": {"loadBalancer": {}}}))

    def endpoint_slice(svc: str, n: int, *, headless: bool) -> None:
        body = slice_body(svc, f"{svc}-x", headless=headless, n=n)
        body["metadata"] = meta(f"{svc}-x", labels=body["metadata"]["labels"])
        puts.append((f"/registry/endpointslices/{NS}/{svc}-x", body))

    n = 0
    for i in range(args.aliased):
        service(f"a-{i}", n, alias=f"scale-a-{i}", headless=False)
        n += 1
    for i in range(args.plain):
        service(f"p-{i}", n, alias=None, headless=False)
        endpoint_slice(f"p-{i}", i, headless=False)
        n += 1
    for i in range(args.headless):
        service(f"h-{i}", n, alias=f"scale-h-{i}", headless=True)
        endpoint_slice(f"h-{i}", i, headless=True)

    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    def txn(batch: list[tuple[str, dict[str, Any]]]) -> None:
        ops = [{"requestPut": {"key": b64(k), "value": b64(json.dumps(v))}} for k, v in batch]
        req = urllib.request.Request(f"http://127.0.0.1:{etcd_port}/v3/kv/txn",
                                     data=json.dumps({"success": ops}).encode())
        with urllib.request.urlopen(req, timeout=60) as r:
            if not json.load(r).get("succeeded"):
                raise RuntimeError("etcd txn failed")

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(txn, [puts[i:i + 128] for i in range(0, len(puts), 128)]))


CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
ALIASES = f"/apis/aliasd.io/v1alpha1/namespaces/{NS}/aliases"


def install_alias_crd(api: Api) -> None:
    crd = yaml.safe_load((ROOT / "manifests" / "base" / "crd-alias.yaml").read_text())
    api.request("POST", CRD_PATH, crd)
    deadline = time.monotonic() + 60
    while True:
        try:
            api.request("GET", f"{ALIASES}?limit=1")
            return
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def uninstall_alias_crd(api: Api) -> None:
    api.request("DELETE", f"{CRD_PATH}/aliases.aliasd.io")
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            api.request("GET", f"{CRD_PATH}/aliases.aliasd.io")
        except RuntimeError:
            return
        time.sleep(1)
    raise RuntimeError("the Alias CRD was not removed within 600 s")


def alias_body(i: int, aliased: int) -> dict[str, Any]:
    """Alias i: even ones follow an aliased Service, odd ones have static targets."""
    spec: dict[str, Any] = {"hostnames": [f"scale-al-{i}"]}
    if i % 2 == 0 and aliased:
        spec["serviceRef"] = {"name": f"a-{(i // 2) % aliased}", "port": "http"}
    else:
        spec["targets"] = [{"address": f"10.{200 + i // 62500}.{i // 250 % 250}.{i % 250 + 1}"}]
    return {"apiVersion": "aliasd.io/v1alpha1", "kind": "Alias",
            "metadata": {"name": f"al-{i}"}, "spec": spec}


def create_aliases(api: Api, n: int, aliased: int) -> None:
    t = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: api.request("POST", ALIASES, alias_body(i, aliased)), range(n)))
    print(f"created {n} Aliases in {time.monotonic() - t:.0f}s", flush=True)


WATCH_CODE = """
import http.client, json, ssl, sys, time
port, token, cafile, path, n = sys.argv[1:6]
conn = http.client.HTTPSConnection("127.0.0.1", int(port), timeout=900,
                                   context=ssl.create_default_context(cafile=cafile))
headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
# Every Alias is new (no status): watch from now, without the 10,000 initial
# ADDED events a watch from nothing would cost the API server (and this
# process) during aliasd's cold start.
conn.request("GET", f"{path}?limit=1", headers=headers)
rv = json.loads(conn.getresponse().read())["metadata"]["resourceVersion"]
conn.request("GET", f"{path}?watch=1&timeoutSeconds=900&resourceVersion={rv}",
             headers=headers)
ready, programmed, said = set(), set(), set()
resp = conn.getresponse()
print("watching", time.monotonic(), flush=True)
for line in resp:
    obj = json.loads(line).get("object") or {}
    name = (obj.get("metadata") or {}).get("name", "")
    got = {c.get("type"): c.get("status") for c in
           (obj.get("status") or {}).get("conditions") or ()}
    for kind, names in (("Ready", ready), ("Programmed", programmed)):
        if got.get(kind) == "True":
            names.add(name)
        else:
            names.discard(name)
        if kind not in said and len(names) >= int(n):
            said.add(kind)
            print(kind, time.monotonic(), flush=True)
    if len(said) == 2:
        break
"""


class AliasWatch(threading.Thread):
    """Follows every Alias through one watch: when all are Ready, and
    Programmed (monotonic times). Started before aliasd, from the current
    resourceVersion (the Aliases are new, without a status): the watch costs
    the API server only the status changes. It runs in a process of its own:
    parsing 10,000 events in this one would hold the GIL against the paced
    DNS client and show up as DNS latency."""

    def __init__(self, api: Api, n: int) -> None:
        super().__init__(daemon=True)
        self.api, self.n = api, n
        self.all_ready: float | None = None
        self.all_programmed: float | None = None
        self.watching = threading.Event()

    def run(self) -> None:
        p = subprocess.Popen([sys.executable, "-c", WATCH_CODE, str(self.api.port),
                              self.api.token, str(self.api.ctx_cafile), ALIASES, str(self.n)],
                             stdout=subprocess.PIPE, text=True)
        assert p.stdout is not None
        for line in p.stdout:
            kind, at = line.split()
            if kind == "watching":
                self.watching.set()
            elif kind == "Ready":
                self.all_ready = float(at)
            else:
                self.all_programmed = float(at)
        p.wait()


def writes(text: str) -> float:
    m = re.search(r'^aliasd_alias_status_writes_total{result="written"} (\S+)', text, re.M)
    return float(m.group(1)) if m else 0.0


def storm(dport: int, hport: int, names: list[str], args: argparse.Namespace, *,
          watch: AliasWatch | None, seconds: float
          ) -> tuple[list[float], list[tuple[float, float]], float]:
    """DNS queries at --qps in one-second slices while the status writer
    works (until every Alias is Programmed and the writes stop), or for
    ``seconds`` without Aliases: (RTTs, (writes, seconds) of each slice,
    seconds). A slice lasts a second and what reading /metrics takes."""
    rtts: list[float] = []
    slices: list[tuple[float, float]] = []
    last, at = writes(metrics(hport)), time.monotonic()
    t0 = at
    while True:
        rtts += asyncio.run(paced(dport, names, args.qps, 1.0))
        now, now_at = writes(metrics(hport)), time.monotonic()
        slices.append((now - last, now_at - at))
        last, at = now, now_at
        elapsed = time.monotonic() - t0
        if watch is None:
            if elapsed >= seconds:
                break
        elif (watch.all_programmed is not None and slices[-1][0] == 0) or elapsed > 900:
            break
    rtts.sort()
    return rtts, slices, time.monotonic() - t0


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
    return await paced_rtts(port, [dns.message.make_query(n, "A").to_wire() for n in names],
                            rate, seconds)


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def fmt(xs: list[float]) -> str:
    return (f"{pct(xs, 0.5):.2f} / {pct(xs, 0.99):.2f} / {pct(xs, 0.999):.2f} / "
            f"{xs[-1] if xs else float('nan'):.1f}")


class Churn(threading.Thread):
    """PUTs EndpointSlices at ``rate``/s, round robin over ``names``."""

    def __init__(self, c: Api, names: list[str], rate: int, headless: bool) -> None:
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

    def __init__(self, c: Api, dns_port: int, n: int, tag: str) -> None:
        super().__init__(daemon=True)
        self.c, self.port, self.n, self.tag = c, dns_port, n, tag
        self.stop = threading.Event()
        self.latencies: list[float] = []

    def run(self) -> None:
        rng = random.Random(7)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.5)
            k = 0
            # Never a name the query load or the readiness check asks for, so
            # --attach runs see the same names answering.
            pool = [i for i in range(self.n - 1) if i % 7]
            while not self.stop.is_set():
                i = rng.choice(pool)
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


POLL_CODE = """
import signal, sys, urllib.request
n = 0
def done(*_):
    print(n, flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, done)
while True:
    with urllib.request.urlopen(sys.argv[1], timeout=10) as r:
        r.read()
    n += 1
"""


class Poller:
    """A dashboard: GET /v1/aliases back to back (the endpoint needs no token),
    from its own process, so that it does not disturb the probe's timing."""

    def __init__(self, http_port: int) -> None:
        self.p = subprocess.Popen([sys.executable, "-c", POLL_CODE,
                                   f"http://127.0.0.1:{http_port}/v1/aliases"],
                                  stdout=subprocess.PIPE, text=True)

    def stop(self) -> int:
        """Stop; how many documents it fetched."""
        self.p.terminate()
        out, _ = self.p.communicate(timeout=30)
        return int(out.strip() or 0)


@dataclass
class Target:
    """A control plane with the objects created: where to reach it."""

    api: Api
    kubeconfig: Path
    dns_port: int  # CoreDNS
    coredns_pid: int
    aliased: int
    plain: int
    headless: int


def build(c: LocalCluster, args: argparse.Namespace) -> Target:
    api = Api(c.api_port, c.token, c.certs / "ca.crt")
    api.request("POST", "/api/v1/namespaces", {"metadata": {"name": NS}})
    t = time.monotonic()
    if args.bulk:
        create_in_etcd(c.etcd_port, args)
    else:
        create(api, args)
    print(f"created {args.aliased} aliased + {args.plain} plain Services "
          f"(+{args.plain} slices) + {args.headless} aliased headless in "
          f"{time.monotonic() - t:.0f}s", flush=True)
    coredns = c._procs["coredns"].popen
    assert coredns is not None
    return Target(api, c.kubeconfig, c.dns_port, coredns.pid, args.aliased, args.plain,
                  args.headless)


def hold(c: LocalCluster, target: Target, info: Path) -> None:
    info.write_text(json.dumps({
        "api_port": c.api_port, "token": c.token, "cafile": str(c.certs / "ca.crt"),
        "kubeconfig": str(c.kubeconfig), "dns_port": c.dns_port,
        "coredns_pid": target.coredns_pid, "aliased": target.aliased,
        "plain": target.plain, "headless": target.headless}))
    print(f"holding the control plane; measure with --attach {info}; Ctrl-C (or SIGTERM) "
          f"tears it down", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        info.unlink(missing_ok=True)


def attach(info: Path) -> Target:
    d = json.loads(info.read_text())
    return Target(Api(d["api_port"], d["token"], Path(d["cafile"])), Path(d["kubeconfig"]),
                  d["dns_port"], d["coredns_pid"], d["aliased"], d["plain"], d["headless"])


def loop_lag_line(text: str) -> str:
    """Event-loop lag: how many of the periodic probes ran late, by how much."""
    buckets = re.findall(r'^aliasd_loop_lag_seconds_bucket{le="([^"]+)"} (\S+)', text, re.M)
    if not buckets:
        return "(no aliasd_loop_lag_seconds)"
    total = float(buckets[-1][1])
    parts = [f"{total:.0f} probes"]
    for le, n in buckets[:-1]:
        if float(le) >= 0.002:
            parts.append(f">{float(le) * 1000:g}ms {total - float(n):.0f}")
    return ", ".join(parts)


def measure(t: Target, args: argparse.Namespace, rates: list[int], *, aliases: int = 0,
            storm_seconds: float = 0.0) -> float:
    """One run (see the module); with ``aliases`` Alias objects in place, or
    ``storm_seconds`` of the quiet window to compare with. Returns the storm's
    length in seconds (0: none measured)."""
    dport, hport = free_udp_tcp_port(), free_port()
    watch = AliasWatch(t.api, aliases) if aliases else None
    if watch is not None:
        watch.start()
        if not watch.watching.wait(60):
            raise SystemExit("the Alias watch did not start")
    t0 = time.monotonic()
    env = dict(os.environ)
    cmd = [sys.executable, "-m", "aliasd", "--log-level", "warning", "run",
           "--kubeconfig", str(t.kubeconfig), "--coredns-mode", "off",
           # One replica, the status writer (no Lease to win first).
           "--leader-election", "off",
           "--zone", "internal", "--dns-listen", f"127.0.0.1:{dport}",
           "--http-listen", f"127.0.0.1:{hport}",
           # As the manifests run it: the writer is part of the cost of a change.
           "--state-file", str(Path(tempfile.mkdtemp(prefix="aliasd-scale-")) / "state.json")]
    if args.wrap:
        cmd[1:1] = args.wrap.split()
    p = subprocess.Popen(cmd, cwd=args.source or ROOT, env=env)
    try:
        lasts = [f"scale-a-{t.aliased - 1}.internal."]
        if aliases:
            lasts += [f"scale-al-{aliases - 1}.internal.", f"scale-al-{aliases - 2}.internal."]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.2)
            for last in lasts:
                while not answers(s, dport, last):
                    if p.poll() is not None:
                        raise SystemExit("aliasd exited")
                    time.sleep(0.02)
        ready = time.monotonic() - t0
        # The CPU it took is what the machine's other load does not inflate.
        print(f"aliasd ready (every alias answering) {ready:.2f}s after start "
              f"({cpu_seconds(p.pid):.2f} s CPU); RSS {rss_mb(p.pid):.0f} MB; "
              f"CoreDNS RSS {rss_mb(t.coredns_pid):.0f} MB", flush=True)
        long = 0.0
        if aliases or storm_seconds:
            names = [f"scale-a-{i}.internal." for i in range(0, t.aliased, 7)]
            rtts, slices, long = storm(dport, hport, names, args, watch=watch,
                                       seconds=storm_seconds)
            what = (f"status storm ({aliases} Aliases)" if aliases
                    else "the same window without the CRD")
            print(f"DNS during {what}, {long:.0f} s from ready: p50 / p99 / p99.9 / max "
                  f"{fmt(rtts)} ms", flush=True)
            if watch is not None:
                busy = [(w, d) for w, d in slices if w]
                total, busy_s = sum(w for w, _ in busy), sum(d for _, d in busy)
                print(f"every Alias Ready {(watch.all_ready or float('nan')) - t0:.1f} s and "
                      f"Programmed {(watch.all_programmed or float('nan')) - t0:.1f} s after "
                      f"start; status writes {total:.0f}: peak "
                      f"{max((w / d for w, d in busy), default=0):.0f}/s, mean "
                      f"{total / max(busy_s, 1e-9):.0f}/s over the {busy_s:.0f} s with writes, "
                      f"{total / long:.0f}/s over the storm "
                      f"({cpu_seconds(p.pid):.2f} s CPU so far)", flush=True)
        time.sleep(2)
        text = metrics(hport)
        print(f"GC after the initial sync: {gc_line(text)}")
        print(f"loop lag after the initial sync: {loop_lag_line(text)}", flush=True)
        alias_names = [f"scale-a-{i}.internal." for i in range(0, t.aliased, 7)]
        svc_names = [f"a-{i}.{NS}.svc.cluster.local." for i in range(0, t.aliased, 7)]
        phases: list[tuple[str, str, int]] = [("quiet", "", 0)]
        phases += [(f"churn {r}/s plain", "plain", r) for r in rates]
        if t.headless:
            phases += [(f"churn {r}/s headless", "headless", r) for r in rates]
        rows = []
        run_tag = os.urandom(2).hex()  # --attach runs rename to fresh names
        for label, kind, rate in phases:
            churn = None
            if kind == "plain":
                churn = Churn(t.api, [f"p-{i}" for i in range(t.plain)], rate, False)
            elif kind == "headless":
                churn = Churn(t.api, [f"h-{i}" for i in range(t.headless)], rate, True)
            renamer = Renamer(t.api, dport, t.aliased, f"{run_tag}{kind or 'q'}{rate}x")
            if churn:
                churn.start()
            renamer.start()
            pollers = [Poller(hport) for _ in range(args.poll)]
            time.sleep(1)
            before = metrics(hport)
            cpu_a, cpu_c, w0 = cpu_seconds(p.pid), cpu_seconds(t.coredns_pid), time.monotonic()

            async def both() -> tuple[list[float], list[float]]:
                a, b = await asyncio.gather(
                    paced(dport, alias_names, args.qps, args.phase),
                    paced(t.dns_port, svc_names, args.qps, args.phase))
                return a, b

            lat_a, lat_c = asyncio.run(both())
            wall = time.monotonic() - w0
            cores_a = (cpu_seconds(p.pid) - cpu_a) / wall
            cores_c = (cpu_seconds(t.coredns_pid) - cpu_c) / wall
            after = metrics(hport)
            fetched = sum(q.stop() for q in pollers)
            renamer.stop.set()
            if churn:
                churn.stop.set()
                churn.join()
            renamer.join()
            ren = sorted(renamer.latencies)
            landed = f" ({churn.done / (wall + 1):.0f}/s landed)" if churn else ""
            if pollers:
                landed += f" ({fetched / (wall + 1):.0f} GET/s)"
            rows.append((label + landed, fmt(lat_a), fmt(lat_c), f"{cores_a:.2f}",
                         f"{cores_c:.2f}",
                         f"{pct(ren, 0.5):.0f} / {pct(ren, 0.99):.0f}" if ren else "-"))
            print(f"{label}{landed}: aliasd {fmt(lat_a)} ms, {cores_a:.2f} core; CoreDNS "
                  f"{fmt(lat_c)} ms, {cores_c:.2f} core; rename p50/p99 "
                  f"{rows[-1][-1]} ms; loop lag {lag_delta(before, after)}", flush=True)
        print(f"\naliasd RSS {rss_mb(p.pid):.0f} MB, CoreDNS RSS {rss_mb(t.coredns_pid):.0f} "
              f"MB; GC: {gc_line(metrics(hport))}")
        print(f"\n{t.aliased} aliased + {t.plain} plain Services, {args.qps} q/s each "
              f"server; latency p50 / p99 / p99.9 / max in ms\n")
        print("| phase | aliasd | CoreDNS kubernetes | aliasd CPU | CoreDNS CPU | "
              "rename p50 / p99 ms |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            print("| " + " | ".join(r) + " |")
        print(json.dumps({"ready_s": round(ready, 2)}))
        return long
    finally:
        p.terminate()
        p.wait()


def lag_delta(before: str, after: str) -> str:
    """Loop-lag probes late by more than 2/5/10 ms during a phase."""
    def counts(text: str) -> dict[str, float]:
        return {le: float(n) for le, n in re.findall(
            r'^aliasd_loop_lag_seconds_bucket{le="([^"]+)"} (\S+)', text, re.M)}
    a, b = counts(before), counts(after)
    if not a or not b:
        return "-"
    total = b["+Inf"] - a["+Inf"]
    late = [f">{float(le) * 1000:g}ms {total - (b[le] - a[le]):.0f}" for le in b
            if le != "+Inf" and float(le) >= 0.002]
    return f"{total:.0f} probes, " + ", ".join(late)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--aliased", type=int, default=3000)
    ap.add_argument("--plain", type=int, default=3000)
    ap.add_argument("--headless", type=int, default=200)
    ap.add_argument("--rates", default="50,200", help="churn rates, slice updates/s")
    ap.add_argument("--qps", type=int, default=500, help="queries/s to each server")
    ap.add_argument("--poll", type=int, default=0,
                    help="clients polling GET /v1/aliases back to back in every phase")
    ap.add_argument("--phase", type=float, default=20.0, help="seconds per phase")
    ap.add_argument("--hold", type=Path, metavar="FILE",
                    help="build the control plane and objects, write FILE, wait")
    ap.add_argument("--attach", type=Path, metavar="FILE",
                    help="measure against a control plane held by --hold FILE")
    ap.add_argument("--bulk", action="store_true",
                    help="write the objects straight into etcd (fast; skips admission)")
    ap.add_argument("--source", type=Path, help="run the aliasd package found in this "
                    "directory (e.g. `git archive BASE aliasd | tar -x -C DIR`) to compare")
    ap.add_argument("--wrap", default="", help="python flags or a module run before aliasd, "
                    "e.g. '-X importtime' (profiling)")
    ap.add_argument("--alias-objects", type=int, default=0, metavar="N",
                    help="N Alias objects (half serviceRef, half targets): a run with them, "
                    "then one without the CRD")
    args = ap.parse_args()
    rates = [int(r) for r in args.rates.split(",") if r]
    if args.attach:
        run(attach(args.attach), args, rates)
        return 0
    with LocalCluster(bin_dir=ensure_binaries()) as c:
        target = build(c, args)
        if args.hold:
            hold(c, target, args.hold)
        else:
            run(target, args, rates)
    return 0


def run(t: Target, args: argparse.Namespace, rates: list[int]) -> None:
    if not args.alias_objects:
        measure(t, args, rates)
        return
    install_alias_crd(t.api)
    create_aliases(t.api, args.alias_objects, t.aliased)
    print(f"\n== with the Alias CRD and {args.alias_objects} Aliases ==", flush=True)
    long = measure(t, args, rates, aliases=args.alias_objects)
    uninstall_alias_crd(t.api)
    print("\n== without the Alias CRD ==", flush=True)
    measure(t, args, rates, storm_seconds=long)


if __name__ == "__main__":
    sys.exit(main())
