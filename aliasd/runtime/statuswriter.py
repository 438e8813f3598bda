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
import functools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aliasd.events import Budget, Event, Send
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
    served_name,
    serves,
    status_body,
    status_patch,
    status_serial,
    transitions,
    watermark,
    with_condition,
)
from aliasd.sources.aliases import AliasInfo, AliasView
from aliasd.zoneconfig import ZoneConfig

log = logging.getLogger(__name__)

DEFAULT_RATE = 250.0
"""Status writes per second (``--alias-status-rate``; the bucket holds as many
at once): 10,000 new Aliases on a cold start of one replica take 10,000 writes
(Ready and Programmed at once), 40 seconds. A burst that only a cold start or
a mass edit reaches; each write is one small merge patch, and with at most
:data:`INFLIGHT` in flight aliasd holds 8% of the 200 mutating requests an
API server runs at once by default (``--max-mutating-requests-inflight``;
API Priority and Fairness shares those seats out by priority level, so a
busy client queues within its own level's share rather than starving the
others). client-go's default is 5/s, bursts of 10."""
INFLIGHT = 16
"""Status writes in flight at once: the rate is reached while each request
waits for the API server (etcd's write, the watch's fan-out) rather than one
round trip after the other."""
SLICE_SECONDS = 0.002
"""Longest run of comparing before the writer yields the loop (DNS queries
get in between)."""
LEADER_POLL = 1.0
"""Seconds between looks at leadership while nothing else wakes the writer."""

Patch = Callable[[str, str, dict[str, Any]], Awaitable[tuple[int, dict[str, Any]]]]
"""(namespace, name, merge patch of the status subresource) → (HTTP status, body)."""


