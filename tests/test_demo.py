"""``hack/demo.sh``: the README's first command, end to end on its own control plane."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from tests.support import ROOT
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster

DEMO = ROOT / "hack" / "demo.sh"


def test_demo_check_resolves_the_alias_through_coredns() -> None:
    r = subprocess.run([str(DEMO), "--check"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"^Service micro-shake-factory/fruits-api-service: cluster IP (\S+)$",
                  r.stdout, re.M)
    assert m, r.stdout
    ip = m.group(1)
    assert re.search(rf"^my-fruits\.internal\.\s+30\s+IN\s+A\s+{re.escape(ip)}$", r.stdout, re.M)
    assert "status: NOERROR" in r.stdout and " aa" in r.stdout.split("flags:")[1].split(";")[0]
    assert f"ServiceEntry micro-shake-factory/fruits: fruits.mesh.internal -> {ip}" in r.stdout
    assert f"demo: ok: my-fruits.internal resolves through CoreDNS to {ip}" in r.stdout
    assert r.stdout.rstrip().endswith("demo: stopped, everything cleaned up")


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if text.encode() in (d / "cmdline").read_bytes():
                    pids.append(int(d.name))
            except OSError:
                continue
    return pids


def test_demo_ctrl_c_cleans_everything_up(tmp_path: Path) -> None:
    out = tmp_path / "demo.out"
    with out.open("wb") as f:
        # hack/demo.sh execs the demo, so the signal goes to the demo itself.
        proc = subprocess.Popen([str(DEMO)], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                                env={**os.environ})
    try:
        wait_for(lambda: "Ctrl-C stops" in out.read_text() or proc.poll() is not None,
                 timeout=240, what="the demo to be up")
        text = out.read_text()
        assert proc.poll() is None, text
        workdir = Path(re.search(r"KUBECONFIG=(\S+)/kubeconfig", text).group(1))  # type: ignore[union-attr]
        assert workdir.is_dir() and _processes_mentioning(str(workdir))
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    # The demo waited for every process it started before exiting.
    assert not workdir.exists()
    assert _processes_mentioning(str(workdir)) == []
    assert out.read_text().rstrip().endswith("demo: stopped, everything cleaned up")
