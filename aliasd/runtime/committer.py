"""The committer: turns what waits in the inbox into the snapshot DNS serves,
then runs the effects.

A commit re-resolves only the touched names; a new snapshot (new serial) is
swapped into the DNS server only when an answer changed, and the reporters
(Events, the patcher's takeovers) run only when something did. Until every
source has synced, a state file's claims are served instead (degraded), built
once. Commits happen on the leading edge of a change, then at most once per
``debounce``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from prometheus_client.core import CounterMetricFamily

from aliasd import resolver
from aliasd.model import AliasClaim
from aliasd.resolver import Result
from aliasd.runtime.inbox import Inbox
from aliasd.runtime.statewriter import StateWriter
from aliasd.state import State
from aliasd.zone import Snapshot
from aliasd.zoneconfig import ZoneConfig

log = logging.getLogger(__name__)

Reporter = Callable[[Result, bool], None]
"""Called after a commit with the current result and whether it changed."""


class Source(Protocol):
    """What the committer needs from a source. ``claims`` is the full current
    set (read only when the source said its whole state changed; the
    Kubernetes source pushes per object instead)."""

    name: str

    @property
    def claims(self) -> list[AliasClaim]: ...

    @property
    def synced(self) -> bool: ...

    @property
    def error(self) -> str | None: ...

    async def run(self) -> None: ...


class Swap(Protocol):
    """Where snapshots are served (``aliasd.dns.server.DnsServer``)."""

    def swap(self, snapshot: Snapshot, changed: frozenset[str] | None = None) -> None: ...


class Committer:
    """Inbox → engine commit → swapped snapshot → reporters."""

    def __init__(self, inbox: Inbox, *, zones: ZoneConfig, dns: Swap,
                 sources: Sequence[Source], reporters: Sequence[Reporter],
                 clock: Callable[[], float], debounce: float, stale: State | None = None,
                 state: StateWriter | None = None,
                 on_synced: Callable[[], None] = lambda: None) -> None:
        self._inbox = inbox
        self._zones = zones
        self._dns = dns
        self._sources = tuple(sources)
        self._reporters = tuple(reporters)
        self._clock = clock
        self._debounce = debounce
        # The last good snapshot's claims from the state file, served while the
        # sources have not synced (then dropped for good).
        self._stale = stale if stale is not None and stale.claims else None
        self._state = state
        self._on_synced = on_synced
        self._result = inbox.engine.result
        self._serial = self._result.snapshot.serial
        self._degraded = False
        self._reported = False
        self._synced = False
        # Whole-state sources may have loaded before they could notify.
        self._whole = {s.name for s in self._sources if not getattr(s, "incremental", False)}
        self._waiters: list[asyncio.Future[None]] = []
        self._expiry: float | None = None  # the first hold's end a commit is due at
        self._expiry_timer: asyncio.TimerHandle | None = None
        self.engine_runs = 0
        self.snapshots = 0

    @property
    def result(self) -> Result:
        """What DNS serves now, with its conflicts and invalid claims."""
        return self._result

    @property
    def ready(self) -> bool:
        """Every source has synced."""
        return all(s.synced for s in self._sources)

    @property
    def degraded(self) -> bool:
        """Answering from the state file: the sources have not synced yet."""
        return self._degraded

    @property
    def settled(self) -> bool:
        """Nothing waits to be committed, and the sources' state is served."""
        return (not self._inbox.engine.pending and not self._inbox.waiting
                and self._stale is None)

    def commit(self) -> bool:
        """Commit the engine: re-resolve the touched names, swap in a new
        snapshot if an answer changed, report if anything did. Returns whether
        anything changed."""
        self.engine_runs += 1
        whole, report = self._inbox.take()
        whole |= self._whole
        self._whole = set()
        engine = self._inbox.engine
        for s in self._sources:
            if s.name in whole:
                engine.replace(s.name, s.claims)
        ready = self.ready
        if ready and self._stale is not None:
            self._stale = None  # fresh state from now on (a stale copy stays in the caches)
        changed = (self._serve_stale(self._stale) if self._stale is not None
                   else self._commit(ready))
        if changed or report or not self._reported:
            self._reported = True
            for reporter in self._reporters:
                try:
                    reporter(self._result, changed)
                except Exception:
                    log.exception("reporting the new snapshot failed")
        if ready and not self._synced:
            self._synced = True
            self._on_synced()
        return changed

    def _serve_stale(self, stale: State) -> bool:
        """Until the sources sync, answer from the state file (built once)."""
        if self._degraded:
            return False
        serial = resolver.next_serial(self._serial, self._clock())
        # Validated against the stored Namespace policies: with
        # --default-allowed-names, a name only an annotation allows still answers.
        self._result = resolver.build(stale.claims, config=self._zones, serial=serial,
                                      annotations=stale.annotations)
        self._serial = serial
        self._degraded = True
        self._dns.swap(self._result.snapshot, None)
        self.snapshots += 1
        log.debug("snapshot %d: %d claims from the state file", serial, len(stale.claims))
        return True

    def _commit(self, ready: bool) -> bool:
        was_degraded, self._degraded = self._degraded, False
        engine = self._inbox.engine
        commit = engine.commit(now=self._clock(), ready=ready, min_serial=self._serial)
        if commit is None and not was_degraded:
            return False
        self._result = engine.result
        if commit is None or commit.new_snapshot or was_degraded:
            self._serial = self._result.snapshot.serial
            self._dns.swap(self._result.snapshot,
                           None if was_degraded or commit is None else commit.changed)
            self.snapshots += 1
            if log.isEnabledFor(logging.DEBUG):  # the counts are O(conflicts)
                log.debug("snapshot %d: %d aliases, %d conflicts, %d invalid", self._serial,
                          self._result.entry_count, self._result.conflict_count,
                          self._result.invalid_count)
            if ready and self._state is not None:
                self._state.changed(engine)
        return True

    async def committed(self) -> None:
        """Return once what the sources handed over before the call is served
        (an HTTP write answers with its change in effect)."""
        done = asyncio.get_running_loop().create_future()
        self._waiters.append(done)
        self._inbox.changed()
        await done

    async def run(self) -> None:
        """Commit now, then on the leading edge: the first change after a
        quiet spell is committed as soon as the events already read are
        handled (one loop turn: a rename answers a millisecond after its watch
        event, not a debounce later); further changes within ``debounce`` of a
        commit wait for the rest of that window, so a burst costs one commit
        per window."""
        loop = asyncio.get_running_loop()
        self._commit_and_wake()
        last = -self._debounce  # the first change after the start is not held back
        while True:
            await self._inbox.wait()
            wait = last + self._debounce - loop.time()
            await asyncio.sleep(wait if wait > 0 else 0)
            self._commit_and_wake()
            last = loop.time()

    def _commit_and_wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        try:
            self.commit()
        finally:
            for w in waiters:
                if not w.done():
                    w.set_result(None)
            self._wake_at_expiry()

    def _wake_at_expiry(self) -> None:
        """A hold on a name (``ZoneConfig.name_hold``) ends with no event: commit
        then, so the waiting claim is served on time."""
        expiry = self._inbox.engine.next_expiry
        if expiry == self._expiry:
            return
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
            self._expiry_timer = None
        self._expiry = expiry
        if expiry is not None:
            self._expiry_timer = asyncio.get_running_loop().call_later(
                max(0.0, expiry - self._clock()), self._expired)

    def _expired(self) -> None:
        self._expiry_timer = None
        self._expiry = None
        self._inbox.changed()

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            "aliasd_engine_runs", "Engine commits attempted (each debounced burst of changes)",
            value=self.engine_runs)
        yield CounterMetricFamily("aliasd_snapshots",
                                  "Snapshots swapped in (each with a new serial)",
                                  value=self.snapshots)
