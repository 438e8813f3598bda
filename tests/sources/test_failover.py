"""Health-checked answers and ordered failover, end to end: aliasd serving an
aliases file whose targets are real loopback servers, asked with real DNS
clients while the servers are stopped and started."""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ROOT, walkthrough
from tests.support.dnsclient import dig_short, query
from tests.support.process import AliasdProcess, metric, run_aliasd
from tests.support.targets import TargetServer
from tests.support.waiting import wait_for

CHECK = "{protocol: TCP, port: %d, intervalSeconds: 1, timeoutSeconds: 1, " \
        "healthyThreshold: 2, unhealthyThreshold: 2}"


@pytest.fixture
def primary() -> Iterator[TargetServer]:
    server = TargetServer("127.0.0.2")
    yield server
    server.close()


@pytest.fixture
def secondary() -> Iterator[TargetServer]:
    server = TargetServer("127.0.0.3")
    yield server
    server.close()


@contextlib.contextmanager
def serve(tmp: Path, text: str) -> Iterator[AliasdProcess]:
    aliases = tmp / "aliases.yaml"
    aliases.write_text(text)
    with run_aliasd(["--aliases-file", str(aliases), "--zone", "internal"], tmp=tmp) as p:
        yield p


def answer(p: AliasdProcess, name: str) -> list[str]:
    return sorted(dig_short(p.dns, name, "A"))


def healthy(p: AliasdProcess, target: TargetServer) -> float:
    return metric(p, "aliasd_target_healthy", target=f"tcp://{target.host}:{target.port}")


def test_failover_by_priority_and_back(tmp_path: Path, primary: TargetServer,
                                       secondary: TargetServer) -> None:
    text = f"""aliases:
  orders-db.internal:
    ttl: 30
    targets:
      - {{address: {primary.host}, healthCheck: {CHECK % primary.port}}}
      - {{address: {secondary.host}, priority: 1, healthCheck: {CHECK % secondary.port}}}
"""
    with serve(tmp_path, text) as p:
        assert answer(p, "orders-db.internal") == ["127.0.0.2"]
        # TTL no longer than the detection time (interval x unhealthy threshold).
        (rrset,) = query(p.dns, "orders-db.internal.", "A").answer
        assert rrset.ttl == 2
        primary.stop()
        wait_for(lambda: answer(p, "orders-db.internal") == ["127.0.0.3"],
                 what="failover to the secondary")
        assert healthy(p, primary) == 0.0
        assert healthy(p, secondary) == 1.0
        primary.start()
        wait_for(lambda: answer(p, "orders-db.internal") == ["127.0.0.2"],
                 what="back to the primary")
        # Every target dead: the best priority's targets answer (fail open).
        primary.stop()
        secondary.stop()
        wait_for(lambda: healthy(p, primary) == 0.0 and healthy(p, secondary) == 0.0,
                 what="both unhealthy")
        assert answer(p, "orders-db.internal") == ["127.0.0.2"]
        _, doc = p.http("/v1/aliases")
        assert sorted((a["addresses"], a["priority"], a["check"], a["state"])
                      for a in doc["aliases"] if a["name"] == "orders-db.internal.") == [
            (["127.0.0.2"], 0, f"tcp://127.0.0.2:{primary.port}", "failing-open"),
            (["127.0.0.3"], 1, f"tcp://127.0.0.3:{secondary.port}", "standby")]


def test_a_dead_weighted_target_leaves_and_the_rest_share_its_weight(
        tmp_path: Path, primary: TargetServer, secondary: TargetServer) -> None:
    text = f"""aliases:
  shop.internal:
    targets:
      - {{address: {primary.host}, weight: 1, healthCheck: {CHECK % primary.port}}}
      - {{address: {secondary.host}, weight: 3, healthCheck: {CHECK % secondary.port}}}
"""
    with serve(tmp_path, text) as p:
        wait_for(lambda: set(Counter(answer(p, "shop.internal")[0] for _ in range(60)))
                 == {"127.0.0.2", "127.0.0.3"}, what="both targets answer")
        secondary.stop()
        wait_for(lambda: healthy(p, secondary) == 0.0, what="the secondary is unhealthy")
        assert Counter(answer(p, "shop.internal")[0] for _ in range(100)) == Counter(
            {"127.0.0.2": 100})


def test_an_unchecked_target_is_always_healthy_and_a_bad_check_is_refused(
        tmp_path: Path, primary: TargetServer) -> None:
    text = f"""aliases:
  api.internal:
    targets:
      - {{address: 127.0.0.4}}
      - {{address: {primary.host}, healthCheck: {CHECK % primary.port}}}
"""
    with serve(tmp_path, text) as p:
        assert answer(p, "api.internal") == ["127.0.0.2", "127.0.0.4"]
        primary.stop()
        wait_for(lambda: answer(p, "api.internal") == ["127.0.0.4"], what="the dead one leaves")
        bad = tmp_path / "aliases.yaml"
        bad.write_text(text.replace("timeoutSeconds: 1", "timeoutSeconds: 9"))
        wait_for(lambda: "timeoutSeconds must not exceed intervalSeconds"
                 in p.log.read_text(), what="the file's error")
        assert answer(p, "api.internal") == ["127.0.0.4"]  # the last good zone


def test_walkthrough_health_checked_failover(tmp_path: Path) -> None:
    """docs/guides/health-checks.md's steps, as written, against aliasd serving
    the example file (the setup block's aliasd, on ports of its own)."""
    example = ROOT / "examples" / "health" / "aliases.yaml"
    (setup,) = walkthrough.blocks(walkthrough.HEALTH, "setup")
    assert "examples/health/aliases.yaml" in setup
    with run_aliasd(["--zone", "internal", "--aliases-file", str(example)], tmp=tmp_path) as p:
        prelude = (f'ask() {{ dig @127.0.0.1 -p {p.dns_port} +short +tries=1 +time=2 "$@"; }}\n'
                   f"ALIASD=http://127.0.0.1:{p.http_port}")
        (block,) = walkthrough.blocks(walkthrough.HEALTH)
        out = walkthrough.run(prelude, block, env=dict(os.environ), tmp=tmp_path)
    assert out.count("ok: ") == block.count("# => ") == 6
