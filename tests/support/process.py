"""Run ``aliasd`` as a real process (the daemon and the command line), read
its HTTP API and /metrics, and swap the files it watches the way a ConfigMap
volume does."""

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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.support import ROOT
from tests.support.waiting import wait_for


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


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "aliasd", *args], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=60, check=False)
