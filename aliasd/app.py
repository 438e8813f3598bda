"""Wiring: sources → registry → DNS server, plus the HTTP endpoints.

Level-triggered: a source only marks the state dirty; a short debounced loop
rebuilds the snapshot from every source's full current claims, so a missed
event can never leave a wrong answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from aliasd import registry
from aliasd.access import Authenticator, LogTrail, StaticToken, Trail
from aliasd.dns.answer import Stats
from aliasd.dns.server import DnsServer, ServerConfig
from aliasd.model import AliasClaim, utc_timestamp
from aliasd.registry import ZoneConfig
from aliasd.sources.overrides import OverridesSource
from aliasd.state import State, StateFile

log = logging.getLogger(__name__)


class Source(Protocol):
    """What the app needs from a source. ``claims`` is the full current set."""

    name: str

    @property
    def claims(self) -> list[AliasClaim]: ...

    @property
    def synced(self) -> bool: ...

    @property
    def error(self) -> str | None: ...

    async def run(self) -> None: ...


class Component(Protocol):
    """A background part that is not a source (the CoreDNS patcher): it runs
    beside the sources and reports its state in /readyz."""

    name: str

    def status(self) -> dict[str, Any]: ...

    async def run(self) -> None: ...


Reporter = Callable[[registry.Result, bool], None]
"""Called after every rebuild with the current result and whether it changed."""


@dataclass(frozen=True)
class AppConfig:
    zones: ZoneConfig
    dns: ServerConfig = field(default_factory=ServerConfig)
    http_host: str = "0.0.0.0"
    http_port: int = 8080
    aliases_file: Path | None = None
    debounce: float = 0.02
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
        self.serial = registry.next_serial(0, clock())
        self.result = registry.build([], config=config.zones, serial=self.serial, ready=False)
        self.dns = DnsServer(self.result.snapshot, config.dns, stats=self.stats)
        self._dirty = asyncio.Event()
        self._key: object = None
        self.http_port = config.http_port
        self.watch_restarts: Counter[str] = Counter()
        self.patch_results: Counter[str] = Counter()
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
        self._good_claims: list[AliasClaim] = []
        self._state_dirty = asyncio.Event()

    # ---- state ---------------------------------------------------------------

    def mark_dirty(self) -> None:
        self._dirty.set()

    @property
    def ready(self) -> bool:
        return all(s.synced for s in self.sources)

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
        """Recompute the snapshot from every source; swap it in if anything
        changed (a new serial only then). Returns whether it changed."""
        ready = self.ready
        if ready:
            self.stale = None  # fresh state from now on (a stale copy stays in the caches)
        degraded = self.stale is not None
        claims = list(self.stale.claims) if self.stale else [
            c for s in self.sources for c in s.claims]
        serial = registry.next_serial(self.serial, self.clock())
        result = registry.build(claims, config=self.config.zones, serial=serial,
                                ready=ready or degraded)
        key = (result.entries, result.conflicts, result.invalid, result.overridden, ready,
               degraded)
        changed = key != self._key
        if changed:
            self._key = key
            self.serial = serial
            self.result = result
            self.degraded = degraded
            self.dns.swap(result.snapshot)
            log.debug("snapshot %d: %d aliases, %d conflicts, %d invalid%s", serial,
                      len(result.entries), len(result.conflicts), len(result.invalid),
                      " (from the state file)" if degraded else "")
            if ready and self.state is not None:
                self._good_claims = claims
                self._state_dirty.set()
        for report in self.reporters:
            try:
                report(self.result, changed)
            except Exception:
                log.exception("reporting the new snapshot failed")
        return changed

    async def _state_loop(self) -> None:
        """Write the last good snapshot's claims (atomically, off the loop)."""
        assert self.state is not None
        failed = False
        while True:
            await self._state_dirty.wait()
            self._state_dirty.clear()
            try:
                await asyncio.to_thread(self.state.save, now=self.clock(),
                                        claims=self._good_claims)
                failed = False
            except OSError as e:
                if not failed:
                    log.error("cannot write the state file %s: %s", self.state.path,
                              e.strerror or e)
                failed = True
            await asyncio.sleep(self.config.state_interval)

    async def _rebuild_loop(self) -> None:
        while True:
            await self._dirty.wait()
            await asyncio.sleep(self.config.debounce)  # coalesce bursts of events
            self._dirty.clear()
            self.rebuild()

    # ---- lifecycle -------------------------------------------------------------

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
        """Serve until ``stop`` is set (or forever). Listen errors raise ConfigError."""
        from aliasd.api import start_http

        await self.dns.start()
        runner = None
        try:
            runner = await start_http(self, self.config.http_host, self.config.http_port)
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
            if runner is not None:
                await runner.cleanup()
            await self.dns.stop()
            if self.state is not None and self._state_dirty.is_set():
                with contextlib.suppress(OSError):  # the last change, before exiting
                    self.state.save(now=self.clock(), claims=self._good_claims)