class AliasStatusWriter:
    """Writes ``aliases/status`` while ``leading()`` (see the module)."""

    name = "alias-status"

    def __init__(self, *, source: str, patch: Patch, zones: ZoneConfig,
                 leading: Callable[[], bool], send: Send, clock: Callable[[], float],
                 results: Counter[str], identity: str, rate: float = DEFAULT_RATE,
                 inflight: int = INFLIGHT, health: Health = NO_HEALTH) -> None:
        self._source = source  # the name of the source the Aliases' claims come from
        self._identity = identity  # this replica among the replicas' watermarks
        self._aliases: dict[str, AliasView] = {}
        self._patch = patch
        self._zones = zones
        self._leading = leading
        self._health = health  # the prober's states (read, never written, here)
        self._send = send
        self._clock = clock
        self._bucket = Budget(max(1, round(rate)), 1 / rate)
        self._result: Result | None = None
        # The names re-resolved and the engine keys re-validated since the
        # last scan (from each result's delta): only the Aliases they name
        # are looked at. None: every Alias (a result without a delta from
        # the last one, a new leader).
        self._touched: set[str] | None = None
        self._touched_keys: set[str] = set()
        self._by_name: dict[str, set[str]] = {}  # served name -> the Aliases naming it
        self._prefix = engine_key(source, "")  # engine keys of Aliases start so
        self._recheck = False  # look at the Aliases with health checks
        self._checked: set[str] = set()  # the Aliases with health checks
        self._dirty: set[str] = set()
        # Updated since the last commit: compared once a result holds their claims.
        self._waiting: set[str] = set()
        self._retry: set[str] = set()  # refused writes, tried again on the next wake-up
        self._inflight = inflight
        self._flying: dict[str, asyncio.Task[None]] = {}  # key -> its write in flight
        self._again: set[str] = set()  # changed while its write was in flight
        self._crash: BaseException | None = None  # a write task's unexpected error
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
        """A committer reporter: compare the Aliases against ``result`` later.
        The same result as last time (the engine makes a new one whenever a
        resolution changes) leaves only health to look at: a target's verdict
        can change what a status says without changing an answer (a standby
        target). The echoes of the writer's own writes come this way."""
        if result is not self._result:
            delta, before = result.delta, self._result
            if (self._touched is None or delta is None or before is None
                    or delta.since != before.number):
                self._touched = None
            else:
                self._touched |= delta.names
                self._touched_keys |= delta.keys
        self._recheck = True
        self._result = result
        self._dirty |= self._waiting
        self._waiting.clear()
        self._wake.set()

    def update(self, key: str, alias: AliasView | None) -> None:
        """The source's word: the Alias ``key`` ("ns/name"), its inputs or its
        status on the API server changed (None: it is gone). Compared after
        the next commit (the source has the reporters run then)."""
        before = self._aliases.get(key)
        for name in self._served(before[0]) if before is not None else ():
            keys = self._by_name[name]
            keys.discard(key)
            if not keys:
                del self._by_name[name]
        if alias is None:
            self._checked.discard(key)
            self._aliases.pop(key, None)
            self._seen.pop(key, None)
            self._lagging.pop(key, None)
            self._confirmed.pop(key, None)
        else:
            self._aliases[key] = alias
            for name in self._served(alias[0]):
                self._by_name.setdefault(name, set()).add(key)
            if any(c.check is not None for c in alias[0].claims):
                self._checked.add(key)
            else:
                self._checked.discard(key)
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
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), LEADER_POLL)
                self._wake.clear()
                if self._crash is not None:
                    raise self._crash
                self._dirty |= self._retry
                self._retry.clear()
                now_leading = self._leading()
                if now_leading and not leading:  # a new leader looks at every Alias once
                    self._seen.clear()
                    self._touched = None
                    self._reprogram = True
                leading = now_leading
                if self._result is None or not self._result.snapshot.ready:
                    # A partial result (a source still listing) would say a
                    # Service not listed yet is missing: nothing is compared
                    # until every source has synced.
                    continue
                if self._touched is None or self._touched or self._touched_keys \
                        or self._recheck:
                    keys = self._affected()
                    self._touched, self._touched_keys = set(), set()
                    self._recheck = False
                    await self._scan(keys)
                if self._reprogram and leading and self._replicas is not None:
                    self._reprogram = False
                    await self._scan_programmed()
                await self._drain(leading)
                if not self._waiting:
                    self._caught_up = True
        finally:
            for task in self._flying.values():
                task.cancel()

    async def _drain(self, leading: bool) -> None:
        """Compare every dirty Alias, in slices of :data:`SLICE_SECONDS`; hand
        the writes to at most ``inflight`` requests, at the bucket's rate. An
        Alias whose write is in flight is compared again once it returns."""
        turn = time.perf_counter()
        while self._dirty:
            # Comparing and starting writes alike: a burst of tokens and free
            # slots must not hold the loop for 16 writes' worth of work.
            if time.perf_counter() - turn > SLICE_SECONDS:
                await asyncio.sleep(0)
                turn = time.perf_counter()
            key = self._dirty.pop()
            if key in self._flying:
                self._again.add(key)
                continue
            job = self._compare(key, write=leading and self._leading())
            if job is None:
                continue
            wait = self._bucket.delay()
            if wait:
                await asyncio.sleep(wait)
                turn = time.perf_counter()
            while len(self._flying) >= self._inflight:
                await asyncio.wait(list(self._flying.values()),
                                   return_when=asyncio.FIRST_COMPLETED)
                turn = time.perf_counter()
            task = asyncio.create_task(self._write(key, job))
            self._flying[key] = task
            task.add_done_callback(functools.partial(self._landed, key))

    def _landed(self, key: str, task: asyncio.Task[None]) -> None:
        if self._flying.get(key) is task:
            del self._flying[key]
        if not task.cancelled() and task.exception() is not None:
            self._crash = task.exception()
        if key in self._again:
            self._again.discard(key)
            self._dirty.add(key)
            self._wake.set()
        elif self._crash is not None:
            self._wake.set()

    async def _scan(self, keys: list[str]) -> None:
        """Mark dirty each of ``keys`` whose inputs changed since it was last compared."""
        turn = time.perf_counter()
        for k in keys:
            if time.perf_counter() - turn > SLICE_SECONDS:
                await asyncio.sleep(0)
                turn = time.perf_counter()
            got = self._aliases.get(k)
            result = self._result
            if got is None or result is None:
                continue
            now = inputs(got[0], result, self._zones, self._key(k), self._health)
            before = self._seen.get(k)
            if before is None or len(before) != len(now) or any(
                    a is not b for a, b in zip(before, now, strict=True)):
                self._dirty.add(k)

    def _affected(self) -> list[str]:
        """The Aliases whose inputs may have changed since the last scan: those
        naming a re-resolved name or re-validated, and those with health checks
        (a verdict can change a status without changing an answer)."""
        if self._touched is None:
            return list(self._aliases)
        out = set(self._checked) if self._recheck else set()
        for name in self._touched:
            out |= self._by_name.get(name, set())
        cut = len(self._prefix)
        out.update(k[cut:] for k in self._touched_keys if k.startswith(self._prefix))
        return list(out)

    def _served(self, info: AliasInfo) -> set[str]:
        """The names an Alias's hostnames are resolved under."""
        return {served_name(h, self._zones) for h in info.hostnames}

    def _key(self, key: str) -> str:
        return engine_key(self._source, key)

    async def _scan_programmed(self) -> None:
        """Mark dirty each Alias whose Programmed condition the replicas'
        watermarks have changed (cheap: no desired status is computed)."""
        turn = time.perf_counter()
        for k in list(self._aliases):
            if time.perf_counter() - turn > SLICE_SECONDS:
                await asyncio.sleep(0)
                turn = time.perf_counter()
            got = self._aliases.get(k)
            if got is None:
                continue
            info, observed = got
            current = self._written.get(k, observed)
            serial = status_serial(current, info.generation)
            if serial is None or condition_of(current, PROGRAMMED)[0] == "True":
                continue  # no status yet, or confirmed for good (see _programmed)
            me = self._identity if self._confirmed.get(k) == serial else None
            now = programmed(_answer(current), serial, self._replicas or {}, me=me)
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
        """Programmed for a status carrying ``serial`` (None: a new answer),
        which this replica serves (it is writing it). Once True for an answer
        it stays True until the answer changes: every live replica served it,
        and a replica's watermark dips below a serial it confirmed whenever
        another new answer at that serial arrives (which would flip, and
        rewrite, every Alias sharing it). A new leader keeps each condition
        until it has heard the replicas, and before that claims nothing for
        a new answer: another replica may not serve it yet."""
        kept = kept_condition(current, PROGRAMMED)
        if serial is not None and kept is not None and (kept.status or self._replicas is None):
            return kept
        if self._replicas is None:
            return programmed(want, serial, {})
        return programmed(want, serial, self._replicas, me=self._identity)

    def _compare(self, key: str, *, write: bool) -> _Write | None:
        """Compare one Alias: what to write (None: nothing, or not ``write``)."""
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
        return _Write(info, want, current, serial)

    async def _write(self, key: str, job: _Write) -> None:
        """Patch one status (only the fields that differ); Events on condition changes."""
        info, want, current = job.info, job.want, job.current
        body = status_body(want, current, generation=info.generation, serial=job.serial,
                           now=self._clock())
        owner = info.owner
        error: Exception | None = None
        try:
            status, answer = await self._patch(owner.namespace, owner.name,
                                               {"status": status_patch(body, current)})
        except Exception as e:
            # One write failing in a way the HTTP client does not document
            # (seen under load: aiohttp's response start finding no headers)
            # is a failed write, tried again: it must not stop the writer,
            # nor, through the supervisor, the DNS server.
            error, status, answer = e, 0, {"message": f"{type(e).__name__}: {e}"}
        if not 200 <= status < 300:  # 0: the API server was not reached
            self._results["refused"] += 1
            if status != 404:  # 404: deleted meanwhile, nothing to write
                # A failure streak (an API server outage) is logged once at WARNING.
                log.log(logging.DEBUG if self._failing else logging.WARNING,
                        "could not write the status of Alias %s/%s: %s", owner.namespace,
                        owner.name, f"HTTP {status}: {answer.get('message', '')}" if status
                        else answer.get("message", ""), exc_info=error)
                self._failing = True
                self._retry.add(key)
            return
        if self._failing:
            log.info("Alias status writes succeed again")
            self._failing = False
        self._results["written"] += 1
        got = self._aliases.get(key)
        if got is not None:  # not deleted meanwhile
            self._written[key] = body
            if got[0] is info:  # nor changed: this replica serves what it wrote
                self._note(key, want, body, info.generation)
        for c in transitions(want, current):
            if c.type in (ACCEPTED, RESOLVED_REFS) and not c.status:
                self._send(Event(owner, c.reason, c.message))
            elif c.type in (READY, PROGRAMMED) and c.status and current.get("conditions"):
                # Ready again, or an answer every live replica now serves (a
                # first status says nothing new; Pending is the normal way
                # there, not worth an Event of its own).
                self._send(Event(owner, c.reason, c.message, warning=False))
            elif c.type == HEALTHY and (not c.status or current.get("conditions")):
                # A target left or came back (the first status of a healthy Alias
                # says nothing new).
                self._send(Event(owner, c.reason, c.message, warning=not c.status))


@dataclass(frozen=True)
class _Write:
    """A status write decided by a comparison: the Alias, its status, the
    status it replaces and the serial it carries."""

    info: AliasInfo
    want: Desired
    current: dict[str, Any]
    serial: int


def _answer(status: Mapping[str, Any]) -> Desired:
    """The answer a status names (for :func:`programmed`, which reads only the
    hostnames)."""
    return Desired(tuple(status.get("hostnames") or ()), (), None, ())


def _text(status: bool) -> str:
    return "True" if status else "False"
