"""Wiring: sources → engine → DNS server, then one effects step.

Sources hand each object's claims to the engine when that object changes
(``update_claims``), or say that their whole state changed (``notifier``:
the aliases file, the overrides). A short debounced loop commits the engine:
only the touched names are re-resolved, a new snapshot (new serial) is swapped
in only when an answer changed, and the reporters (Events, the patcher's
takeovers, metrics) run only when something did. The state file re-encodes
only the objects whose claims changed, and is written off the loop.

Level-triggered for correctness: after every relist (a list after the first,
when events may have been missed) the engine's snapshot is compared, off the
loop, with one built from scratch (``registry.build_keyed``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from aliasd import registry
from aliasd.access import Authenticator, LogTrail, StaticToken, Trail
from aliasd.dns.server import DnsServer, ServerConfig
from aliasd.dns.stats import Stats
from aliasd.engine import Engine, differences
from aliasd.model import AliasClaim, utc_timestamp
from aliasd.registry import ZoneConfig
from aliasd.sources.overrides import OverridesSource
from aliasd.state import State, StateFile
from aliasd.status import Component, Source
from aliasd.zone import Snapshot

log = logging.getLogger(__name__)


SWITCH_INTERVAL = 0.001
STAGE_SLICE = 64  # objects encoded for the state file per loop turn (~1 ms)
GC_SYNC_LIMIT = 60.0  # seconds the collector may stay off while the sources sync

Reporter = Callable[[registry.Result, bool], None]
"""Called after every rebuild with the current result and whether it changed."""


@dataclass(frozen=True)
class AppConfig:
    zones: ZoneConfig
    dns: ServerConfig = field(default_factory=ServerConfig)
    http_host: str = "0.0.0.0"
    http_port: int = 8080
    aliases_file: Path | None = None
    debounce: float = 0.005  # commits cost what changed: coalesce bursts, not more
    state_file: Path | None = None
    api_token: str | None = None  # bearer token for the write API; None = writes off
    state_interval: float = 1.0  # at most one state file write per this many seconds
    # Seconds between the stop signal and closing the sockets: /readyz fails, DNS
    # keeps answering while Services and kube-proxy stop sending queries here.
    lame_duck: float = 0.0


class App:
    """Owns the sources, the current registry result and the DNS server."""

    def __init__(self, config: AppConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.sources: list[Source] = []
        self.components: list[Component] = []
        self.reporters: list[Reporter] = []
        self.stats = Stats()
        self.engine = Engine(config.zones, serial=registry.next_serial(0, clock()),
                             track_changes=config.state_file is not None)
        self.result = self.engine.result
        self.serial = self.result.snapshot.serial
        self.dns = DnsServer(self.result.snapshot, config.dns, stats=self.stats)
        self._dirty = asyncio.Event()
        self.http_port = config.http_port
        self.watch_restarts: Counter[str] = Counter()
        self.patch_results: Counter[str] = Counter()
        # engine_runs: commits attempted; claim_updates: objects whose claims
        # changed; snapshots: new snapshots served; check_failures: relist checks
        # that found the engine differing from a build from scratch.
        self.counters: Counter[str] = Counter()
        self.overrides: OverridesSource | None = None
        # Who may write overrides (None: nobody) and where writes are recorded;
        # in a cluster the composition root adds Kubernetes tokens and Events.
        self.authenticator: Authenticator | None = (
            StaticToken(config.api_token) if config.api_token else None)
        self.trail: Trail = LogTrail()
        self.state = StateFile(config.state_file) if config.state_file else None
        # The last good snapshot's claims from the state file, served while the
        # sources have not synced (then dropped for good).
        self.stale: State | None = None
        self.degraded = False
        self.draining = False  # stopping: /readyz fails, DNS still answers (lame duck)
        self._whole: set[str] = set()  # sources whose whole state changed
        self._reported = False
        self._report_pending = False
        self._frozen = False
        self._gc_was_enabled = False
        self._check: asyncio.Task[None] | None = None
        self._check_again = False
        self._state_dirty = asyncio.Event()

    # ---- the narrow status HTTP and metrics read (aliasd.status.Status) -------

    @property
    def zones(self) -> ZoneConfig:
        return self.config.zones

    @property
    def api_token(self) -> str | None:
        return self.config.api_token

    def now(self) -> float:
        return self.clock()

    # ---- state ---------------------------------------------------------------

    def mark_dirty(self) -> None:
        self._dirty.set()

    def notifier(self, source: str) -> Callable[[], None]:
        """``on_change`` for a source that hands over its whole state (``claims``)."""
        def changed() -> None:
            self._whole.add(source)
            self._dirty.set()
        return changed

    def problems_changed(self) -> None:
        """A source's problems changed (not its claims): run the reporters."""
        self._report_pending = True
        self._dirty.set()

    def update_claims(self, key: str, claims: list[AliasClaim]) -> None:
        """One object's claims changed (``source\0key``)."""
        if self.engine.set(key, claims):
            self.counters["claim_updates"] += 1
            self._dirty.set()

    def update_namespace(self, namespace: str, allowed_names: str | None) -> None:
        """A Namespace's ``aliasd.io/allowed-names`` changed (None: absent):
        only that namespace's claims are validated again."""
        if self.engine.set_namespace(namespace, allowed_names):
            self.counters["policy_updates"] += 1
            self._dirty.set()

    @property
    def ready(self) -> bool:
        return all(s.synced for s in self.sources)

    @property
    def dns_cache_entries(self) -> int:
        return self.dns.answerer.cache_size

    def load_state(self) -> State | None:
        """Read the state file: its claims are served until the sources sync.
        A malformed file is logged and ignored (the sources still work)."""
        if self.state is None:
            return None
        try:
            state = self.state.load()
        except ValueError as e:
            log.error("%s; starting without it", e)
            return None
        if state is not None and state.claims:
            self.stale = state
            log.info("state file %s: %d claims, written at %s", self.state.path,
                     len(state.claims), utc_timestamp(state.written))
        return state

    def rebuild(self) -> bool:
        """Commit the engine: re-resolve the touched names, swap in a new
        snapshot if an answer changed, report if anything did. Returns whether
        anything changed."""
        self.counters["engine_runs"] += 1
        for s in self.sources:
            if s.name in self._whole:
                self._whole.discard(s.name)
                self.engine.replace(s.name, s.claims)
        ready = self.ready
        if ready and self.stale is not None:
            self.stale = None  # fresh state from now on (a stale copy stays in the caches)
        changed = (self._serve_stale(self.stale) if self.stale is not None
                   else self._commit(ready))
        if changed or self._report_pending or not self._reported:
            self._reported = True
            self._report_pending = False
            for report in self.reporters:
                try:
                    report(self.result, changed)
                except Exception:
                    log.exception("reporting the new snapshot failed")
        if ready and not self._frozen:
            self._freeze()
        return changed

    def _freeze(self) -> None:
        """Everything allocated by the initial sync lives as long as the
        process: keep it out of the collector's full passes from now on, and
        turn the collector back on (``run`` turned it off for the sync)."""
        self._frozen = True
        gc.freeze()
        self._gc_on()

    def _serve_stale(self, stale: State) -> bool:
        """Until the sources sync, answer from the state file (built once)."""
        if self.degraded:
            return False
        serial = registry.next_serial(self.serial, self.clock())
        self.result = registry.build(stale.claims, config=self.config.zones, serial=serial)
        self.serial = serial
        self.degraded = True
        self.dns.swap(self.result.snapshot, None)
        self.counters["snapshots"] += 1
        log.debug("snapshot %d: %d claims from the state file", serial, len(stale.claims))
        return True

    def _commit(self, ready: bool) -> bool:
        was_degraded, self.degraded = self.degraded, False
        commit = self.engine.commit(now=self.clock(), ready=ready, min_serial=self.serial)
        if commit is None and not was_degraded:
            return False
        self.result = self.engine.result
        if commit is None or commit.new_snapshot or was_degraded:
            self.serial = self.result.snapshot.serial
            self.dns.swap(self.result.snapshot,
                          None if was_degraded or commit is None else commit.changed)
            self.counters["snapshots"] += 1
            if log.isEnabledFor(logging.DEBUG):  # the counts are O(conflicts)
                log.debug("snapshot %d: %d aliases, %d conflicts, %d invalid", self.serial,
                          self.result.entry_count, self.result.conflict_count,
                          self.result.invalid_count)
            if ready and self.state is not None:
                self._state_dirty.set()
        return True

    def schedule_check(self) -> None:
        """After a relist: compare the engine with a build from scratch, off the loop."""
        if self._check is not None and not self._check.done():
            self._check_again = True
            return
        with contextlib.suppress(RuntimeError):  # no running loop (tests of parts)
            self._check = asyncio.get_running_loop().create_task(self._run_check())

    async def _run_check(self) -> None:
        while True:
            self._check_again = False
            await asyncio.sleep(self.config.debounce * 5)  # let the relist settle
            if self.engine.pending or self._dirty.is_set() or self.stale is not None:
                self._check_again = True
            else:
                claims, result = self.engine.claims, self.engine.result
                annotations = self.engine.annotations
                snap = result.snapshot
                diff = await asyncio.to_thread(_check, claims, annotations, self.config.zones,
                                               snap)
                if diff and self.engine.claims is claims \
                        and self.engine.annotations is annotations:
                    self.counters["check_failures"] += 1
                    log.error("the incremental snapshot %d differs from a build from "
                              "scratch (%d differences, first: %s); rebuilding it",
                              snap.serial, len(diff), diff[0][:300])
                    self._reset_engine()
            if not self._check_again:
                return

    def _reset_engine(self) -> None:
        """The safety net: a fresh engine fed every claim (should never run)."""
        old = self.engine
        self.engine = Engine(self.config.zones, serial=old.serial,
                             track_changes=old.track_changes)
        for namespace, allowed_names in old.annotations.items():
            self.engine.set_namespace(namespace, allowed_names)
        for key, claims in old.claims.items():
            self.engine.set(key, claims)
        self.engine.changed_keys |= old.changed_keys  # gone since the last save
        self.rebuild()

    async def _state_loop(self) -> None:
        """Write the claims of the last good snapshot: the objects whose claims
        changed are encoded on the loop, a slice per turn (a change costs what
        it changed), the file is written off the loop."""
        assert self.state is not None
        failed = False
        while True:
            await self._state_dirty.wait()
            keys = sorted(self.engine.changed_keys)
            self.state.stage(())  # the file's own claims give way, even to none
            for i in range(0, len(keys), STAGE_SLICE):
                self._stage(keys[i:i + STAGE_SLICE])
                await asyncio.sleep(0)
            # Cleared only now: stopped while staging, the exit saves the rest.
            self._state_dirty.clear()
            if self.engine.changed_keys:  # changed while staging: the next round
                self._state_dirty.set()
            try:
                await asyncio.to_thread(self.state.save, now=self.clock())
                failed = False
            except OSError as e:
                if not failed:
                    log.error("cannot write the state file %s: %s", self.state.path,
                              e.strerror or e)
                failed = True
            await asyncio.sleep(self.config.state_interval)

    def _stage(self, keys: Iterable[str]) -> None:
        """Hand objects' claims, as the engine has them now, to the state file
        (an object that changes again is marked again)."""
        assert self.state is not None
        keys = list(keys)
        self.state.stage(stored_claims(self.engine.claims, self.engine.invalid, keys))
        self.engine.changed_keys.difference_update(keys)

    async def _rebuild_loop(self) -> None:
        """Commit on the leading edge: the first change after a quiet spell is
        committed as soon as the events already read are handled (one loop
        turn: a rename answers a millisecond after its watch event, not a
        debounce later); further changes within ``debounce`` of a commit wait
        for the rest of that window, so a burst costs one commit per window."""
        loop = asyncio.get_running_loop()
        last = -self.config.debounce
        while True:
            await self._dirty.wait()
            wait = last + self.config.debounce - loop.time()
            await asyncio.sleep(wait if wait > 0 else 0)
            self._dirty.clear()
            self.rebuild()
            last = loop.time()

    # ---- lifecycle -------------------------------------------------------------

    def _gc_on(self) -> None:
        if self._gc_was_enabled:
            gc.enable()
            self._gc_was_enabled = False

    async def _lame_duck(self) -> None:
        """Fail /readyz and keep answering for ``lame_duck`` seconds: the pod
        leaves its Service's endpoints and kube-proxy's rules (a second or two)
        while queries already on their way still get answers (issue 14)."""
        if self.config.lame_duck <= 0:
            return
        self.draining = True
        log.info("stopping: not ready, still answering DNS for %.1f s", self.config.lame_duck)
        await asyncio.sleep(self.config.lame_duck)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Serve DNS until ``stop`` is set (or forever). Listen errors raise ConfigError."""
        await self.dns.start()
        # A thread doing Python work (the relist check, /v1/aliases, the state
        # file) holds the GIL for up to the switch interval before the loop
        # gets it back: 5 ms by default, 1 ms here, so a DNS answer waits at
        # most that long for one.
        sys.setswitchinterval(SWITCH_INTERVAL)
        if not self._frozen and gc.isenabled():
            # The initial sync only allocates what lives as long as the process
            # (every cached object, claim and answer): full collections during it
            # find nothing and cost hundreds of milliseconds at 10,000 Services.
            # Off until the sources sync (then frozen and back on), at most
            # GC_SYNC_LIMIT seconds.
            gc.disable()
            self._gc_was_enabled = True
            gc_timer = asyncio.get_running_loop().call_later(GC_SYNC_LIMIT, self._gc_on)
        else:
            gc_timer = None
        try:
            # Whole-state sources may have loaded before they could notify.
            self._whole.update(s.name for s in self.sources
                               if not getattr(s, "incremental", False))
            self.rebuild()
            tasks = [asyncio.create_task(self._rebuild_loop(), name="rebuild")]
            if self.state is not None:
                tasks.append(asyncio.create_task(self._state_loop(), name="state-file"))
            tasks += [asyncio.create_task(s.run(), name=f"source-{s.name}") for s in self.sources]
            tasks += [asyncio.create_task(c.run(), name=c.name) for c in self.components]
            try:
                if stop is None:
                    await asyncio.gather(*tasks)
                else:
                    waiter = asyncio.create_task(stop.wait())
                    await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                    for t in tasks:
                        if t.done() and not t.cancelled() and t.exception() is not None:
                            raise t.exception()  # type: ignore[misc]
                    await self._lame_duck()
            finally:
                for t in tasks:
                    t.cancel()
                for t in tasks:
                    with contextlib.suppress(asyncio.CancelledError):
                        await t
        finally:
            if gc_timer is not None:
                gc_timer.cancel()
            self._gc_on()
            await self.dns.stop()
            if self.state is not None and self._state_dirty.is_set():
                with contextlib.suppress(OSError):  # the last change, before exiting
                    self._stage(sorted(self.engine.changed_keys))
                    self.state.save(now=self.clock())


def stored_claims(claims: Mapping[str, tuple[AliasClaim, ...]],
                  invalid: Mapping[str, tuple[registry.Invalid, ...]],
                  keys: Iterable[str]) -> list[tuple[str, list[AliasClaim]]]:
    """The claims of these objects to store, but none the name policy denies:
    the state file is served at start without the Namespaces' policies, and a
    denied claim is never served."""
    stored = []
    for key in keys:
        denied = {i.claim for i in invalid.get(key, ()) if i.event == registry.NOT_ALLOWED}
        stored.append((key, [c for c in claims.get(key, ()) if c not in denied]))
    return stored


def _check(claims: Mapping[str, tuple[AliasClaim, ...]], annotations: Mapping[str, str],
           zones: ZoneConfig, snapshot: Snapshot) -> list[str]:
    # What the build allocates is garbage once compared, freed by reference
    # counting. A collection during it would only scan it, holding the GIL
    # against the loop the whole pass (two gen2 passes, 59 and 95 ms, during
    # one check of 10,000 claims): the collector stays off meanwhile.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        scratch = registry.build_keyed(claims, config=zones, serial=snapshot.serial,
                                       ready=snapshot.ready, annotations=annotations)
        return differences(snapshot, scratch.snapshot)
    finally:
        if was_enabled:
            gc.enable()
