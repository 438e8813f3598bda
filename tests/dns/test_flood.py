"""A random-name flood against a running aliasd: real clients, real
process. Nonexistent names are answered from templates and never enter the
answer cache, so names that exist, asked for the first time after the flood,
are cached and answered from the fast path; memory stays flat."""

from __future__ import annotations

import random
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dns.rcode
import pytest

from tests.support.dnsclient import answers, dig, query
from tests.support.process import AliasdProcess, metric, run_aliasd

NAMES = 2000
FLOOD = 200_000


def address(i: int) -> str:
    return f"10.{96 + i // 65536}.{(i // 256) % 256}.{i % 256}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AliasdProcess]:
    tmp = tmp_path_factory.mktemp("flood")
    f = tmp / "aliases.yaml"
    f.write_text("aliases:\n" + "".join(
        f"  svc-{i:04d}.internal: {{addresses: [{address(i)}]}}\n" for i in range(NAMES)))
    with run_aliasd(["--zone", "internal", "--aliases-file", str(f)], tmp=tmp) as p:
        yield p


def rss_kib(p: AliasdProcess) -> int:
    status = Path(f"/proc/{p.proc.pid}/status").read_text()
    m = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    assert m
    return int(m.group(1))


def dnsperf(p: AliasdProcess, qfile: Path) -> str:
    out = subprocess.run(
        ["dnsperf", "-s", "127.0.0.1", "-p", str(p.dns_port), "-d", str(qfile), "-n", "1",
         "-q", "50", "-t", "5"], capture_output=True, text=True, timeout=600, check=True)
    return out.stdout


@pytest.mark.skipif(shutil.which("dnsperf") is None, reason="dnsperf: run hack/setup.sh")
def test_existing_names_after_a_random_name_flood(server: AliasdProcess,
                                                  tmp_path: Path) -> None:
    # Half the names are asked before the flood, half only after it.
    rng = random.Random(15)
    for i in range(0, NAMES, 2):
        assert answers(query(server.dns, f"svc-{i:04d}.internal.", "A"), "A") == [address(i)]
    entries = metric(server, "aliasd_dns_cache_entries")
    assert entries == NAMES // 2
    rss_before = rss_kib(server)
    templates = metric(server, "aliasd_dns_template_hits_total")

    flood = {f"x{rng.getrandbits(48):012x}.internal" for _ in range(FLOOD)}
    qfile = tmp_path / "flood.txt"
    qfile.write_text("".join(f"{n} A\n" for n in sorted(flood)))
    out = dnsperf(server, qfile)
    completed = int(re.search(r"Queries completed:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    nx = int(re.search(r"NXDOMAIN (\d+)", out).group(1))  # type: ignore[union-attr]
    assert completed == nx >= 0.99 * len(flood), out  # every answer that came back is NXDOMAIN
    # The flood answered from templates, and nothing of it entered the cache.
    assert metric(server, "aliasd_dns_template_hits_total") - templates >= nx - 4
    assert metric(server, "aliasd_dns_cache_entries") == entries
    rss_after = rss_kib(server)
    print(f"\nRSS before the flood {rss_before / 1024:.1f} MiB, after {len(flood)} distinct "
          f"names {rss_after / 1024:.1f} MiB")
    assert rss_after - rss_before < 20 * 1024  # bounded: no per-name state

    # Names that exist, never asked before: the first answer is built and cached,
    # every later one comes from the fast path (the counter moves for each).
    fresh = list(range(1, NAMES, 2))
    for i in fresh:
        assert answers(query(server.dns, f"svc-{i:04d}.internal.", "A"), "A") == [address(i)]
    assert metric(server, "aliasd_dns_cache_entries") == NAMES
    hits = metric(server, "aliasd_dns_fast_path_hits_total")
    for i in fresh:
        r = query(server.dns, f"SvC-{i:04d}.InTeRnAl.", "A")
        assert r.rcode() == dns.rcode.NOERROR
        assert answers(r, "A") == [address(i)]
    assert metric(server, "aliasd_dns_fast_path_hits_total") - hits == len(fresh)
    # And dig agrees, for one of them and for a flooded name.
    assert dig(server.dns, "+short", "svc-0001.internal").split() == [address(1)]
    assert "status: NXDOMAIN" in dig(server.dns, f"{min(flood)}.")
