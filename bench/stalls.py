"""Run aliasd and record every event-loop callback that holds the loop longer
than a threshold: how long, how often, and where the time went (stacks
sampled while the callback runs).

    .venv/bin/python bench/stalls.py OUT [--threshold-ms 2] -m aliasd run ...
    .venv/bin/python bench/scale.py --attach F --wrap "$PWD/bench/stalls.py /tmp/stalls.json"
    ... --wrap "$PWD/bench/stalls.py /tmp/stalls.json --uvloop"   # the real loop

Runs aliasd on asyncio's own loop (uvloop's callbacks cannot be timed from
Python; the Python work in them is the same). Writes OUT (JSON) every few
seconds and at exit: ``stalls`` (start time since launch, wall seconds, the
thread's CPU seconds -- what the machine's other load does not inflate --,
callback), ``by_callback`` (by CPU) and ``stacks`` (sample counts per
innermost frames), GC passes per generation. With ``--uvloop`` aliasd keeps
its loop and a stall is the loop-lag probe not running: the stacks sampled
then say whether the main thread was in Python (ours to fix) or in uvloop
(not scheduled: the machine). A diagnostic, not a benchmark: the sampler
thread takes the GIL every millisecond, so everything runs a little slower.
"""

from __future__ import annotations

import asyncio
import asyncio.events
import collections
import gc
import json
import os
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

T0 = time.perf_counter()


class Recorder:
    def __init__(self, out: Path, threshold: float) -> None:
        self.out, self.threshold = out, threshold
        self.start = 0.0
        self.handle: asyncio.events.Handle | None = None
        self.stalls: list[tuple[float, float, float, str]] = []
        self.stacks: collections.Counter[tuple[str, str]] = collections.Counter()
        self.gc: list[tuple[float, int, float]] = []
        self._gc_start = 0.0
        self.main = threading.get_ident()
        self.lock = threading.Lock()

    def install(self) -> None:
        orig = asyncio.events.Handle._run
        rec = self

        def _run(self: asyncio.events.Handle) -> None:  # becomes Handle._run
            t, c = time.perf_counter(), time.thread_time()
            rec.start, rec.handle = t, self
            try:
                orig(self)
            finally:
                rec.handle = None
                d = time.perf_counter() - t
                cpu = time.thread_time() - c
                if d > rec.threshold or cpu > rec.threshold:
                    with rec.lock:
                        rec.stalls.append((round(t - T0, 4), round(d, 5), round(cpu, 5),
                                           describe(self)))

        # Replacing a method is the point (mypy's method-assign): time every callback.
        asyncio.events.Handle._run = _run  # type: ignore[method-assign]
        gc.callbacks.append(self._gc)
        threading.Thread(target=self._sample, daemon=True).start()
        threading.Thread(target=self._dump_loop, daemon=True).start()

    def _gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter()
        else:
            d = time.perf_counter() - self._gc_start
            if info["generation"] == 2 or d > self.threshold:
                self.gc.append((round(self._gc_start - T0, 4), info["generation"], round(d, 5)))

    def _sample(self) -> None:
        while True:
            time.sleep(0.001)
            h = self.handle
            if h is None or time.perf_counter() - self.start < self.threshold:
                continue
            frame = sys._current_frames().get(self.main)
            if frame is None or self.handle is not h:
                continue
            with self.lock:
                self.stacks[(describe(h), stack(frame))] += 1

    def _dump_loop(self) -> None:
        while True:
            time.sleep(3)
            self.dump()

    def dump(self) -> None:
        with self.lock:
            by: dict[str, list[float]] = {}
            for _, _, cpu, what in self.stalls:
                if cpu > self.threshold:
                    agg = by.setdefault(what, [0, 0.0, 0.0])
                    agg[0] += 1
                    agg[1] += cpu
                    agg[2] = max(agg[2], cpu)
            doc: dict[str, Any] = {
                "threshold": self.threshold,
                # By CPU seconds (the thread's own time: what the machine's
                # other load does not inflate): count, total, longest.
                "by_callback": sorted(([w, int(n), round(t, 4), round(m, 4)]
                                       for w, (n, t, m) in by.items()),
                                      key=lambda r: -r[2]),
                "stacks": [[w, s, n] for (w, s), n in self.stacks.most_common(200)],
                "gc": self.gc,
                "stalls": self.stalls,
            }
        tmp = self.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=1))
        tmp.replace(self.out)


def describe(h: asyncio.events.Handle) -> str:
    cb = getattr(h, "_callback", None)
    owner = getattr(cb, "__self__", None)
    if isinstance(owner, asyncio.Task):
        coro = owner.get_coro()
        return f"task {getattr(coro, '__qualname__', coro)}"
    name = getattr(cb, "__qualname__", repr(cb))
    if owner is not None and hasattr(owner, "_protocol"):
        name += f" [{type(owner._protocol).__qualname__}]"
    return name


def stack(frame: FrameType | None, depth: int = 8) -> str:
    """The innermost frames, ``module:function:line`` (aliasd's marked with *)."""
    out: list[str] = []
    while frame is not None and len(out) < depth:
        code = frame.f_code
        mod = frame.f_globals.get("__name__", "?")
        mark = "*" if mod.startswith("aliasd") else ""
        out.append(f"{mark}{mod}:{code.co_name}:{frame.f_lineno}")
        frame = frame.f_back
    return " < ".join(out)


def main() -> int:
    args = sys.argv[1:]
    out = Path(args.pop(0))
    threshold = 0.002
    if args[:1] == ["--threshold-ms"]:
        threshold = float(args[1]) / 1000
        args = args[2:]
    uv = args[:1] == ["--uvloop"]
    if uv:
        args = args[1:]
    if args[:2] != ["-m", "aliasd"]:
        raise SystemExit("usage: stalls.py OUT [--threshold-ms N] -m aliasd ARGS...")
    sys.setswitchinterval(0.001)  # let the sampler in while the loop holds the GIL
    rec = Recorder(out, threshold)
    sys.path[0] = os.getcwd()  # as ``python -m aliasd`` would (scale.py --source)
    if uv:
        # uvloop's callbacks cannot be timed from Python: a stall is the
        # loop-lag probe (every 10 ms) not running for 2 x threshold + 10 ms;
        # the stacks sampled then say where the main thread was.
        from aliasd import metrics

        orig_probe = metrics.LoopLag._probe
        beat = [time.perf_counter()]

        def probe(self: Any, loop: Any) -> None:
            beat[0] = time.perf_counter()
            orig_probe(self, loop)

        metrics.LoopLag._probe = probe  # type: ignore[method-assign]

        def watchdog() -> None:
            while True:
                time.sleep(0.001)
                late = time.perf_counter() - beat[0]
                if late > 0.01 + 2 * threshold:
                    frame = sys._current_frames().get(rec.main)
                    with rec.lock:
                        rec.stacks[("stall", stack(frame, 12))] += 1
                        if not rec.stalls or rec.stalls[-1][0] != round(beat[0] - T0, 4):
                            rec.stalls.append((round(beat[0] - T0, 4), 0.0, 0.0, "stall"))

        gc.callbacks.append(rec._gc)
        threading.Thread(target=watchdog, daemon=True).start()
        threading.Thread(target=rec._dump_loop, daemon=True).start()
    else:
        rec.install()
    from aliasd import cli

    if not uv:
        cli.run_async = asyncio.run  # type: ignore[assignment]  # time asyncio's callbacks
    try:
        return int(cli.main(args[2:]) or 0)
    finally:
        rec.dump()


if __name__ == "__main__":
    sys.exit(main())
