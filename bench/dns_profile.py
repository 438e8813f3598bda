"""Per-query cost of each step of the UDP answer path, in process (best of 5),
side by side with the answer module of another commit (default: 23b0e93,
before answers to names that do not exist had templates).

    .venv/bin/python bench/dns_profile.py [--against 23b0e93]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import socket
import subprocess
import sys
import tempfile
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dns.message

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "hack" / "devtools")]  # aliasd, aliasd_dev

from aliasd.dns.answer import Answerer  # noqa: E402
from aliasd.dns.stats import Stats  # noqa: E402
from aliasd.dns.wire import fast_shape, wire_name  # noqa: E402
from aliasd_dev.samples import SNAP  # noqa: E402


def load_old(commit: str) -> Any:
    src = subprocess.run(["git", "show", f"{commit}:aliasd/dns/answer.py"], cwd=ROOT,
                         capture_output=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "old_answer.py"
    path.write_bytes(src)
    spec = importlib.util.spec_from_file_location("old_answer", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_answer"] = module
    spec.loader.exec_module(module)
    return module


def timed(label: str, f: Callable[[], object], n: int = 100_000) -> None:
    best = min(timeit.repeat(f, number=n, repeat=5)) / n
    print(f"{label:<52}{best * 1e9:8.0f} ns")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--against", default="23b0e93")
    old = load_old(ap.parse_args().against)
    new_a = Answerer(SNAP, stats=Stats())
    old_a = old.Answerer(SNAP, stats=old.Stats())
    edns = dns.message.make_query("My-Fruits.internal.", "A", use_edns=0).to_wire()
    plain = dns.message.make_query("My-Fruits.internal.", "A").to_wire()
    neg = dns.message.make_query("xab12cd34ef.internal.", "A", use_edns=0).to_wire()
    for a in (new_a, old_a):
        a.respond(edns)
        a.respond(plain)
        a.respond(neg)
    shape = fast_shape(edns, False)
    nshape = fast_shape(neg, False)
    assert shape is not None and nshape is not None
    out = new_a.respond(edns)
    assert out is not None
    qend, key = shape[0], shape[1]
    tmpl = b"\0\0" + out[2:]
    entry = new_a._entries[key]
    assert isinstance(entry, tuple)
    timed("header+question parse (fast_shape, label walk)", lambda: fast_shape(edns, False))
    timed("key from the length alone (shortcut)",
          lambda: edns[12:len(edns) - 11].lower() + b"\0")
    timed("cache dict get", lambda: new_a._entries.get(key))
    timed("ID/RD/CD/question patch, before (bytes() + 5 slices)",
          lambda: edns[:2] + bytes((tmpl[2] | (edns[2] & 1), tmpl[3] | (edns[3] & 0x10)))
          + tmpl[4:12] + edns[12:qend] + tmpl[qend:])
    timed("ID/RD/CD/question patch, now (4 headers per entry)",
          lambda: edns[:2] + entry[0][(edns[2] & 1) | (edns[3] & 0x10) >> 3]
          + edns[12:qend] + entry[1])
    timed("respond(), cached A, EDNS: before", lambda: old_a.respond(edns))
    timed("respond(), cached A, EDNS: now", lambda: new_a.respond(edns))
    timed("respond(), cached A, no EDNS: before", lambda: old_a.respond(plain))
    timed("respond(), cached A, no EDNS: now", lambda: new_a.respond(plain))
    timed("wire_name (negative: wire -> str)", lambda: wire_name(nshape[1]))
    nname = wire_name(nshape[1])
    assert nname is not None
    timed("Snapshot.classify (zone, existence, wildcard)", lambda: SNAP.classify(nname, 1))
    timed("_template_key (classify + anchor)",
          lambda: new_a._template_key(nshape[1], nshape[0]))
    timed("respond(), NXDOMAIN: now (template)", lambda: new_a.respond(neg))
    timed("respond(), NXDOMAIN: before, uncached (dnslib)", lambda: old_a.answer_slow(neg), 2000)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    r.bind(("127.0.0.1", 0))
    r.setblocking(False)
    addr = r.getsockname()

    def send() -> None:
        s.sendto(out, addr)
        with contextlib.suppress(BlockingIOError):
            r.recv(512)

    timed("sendto + recv on loopback (kernel)", send)


if __name__ == "__main__":
    main()
