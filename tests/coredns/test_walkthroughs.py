"""The README walkthroughs "Migrating a service" and "Failover with an HTTP
switch", run as written: each ``walkthrough: steps`` block goes to bash with
the real kubectl, curl, jq and dig against the local control plane and CoreDNS.
A line ``CMD  # => EXPECTED`` must print EXPECTED (retried for up to 20 s: DNS
follows the API server within moments, not instantly). The ``setup`` blocks
are what this test provides itself (a kind pod for ``ask``, a port-forward)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from aliasd_dev import LocalCluster, free_udp_tcp_port
from tests.coredns.test_migration import datacenter
from tests.coredns.test_wiring import wired
from tests.helpers import ROOT, AliasdProcess, run_aliasd

pytestmark = pytest.mark.cluster
__all__ = ["datacenter"]  # the fixture, imported for these tests

CHECK = r'''
check() {  # check CMD EXPECTED: retry until CMD prints EXPECTED (20 s)
  local got="" want=""
  for _ in $(seq 100); do
    want=$(eval "echo \"$2\"" 2>&1) || true
    got=$(eval "$1" 2>&1) || true
    if [[ "$got" == "$want" ]]; then echo "ok: $1"; return 0; fi
    sleep 0.2
  done
  printf 'FAILED: %s\n  want: %s\n  got:  %s\n' "$1" "$want" "$got"
  return 1
}
'''


def steps(title: str) -> list[str]:
    """The ``walkthrough: steps`` blocks of README section ``## title``."""
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    section = text[start:end if end != -1 else len(text)]
    found = re.findall(r"<!-- walkthrough: steps -->\n```sh\n(.*?)\n```", section, re.S)
    assert found, f"no steps in README section {title!r}"
    return list(found)


def script(block: str) -> str:
    out = []
    for line in block.splitlines():
        cmd, sep, want = line.partition("# => ")
        out.append(f"check {shlex.quote(cmd.strip())} {shlex.quote(want.strip())}"
                   if sep else line)
    return "\n".join(out)


def run(cluster: LocalCluster, prelude: str, block: str, tmp: Path) -> str:
    path = tmp / "walkthrough.sh"
    path.write_text(f"set -euo pipefail\n{CHECK}\n{prelude}\n{script(block)}\n")
    env = {**os.environ, "PATH": f"{cluster.bin_dir}:{os.environ['PATH']}",
           "KUBECONFIG": str(cluster.kubeconfig)}
    done = subprocess.run(["bash", str(path)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    return done.stdout


def ask(cluster: LocalCluster) -> str:
    host, port = cluster.coredns_addr
    return f'ask() {{ dig @{host} -p {port} +short +tries=1 +time=2 "$@"; }}'


def test_readme_migrating_a_service(coredns: LocalCluster, datacenter: AliasdProcess,
                                    tmp_path: Path) -> None:
    port = free_udp_tcp_port()
    with run_aliasd(wired(coredns, port), tmp=tmp_path, dns_port=port,
                    env={"ALIASD_ALLOW_TAKEOVER": "example.com"}):
        (block,) = steps("Migrating a service")
        out = run(coredns, ask(coredns), block, tmp_path)
    assert out.count("ok: ") == block.count("# => ") == 6


def test_readme_failover_with_an_http_switch(coredns: LocalCluster, lease_ns: str,
                                             tmp_path: Path) -> None:
    port = free_udp_tcp_port()
    (tmp_path / "token").write_text("walkthrough-token\n")
    with run_aliasd(wired(coredns, port, "--api-token-file", str(tmp_path / "token")),
                    tmp=tmp_path, dns_port=port) as p:
        prelude = (f"{ask(coredns)}\nALIASD=http://127.0.0.1:{p.http_port}\n"
                   "TOKEN=walkthrough-token")
        (block,) = steps("Failover with an HTTP switch")
        out = run(coredns, prelude, block, tmp_path)
        assert ("127.0.0.1 set the override of valkey-master.internal.: none -> 10.0.0.7 "
                "(ttl 5)") in p.logs()
    assert out.count("ok: ") == block.count("# => ") == 6
