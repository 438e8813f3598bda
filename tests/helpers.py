"""Shared test helpers: run ``aliasd`` as a real process, ask it with real clients."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
from prometheus_client.parser import text_string_to_metric_families

from aliasd_dev import LocalCluster

ROOT = Path(__file__).resolve().parents[1]


def wait_for(check: Callable[[], Any], *, timeout: float = 20.0, interval: float = 0.05,
             what: str = "condition") -> Any:
    """Poll ``check`` until it returns a truthy value (returned) or time runs out."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as e:  # a check may fail while the thing is starting
            last = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


@dataclass
class AliasdProcess:
    proc: subprocess.Popen[bytes]
    dns_port: int
    http_port: int
    log: Path

    @property
    def dns(self) -> tuple[str, int]:
        return ("127.0.0.1", self.dns_port)

    def http(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}",
                                        timeout=5) as r:
                body = r.read().decode()
                status = r.status
        except urllib.error.HTTPError as e:
            body, status = e.read().decode(), e.code
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


ALIASD_SCRIPT = [str(Path(sys.executable).parent / "aliasd")]
"""The installed console script, as a container's ENTRYPOINT would call it."""


LISTENING = re.compile(r"(DNS|HTTP) listening on 127\.0\.0\.1:(\d+)")


class PortTaken(AssertionError):
    """aliasd could not bind a port that another process took first."""


@contextlib.contextmanager
def run_aliasd(args: list[str], *, tmp: Path, env: dict[str, str] | None = None,
               wait_ready: bool = True, dns_port: int | None = None,
               argv: list[str] | None = None) -> Iterator[AliasdProcess]:
    """``python -m aliasd run ARGS`` on loopback; stopped on exit.

    aliasd binds port 0 for DNS and HTTP and the ports are read back from its
    log, so no other process can take them between choosing and binding (UDP
    gets a port from the kernel, TCP then binds the same number: if that one is
    taken, aliasd exits and is started again). ``dns_port`` is for callers that
    must know the port before the start (a ``--forward-to`` for CoreDNS).

    With ``argv`` (e.g. a Dockerfile's ENTRYPOINT + CMD) that command line runs
    instead, ``aliasd`` being the installed script, and the ports come from the
    ALIASD_DNS_LISTEN / ALIASD_HTTP_LISTEN environment like in a container.
    CoreDNS wiring is off unless ARGS or ENV turn it on, so tests that do not
    test it never touch the shared Corefile."""
    for attempt in range(3):
        try:
            p = _start_aliasd(args, tmp=tmp, env=env, dns_port=dns_port, argv=argv,
                              wait_ready=wait_ready, attempt=attempt)
        except PortTaken:
            if dns_port is not None or attempt == 2:
                raise
            continue
        try:
            yield p
        finally:
            p.stop()
        return


def _start_aliasd(args: list[str], *, tmp: Path, env: dict[str, str] | None,
                  dns_port: int | None, argv: list[str] | None, wait_ready: bool,
                  attempt: int) -> AliasdProcess:
    dns_listen, http_listen = f"127.0.0.1:{dns_port or 0}", "127.0.0.1:0"
    log = tmp / f"aliasd-{dns_port or 'dns0'}-{os.getpid()}-{next(_RUNS)}.log"
    if argv is None:
        cmd = [sys.executable, "-m", "aliasd", "--log-level", "debug", "run",
               "--dns-listen", dns_listen, "--http-listen", http_listen, *args]
    else:
        assert argv[0] == "aliasd", argv
        cmd = [*ALIASD_SCRIPT, *argv[1:], *args]
    full_env = {**os.environ, "ALIASD_COREDNS_MODE": "off", **(env or {}),
                "ALIASD_DNS_LISTEN": dns_listen, "ALIASD_HTTP_LISTEN": http_listen}
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                env=full_env)
    p = AliasdProcess(proc, 0, 0, log)
    try:
        # The ports it bound, from its log; a port taken under it ends the wait at once.
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                text = p.logs()
                if "address already in use" in text.lower():
                    raise PortTaken(f"aliasd (attempt {attempt + 1}):\n{text}")
                raise AssertionError(f"aliasd exited {proc.returncode}:\n{text}")
            ports = dict(LISTENING.findall(p.logs()))
            if "DNS" in ports and "HTTP" in ports:
                p.dns_port, p.http_port = int(ports["DNS"]), int(ports["HTTP"])
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"aliasd did not report its ports in 30 s:\n{p.logs()}")
            time.sleep(0.05)

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"aliasd exited {proc.returncode}:\n{p.logs()}")
            status, _ = p.http("/readyz" if wait_ready else "/healthz")
            return status == 200

        wait_for(up, timeout=30, what="aliasd to be ready")
    except BaseException:
        p.stop()
        raise
    return p


