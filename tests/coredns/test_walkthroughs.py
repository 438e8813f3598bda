"""The walkthroughs of docs/guides/migrating-a-service.md and
docs/guides/failover.md, run from those pages as written
(tests/support/walkthrough.py): each ``walkthrough: steps`` block goes to bash with
the real kubectl, curl, jq and dig against the local control plane and
CoreDNS. The ``setup`` blocks are what this test provides
itself (a kind pod for ``ask``, a port-forward); tests/e2e/test_walkthroughs.py
runs both blocks as written in kind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aliasd_dev import LocalCluster, free_udp_tcp_port
from tests.support import walkthrough
from tests.support.coredns import wired
from tests.support.process import AliasdProcess, run_aliasd

pytestmark = pytest.mark.cluster


def run(cluster: LocalCluster, prelude: str, block: str, tmp: Path) -> str:
    env = {**os.environ, "PATH": f"{cluster.bin_dir}:{os.environ['PATH']}",
           "KUBECONFIG": str(cluster.kubeconfig)}
    return walkthrough.run(prelude, block, env=env, tmp=tmp)


def ask(cluster: LocalCluster) -> str:
    host, port = cluster.coredns_addr
    return f'ask() {{ dig @{host} -p {port} +short +tries=1 +time=2 "$@"; }}'


def test_walkthrough_migrating_a_service(coredns: LocalCluster, datacenter: AliasdProcess,
                                    tmp_path: Path) -> None:
    port = free_udp_tcp_port()
    with run_aliasd(wired(coredns, port), tmp=tmp_path, dns_port=port,
                    env={"ALIASD_ALLOW_TAKEOVER": "example.com"}):
        (block,) = walkthrough.blocks(walkthrough.MIGRATION)
        out = run(coredns, ask(coredns), block, tmp_path)
    assert out.count("ok: ") == block.count("# => ") == 6


def test_walkthrough_failover_with_an_http_switch(coredns: LocalCluster, lease_ns: str,
                                             tmp_path: Path) -> None:
    port = free_udp_tcp_port()
    (tmp_path / "token").write_text("walkthrough-token\n")
    with run_aliasd(wired(coredns, port, "--api-token-file", str(tmp_path / "token")),
                    tmp=tmp_path, dns_port=port) as p:
        prelude = (f"{ask(coredns)}\nALIASD=http://127.0.0.1:{p.http_port}\n"
                   "TOKEN=walkthrough-token")
        (block,) = walkthrough.blocks(walkthrough.FAILOVER)
        out = run(coredns, prelude, block, tmp_path)
        assert ("127.0.0.1 set the override of valkey-master.internal.: none -> 10.0.0.7 "
                "(ttl 5)") in p.logs()
    assert out.count("ok: ") == block.count("# => ") == 6
