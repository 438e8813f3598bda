"""Graceful shutdown: after SIGTERM, /readyz fails at once while DNS
keeps answering for the lame-duck period; then aliasd exits 0."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from tests.support.dnsclient import a_records
from tests.support.process import run_aliasd
from tests.support.waiting import wait_for


def test_sigterm_fails_readyz_and_keeps_answering(tmp_path: Path) -> None:
    aliases = tmp_path / "aliases.yaml"
    aliases.write_text("aliases:\n  my-fruits.internal:\n    addresses: [10.96.0.10]\n")
    with run_aliasd(["--aliases-file", str(aliases), "--lame-duck", "3"], tmp=tmp_path) as p:
        assert a_records(p, "my-fruits.internal.") == ["10.96.0.10"]
        p.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()

        def draining() -> bool:
            status, body = p.http("/readyz")
            return status == 503 and body["draining"] is True
        wait_for(draining, timeout=5, what="/readyz to fail while draining")
        # Still answering, and still running, during the lame duck.
        assert a_records(p, "my-fruits.internal.") == ["10.96.0.10"]
        assert p.proc.poll() is None
        assert p.proc.wait(15) == 0
        print(f"exited {time.monotonic() - signalled:.2f} s after SIGTERM (--lame-duck 3)")
        assert "still answering DNS for 3.0 s" in p.logs()


def test_without_lame_duck_sigterm_stops_at_once(tmp_path: Path) -> None:
    aliases = tmp_path / "aliases.yaml"
    aliases.write_text("aliases:\n  my-fruits.internal:\n    addresses: [10.96.0.10]\n")
    with run_aliasd(["--aliases-file", str(aliases)], tmp=tmp_path) as p:
        p.proc.send_signal(signal.SIGTERM)
        assert p.proc.wait(15) == 0
        assert "still answering" not in p.logs()
