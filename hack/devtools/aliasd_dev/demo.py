"""The demo (``hack/demo.sh``): the whole data path on this machine, no cluster needed.

Starts the local control plane (real etcd, kube-apiserver and CoreDNS),
applies examples/fruits/, runs aliasd wired into CoreDNS, and shows that the
alias resolves through CoreDNS (the question a pod asks) to the Service's
cluster IP. Ctrl-C stops everything; ``--check`` asserts instead of waiting.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from aliasd_dev.cluster import (
    ClusterError,
    LocalCluster,
    ensure_binaries,
    free_port,
    free_udp_tcp_port,
)

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "fruits"
ALIAS = "my-fruits.internal"
MESH_HOST = "fruits.mesh.internal"
NAMESPACE, SERVICE = "micro-shake-factory", "fruits-api-service"


class DemoError(Exception):
    """The demo cannot run here (a missing tool, no source checkout, no control plane)."""


def _say(text: str) -> None:
    print(text, flush=True)


def dig(server: tuple[str, int], name: str, *extra: str) -> str:
    out = subprocess.run(["dig", f"@{server[0]}", "-p", str(server[1]), "+tries=1", "+time=2",
                          name, *extra], capture_output=True, text=True, timeout=20,
                         check=False)
    return out.stdout


def _load_examples() -> list[dict[str, Any]]:
    if not EXAMPLES.is_dir():
        raise DemoError(f"{EXAMPLES} not found: the demo runs from an aliasd source checkout")
    return [d for f in sorted(EXAMPLES.glob("*.yaml"))
            for d in yaml.safe_load_all(f.read_text()) if d]


def run(*, check: bool, timeout: float = 60.0) -> int:
    if shutil.which("dig") is None:
        raise DemoError("dig not found: apt-get install dnsutils (hack/setup.sh does it)")
    docs = _load_examples()
    _say("demo: starting the local control plane (etcd, kube-apiserver, CoreDNS)...")
    try:
        cluster = LocalCluster(bin_dir=ensure_binaries())
        cluster.start()
    except ClusterError as e:
        raise DemoError(f"local control plane: {str(e).splitlines()[0]}") from None
    proc = None
    try:
        for d in docs:
            cluster.apply(d)
        svc = cluster.request("GET", f"/api/v1/namespaces/{NAMESPACE}/services/{SERVICE}")
        ip = svc["spec"]["clusterIP"]
        dns_port, http_port = free_udp_tcp_port(), free_port()
        log = cluster.workdir / "aliasd.log"
        cmd = [sys.executable, "-m", "aliasd", "run", "--kubeconfig", str(cluster.kubeconfig),
               "--zone", "internal", "--dns-listen", f"127.0.0.1:{dns_port}",
               "--http-listen", f"127.0.0.1:{http_port}", "--coredns-mode", "corefile",
               "--forward-to", f"127.0.0.1:{dns_port}", "--leader-election", "off"]
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        _say(f"demo: aliasd serves internal. on 127.0.0.1:{dns_port} and patched "
             f"kube-system/coredns to forward it there; waiting for CoreDNS to reload...")
        coredns = cluster.coredns_addr
        deadline = time.monotonic() + timeout
        got: list[str] = []
        while time.monotonic() < deadline and proc.poll() is None:
            got = dig(coredns, ALIAS, "+short").split()
            if got == [ip]:
                break
            time.sleep(0.5)
        _say("")
        _say(f"Service {NAMESPACE}/{SERVICE}: cluster IP {ip}")
        _say(f"$ dig @{coredns[0]} -p {coredns[1]} {ALIAS}    # through CoreDNS, as a pod asks")
        _say(dig(coredns, ALIAS, "+noall", "+answer", "+comments").strip())
        mesh = dig(coredns, MESH_HOST, "+short").split()
        _say(f"ServiceEntry {NAMESPACE}/fruits: {MESH_HOST} -> {' '.join(mesh) or 'nothing'}")
        if got != [ip]:
            reason = (f"aliasd exited ({proc.returncode}); its log: {log}" if proc.poll()
                      is not None else f"{ALIAS} through CoreDNS gave {got or 'no answer'}, "
                      f"expected {ip}")
            _say(f"demo: FAILED: {reason}")
            return 1
        if check:
            _say(f"demo: ok: {ALIAS} resolves through CoreDNS to {ip}, the cluster IP of "
                 f"{NAMESPACE}/{SERVICE}")
            return 0
        _say("")
        _say(f"Try it:  dig @{coredns[0]} -p {coredns[1]} {ALIAS}")
        _say(f"         curl http://127.0.0.1:{http_port}/v1/aliases")
        _say(f"         KUBECONFIG={cluster.kubeconfig} .venv/bin/aliasd list")
        _say("Ctrl-C stops aliasd and the control plane.")
        stop = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, stop)
        signal.sigwait(stop)
        return 0
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        cluster.stop()
        _say("demo: stopped, everything cleaned up")



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hack/demo.sh",
        description="Start the local control plane (real etcd, kube-apiserver, CoreDNS), "
                    "apply examples/fruits/, run aliasd wired into CoreDNS and dig the alias "
                    "through CoreDNS. Ctrl-C cleans everything up.")
    parser.add_argument("--check", action="store_true",
                        help="do not wait: assert the alias resolves through CoreDNS to the "
                             "Service's cluster IP, clean up, exit 0 or 1")
    args = parser.parse_args(argv)
    try:
        return run(check=args.check)
    except DemoError as e:
        print(f"demo: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
