"""Process-wide settings for answering DNS from a busy interpreter, and the
lame duck at the stop."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys

log = logging.getLogger(__name__)

SWITCH_INTERVAL = 0.001
GC_SYNC_LIMIT = 60.0  # seconds the collector may stay off while the sources sync


class ProcessTuning:
    """The interpreter's switch interval, and the collector around the sync."""

    def __init__(self, *, switch_interval: float = SWITCH_INTERVAL,
                 gc_sync_limit: float = GC_SYNC_LIMIT) -> None:
        self._switch_interval = switch_interval
        self._gc_sync_limit = gc_sync_limit
        self._frozen = False
        self._gc_was_enabled = False
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """From the serving loop, before the sources start."""
        # A thread doing Python work (the relist check, /v1/aliases, the state
        # file) holds the GIL for up to the switch interval before the loop
        # gets it back: 5 ms by default, 1 ms here, so a DNS answer waits at
        # most that long for one.
        sys.setswitchinterval(self._switch_interval)
        if not self._frozen and gc.isenabled():
            # The initial sync only allocates what lives as long as the process
            # (every cached object, claim and answer): full collections during it
            # find nothing and cost hundreds of milliseconds at 10,000 Services.
            # Off until the sources sync (then frozen and back on), at most
            # ``gc_sync_limit`` seconds.
            gc.disable()
            self._gc_was_enabled = True
            self._timer = asyncio.get_running_loop().call_later(self._gc_sync_limit,
                                                                self._gc_on)

    def synced(self) -> None:
        """Everything allocated by the initial sync lives as long as the
        process: keep it out of the collector's full passes from now on, and
        turn the collector back on."""
        if self._frozen:
            return
        self._frozen = True
        gc.freeze()
        self._gc_on()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._gc_on()

    def _gc_on(self) -> None:
        if self._gc_was_enabled:
            gc.enable()
            self._gc_was_enabled = False


class LameDuck:
    """Fail /readyz and keep answering for ``seconds`` after the stop signal:
    the pod leaves its Service's endpoints and kube-proxy's rules (a second or
    two) while queries already on their way still get answers."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._draining = False

    @property
    def draining(self) -> bool:
        return self._draining

    async def until(self, stop: asyncio.Event) -> None:
        """Wait for ``stop``, then drain (the rest keeps running meanwhile)."""
        await stop.wait()
        if self._seconds <= 0:
            return
        self._draining = True
        log.info("stopping: not ready, still answering DNS for %.1f s", self._seconds)
        await asyncio.sleep(self._seconds)