_RUNS = itertools.count()


def http_json(p: AliasdProcess, method: str, path: str, body: Any = None, *,
              token: str | None = None, raw: bytes | None = None) -> tuple[int, Any]:
    """One HTTP request with a JSON body (or ``raw`` bytes), optionally with a
    bearer token: (status, parsed JSON answer)."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{p.http_port}{path}", data=data,
                                 method=method)
    req.add_header("Content-Type", "application/json")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    return status, json.loads(text)


def replace_file(path: Path, text: str) -> None:
    """Write ``path`` atomically (as a ConfigMap volume swap does): a watcher never
    reads a truncated or half-written file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def query(server: tuple[str, int], name: str, rdtype: dns.rdatatype.RdataType | str = "A", *,
          tcp: bool = False, use_edns: int | bool = False, payload: int = 1232,
          timeout: float = 3.0, **kw: Any) -> dns.message.Message:
    """One query with dnspython (RD set, as a stub resolver sends it); no retries."""
    q = dns.message.make_query(name, rdtype, use_edns=use_edns, payload=payload, **kw)
    if tcp:
        return dns.query.tcp(q, server[0], port=server[1], timeout=timeout)
    return dns.query.udp(q, server[0], port=server[1], timeout=timeout, ignore_trailing=False)


def answers(msg: dns.message.Message, rdtype: str) -> list[str]:
    t = dns.rdatatype.from_text(rdtype)
    return sorted(rd.to_text() for rrset in msg.answer if rrset.rdtype == t for rd in rrset)


def dig_short(server: tuple[str, int], *args: str) -> list[str]:
    """``dig +short``'s answer lines; [] when dig reports an error (``;;`` lines)."""
    out = dig(server, "+short", *args)
    return [] if ";;" in out else out.split()


def dig(server: tuple[str, int], *args: str) -> str:
    """Run the real ``dig`` and return its stdout."""
    out = subprocess.run(
        ["dig", f"@{server[0]}", "-p", str(server[1]), "+tries=1", "+time=3", *args],
        capture_output=True, text=True, timeout=30, check=False,
    )
    return out.stdout


def service(cluster: LocalCluster, ns: str, name: str, *, alias: str | None = None,
            ttl: str | None = None, headless: bool = False, **spec: Any) -> dict[str, Any]:
    ann = {}
    if alias is not None:
        ann["aliasd.io/alias"] = alias
    if ttl is not None:
        ann["aliasd.io/ttl"] = ttl
    body_spec: dict[str, Any] = {"ports": [{"name": "http", "port": 80}], **spec}
    if headless:
        body_spec["clusterIP"] = "None"
    obj: dict[str, Any] = cluster.request("POST", f"/api/v1/namespaces/{ns}/services", {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "annotations": ann}, "spec": body_spec})
    return obj


def events(cluster: LocalCluster, ns: str, name: str) -> list[tuple[str, str]]:
    items = cluster.request(
        "GET", f"/api/v1/namespaces/{ns}/events?fieldSelector=involvedObject.name%3D{name}")
    return [(e["reason"], e["message"]) for e in items["items"]]


def rcode(p: AliasdProcess, name: str) -> str:
    """The rcode of an A query, as text (``NOERROR``, ``NXDOMAIN``...)."""
    return str(dns.rcode.to_text(query(p.dns, name, "A").rcode()))


def a_records(p: AliasdProcess, name: str) -> list[str]:
    return answers(query(p.dns, name, "A"), "A")


def metric_or_none(p: AliasdProcess, sample: str, **labels: str) -> float | None:
    """The value of one sample on aliasd's /metrics, named as exposed (a
    counter's ``_total`` included) with exactly ``labels``; None when there is
    no such sample (a labelled series nothing has set yet)."""
    status, text = p.http("/metrics")
    assert status == 200, (status, text)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample and s.labels == labels:
                return float(s.value)
    return None


def api_refusals(metrics_text: str) -> dict[tuple[str, str], float]:
    """The Kubernetes API server's 401 and 403 answers to aliasd, by (method,
    code), read from the ``aliasd_kube_api_responses_total`` samples of a
    /metrics page: a structured fact, never a search of free text (a log
    timestamp's milliseconds can read ",403")."""
    refused: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(metrics_text):
        for s in family.samples:
            if (s.name == "aliasd_kube_api_responses_total" and s.labels["code"] in ("401", "403")
                    and s.value):
                refused[s.labels["method"], s.labels["code"]] = float(s.value)
    return refused


def metric(p: AliasdProcess, sample: str, **labels: str) -> float:
    """Like ``metric_or_none``, but the sample must be there."""
    value = metric_or_none(p, sample, **labels)
    if value is None:
        shown = "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else ""
        raise AssertionError(f"/metrics has no sample {sample}{shown}")
    return value
