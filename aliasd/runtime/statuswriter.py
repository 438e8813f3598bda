"""The Alias status writer: the leader writes each Alias's status, only when it
changed, coalesced per object and rate-limited, never on the DNS path.

After each commit the committer hands over the result (a reference, no work);
the Kubernetes source names each Alias whose inputs or status on the API server
changed, and has the reporters run after the next commit, so an Alias is
compared only with a result that holds its claims. The writer's own task then
compares each named Alias, and each Alias whose inputs are not the same
objects as last time
(in slices, so DNS queries get in between), the status it should have with
the one the API server holds, and patches ``aliases/status`` where they
differ: one write per object however many changes came in meanwhile (the set
of dirty keys is the queue), at most ``rate`` writes a second (a token
bucket). A relist that changes nothing, a new leader and a restart find every
status already right and write nothing. An Event is sent when a condition
changes.

Every replica, leader or not, compares: whether the answer it serves is the
one each status names gives its watermark (:func:`aliasstatus.watermark`),
which it publishes in its own Lease (``aliasd.runtime.replicas``). The leader
hears the live replicas' watermarks (:meth:`AliasStatusWriter.replicas`) and
sets ``Programmed`` where every one has reached the Alias's status serial.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aliasd.events import Event, Send
from aliasd.resolver import Result
from aliasd.runtime.aliasstatus import (
    ACCEPTED,
    HEALTHY,
    NO_HEALTH,
    PROGRAMMED,
    READY,
    RESOLVED_REFS,
    Condition,
    Desired,
    Health,
    condition_of,
    desired,
    engine_key,
    inputs,
    kept_condition,
    programmed,
    same,
    serial_to_write,
    serves,
    status_body,
    status_serial,
    transitions,
    watermark,
    with_condition,
)
from aliasd.sources.aliases import AliasView
from aliasd.zoneconfig import ZoneConfig

log = logging.getLogger(__name__)

DEFAULT_RATE = 100.0
"""Status writes per second (``--alias-status-rate``; the bucket holds as many
at once): 10,000 new Aliases take 20,000 writes (Ready, then Programmed), at
least 200 seconds, each write one short request (one in flight at a time), far
from an API server's default 200 mutating requests in flight that every
controller shares."""
SLICE = 256
"""Aliases compared per loop turn."""
LEADER_POLL = 1.0
"""Seconds between looks at leadership while nothing else wakes the writer."""

Patch = Callable[[str, str, dict[str, Any]], Awaitable[tuple[int, dict[str, Any]]]]
"""(namespace, name, merge patch of the status subresource) → (HTTP status, body)."""


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: int, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self._clock = rate, burst, clock
        self._tokens = float(burst)
        self._at = clock()

    def delay(self) -> float:
        """Take a token: the seconds to wait before using it (0: now)."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        self._tokens -= 1
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


class AliasStatusWriter:
    """Writes ``aliases/status`` while ``leading()`` (see the module)."""

    name = "alias-status"

    def __init__(self, *, source: str, patch: Patch, zones: ZoneConfig,
                 leading: Callable[[], bool], send: Send, clock: Callable[[], float],
                 results: Counter[str], rate: float = DEFAULT_RATE,
                 health: Health = NO_HEALTH) -> None:
        self._source = source  # the name of the source the Aliases' claims come from
        self._aliases: dict[str, AliasView] = {}
        self._patch = patch
        self._zones = zones
        self._leading = leading
        self._health = health  # the prober's states (read, never written, here)
        self._send = send
        self._clock = clock
        self._bucket = TokenBucket(rate, max(1, round(rate)))
        self._result: Result | None = None
        self._rescan = False
        self._dirty: set[str] = set()
        # Updated since the last commit: compared once a result holds their claims.
        self._waiting: set[str] = set()
        self._retry: set[str] = set()  # refused writes, tried again on the next wake-up
        self._seen: dict[str, tuple[object, ...]] = {}  # key -> inputs last compared
        self._written: dict[str, dict[str, Any]] = {}  # key -> status written, not yet watched
        self._wake = asyncio.Event()
        self._results = results  # written / refused (the aliasd_alias_status_writes metric)
        self._failing = False
        # This replica's agreement with the statuses (its published watermark):
        self._lagging: dict[str, int] = {}  # key -> serial of a status not (yet) served so
        self._confirmed: dict[str, int] = {}  # key -> serial of the status last served so
        self._top = 0  # the highest status serial seen
        self._caught_up = False  # compared every Alias against a ready result once
        # The live replicas' watermarks as the leader hears them (None: not
        # heard yet; a new leader keeps each Programmed condition until then,
        # rather than rewrite every status twice).
        self._replicas: dict[str, int] | None = None
        self._reprogram = False

    # ---- inputs (cheap, synchronous) -------------------------------------------

    def report(self, result: Result, changed: bool) -> None:
        """A committer reporter: compare the Aliases against ``result`` later."""
        self._result = result
        self._rescan = True
        self._dirty |= self._waiting
        self._waiting.clear()
        self._wake.set()

    def update(self, key: str, alias: AliasView | None) -> None:
        """The source's word: the Alias ``key`` ("ns/name"), its inputs or its
        status on the API server changed (None: it is gone). Compared after
        the next commit (the source has the reporters run then)."""
        if alias is None:
            self._aliases.pop(key, None)
            self._seen.pop(key, None)
            self._lagging.pop(key, None)
            self._confirmed.pop(key, None)
        else:
            self._aliases[key] = alias
            # A new answer is not served until compared: it must not count as
            # confirmed by this replica's older comparison. A rewrite that
            # keeps the serial keeps the answer (conditions only): no lag.
            serial = status_serial(alias[1], alias[0].generation)
            if serial is not None and self._confirmed.get(key) != serial:
                self._lagging[key] = serial
                self._top = max(self._top, serial)
        self._waiting.add(key)
        self._written.pop(key, None)

    def replicas(self, watermarks: Mapping[str, int]) -> None:
        """The live replicas' watermarks changed (identity -> serial)."""
        self._replicas = dict(watermarks)
        self._reprogram = True
        self._wake.set()

    @property
    def watermark(self) -> int | None:
        """This replica's watermark (None until it has compared every Alias
        against a ready result: a starting replica confirms nothing)."""
        if not self._caught_up:
            return None
        return watermark(self._lagging, self._top)

    def status(self) -> dict[str, Any]:
        return {"leader": self._leading(), "pending": len(self._dirty) + len(self._waiting),
                "writes": self._results["written"], "watermark": self.watermark,
                "lagging": len(self._lagging)}

    # ---- the task ------------------------------------------------------------------

    async def run(self) -> None:
        leading = False
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), LEADER_POLL)
            self._wake.clear()
            self._dirty |= self._retry
            self._retry.clear()
            now_leading = self._leading()
            if now_leading and not leading:  # a new leader looks at every Alias once
                self._seen.clear()
                self._rescan = self._reprogram = True
            leading = now_leading
            if self._result is None:
                continue
            if self._rescan:
                self._rescan = False
                await self._scan()
            if self._reprogram and leading and self._replicas is not None:
                self._reprogram = False
                await self._scan_programmed()
            done = 0
            while self._dirty:
                key = self._dirty.pop()
                if await self._compare(key, write=leading and self._leading()) is None:
                    done += 1
                    if done % SLICE == 0:  # a follower compares without writing: yield
                        await asyncio.sleep(0)
            if not self._waiting and self._result.snapshot.ready:
                self._caught_up = True

    async def _scan(self) -> None:
        """Mark dirty each Alias whose inputs changed since it was last compared."""
        keys = list(self._aliases)
        for start in range(0, len(keys), SLICE):
            if start:
                await asyncio.sleep(0)
            result = self._result
            assert result is not None
            for k in keys[start:start + SLICE]:
                got = self._aliases.get(k)
                if got is None:
                    continue
                now = inputs(got[0], result, self._zones, self._key(k), self._health)
                before = self._seen.get(k)
                if before is None or len(before) != len(now) or any(
                        a is not b for a, b in zip(before, now, strict=True)):
                    self._dirty.add(k)

    def _key(self, key: str) -> str:
        return engine_key(self._source, key)

    async def _scan_programmed(self) -> None:
        """Mark dirty each Alias whose Programmed condition the replicas'
        watermarks have changed (cheap: no desired status is computed)."""
        keys = list(self._aliases)
        for start in range(0, len(keys), SLICE):
            if start:
                await asyncio.sleep(0)
            for k in keys[start:start + SLICE]:
                got = self._aliases.get(k)
                if got is None:
                    continue
                info, observed = got
                current = self._written.get(k, observed)
                serial = status_serial(current, info.generation)
                if serial is None or condition_of(current, PROGRAMMED)[0] == "True":
                    continue  # no status yet, or confirmed for good (see _programmed)
                now = programmed(_answer(current), serial, self._replicas or {})
                if condition_of(current, PROGRAMMED) != (_text(now.status), now.reason):
                    self._dirty.add(k)

    def _note(self, key: str, want: Desired, status: dict[str, Any], generation: int) -> None:
        """Whether this replica serves the answer ``status`` names (its watermark)."""
        serial = status_serial(status, generation)
        if serial is None:
            self._lagging.pop(key, None)
            self._confirmed.pop(key, None)
            return
        self._top = max(self._top, serial)
        if serves(want, status, generation):
            self._lagging.pop(key, None)
            self._confirmed[key] = serial
        else:
            self._lagging[key] = serial
            self._confirmed.pop(key, None)

    def _programmed(self, want: Desired, current: dict[str, Any], serial: int | None
                    ) -> Condition:
        """Programmed for a status carrying ``serial`` (None: a new answer).
        Once True for an answer it stays True until the answer changes: every
        live replica served it, and a replica's watermark dips below a serial
        it confirmed whenever another new answer at that serial arrives (which
        would flip, and rewrite, every Alias sharing it). A new leader keeps
        each condition until it has heard the replicas."""
        kept = kept_condition(current, PROGRAMMED)
        if serial is not None and kept is not None and (kept.status or self._replicas is None):
            return kept
        return programmed(want, serial, self._replicas or {})

    async def _compare(self, key: str, *, write: bool) -> bool | None:
        """Compare one Alias; write its status if ``write`` and it differs.
        None: nothing was sent to the API server."""
        got = self._aliases.get(key)
        result = self._result
        if got is None or result is None:
            return None
        info, observed = got
        engine = self._key(key)
        self._seen[key] = inputs(info, result, self._zones, engine, self._health)
        want = desired(info, result, self._zones, engine, self._health)
        current = self._written.get(key, observed)
        self._note(key, want, current, info.generation)
        if not write:
            return None
        serial, new = serial_to_write(want, current, generation=info.generation,
                                      serial=result.snapshot.serial)
        want = with_condition(want, self._programmed(want, current, None if new else serial))
        if same(want, current, info.generation):
            return None
        wait = self._bucket.delay()
        if wait:
            await asyncio.sleep(wait)
        body = status_body(want, current, generation=info.generation, serial=serial,
                           now=self._clock())
        owner = info.owner
        status, answer = await self._patch(owner.namespace, owner.name, {"status": body})
        if status >= 300:
            self._results["refused"] += 1
            if status != 404:  # 404: deleted meanwhile, nothing to write
                # A failure streak (an API server outage) is logged once at WARNING.
                log.log(logging.DEBUG if self._failing else logging.WARNING,
                        "could not write the status of Alias %s/%s: HTTP %d: %s",
                        owner.namespace, owner.name, status, answer.get("message", ""))
                self._failing = True
                self._retry.add(key)
            return False
        if self._failing:
            log.info("Alias status writes succeed again")
            self._failing = False
        self._results["written"] += 1
        self._written[key] = body
        self._note(key, want, body, info.generation)
        for c in transitions(want, current):
            if c.type in (ACCEPTED, RESOLVED_REFS) and not c.status:
                self._send(Event(owner, c.reason, c.message))
            elif c.type == READY and c.status and current.get("conditions"):
                self._send(Event(owner, c.reason, c.message, warning=False))
            elif c.type == HEALTHY and (not c.status or current.get("conditions")):
                # A target left or came back (the first status of a healthy Alias
                # says nothing new).
                self._send(Event(owner, c.reason, c.message, warning=not c.status))
        return True


def _answer(status: Mapping[str, Any]) -> Desired:
    """The answer a status names (for :func:`programmed`, which reads only the
    hostnames)."""
    return Desired(tuple(status.get("hostnames") or ()), (), None, ())


def _text(status: bool) -> str:
    return "True" if status else "False"
