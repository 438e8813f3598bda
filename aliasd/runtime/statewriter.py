"""The state writer: reads the state file at start and keeps writing the
claims of the last good snapshot to it.

Only the objects whose claims changed are encoded, on the loop, a slice per
turn (a change costs what it changed); the file is written off the loop, at
most once per ``interval``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping

from aliasd import resolver
from aliasd.engine import Engine
from aliasd.model import AliasClaim, utc_timestamp
from aliasd.state import State, StateFile

log = logging.getLogger(__name__)

STAGE_SLICE = 64  # objects encoded for the state file per loop turn (~1 ms)


class StateWriter:
    """Loads ``file`` once, then writes each new snapshot's changed objects."""

    def __init__(self, file: StateFile, *, clock: Callable[[], float],
                 interval: float) -> None:
        self._file = file
        self._clock = clock
        self._interval = interval
        self._dirty = asyncio.Event()
        self._engine: Engine | None = None

    def load(self) -> State | None:
        """Read the state file: its claims are served until the sources sync.
        A malformed file is logged and ignored (the sources still work)."""
        try:
            state = self._file.load()
        except ValueError as e:
            log.error("%s; starting without it", e)
            return None
        if state is not None and state.claims:
            log.info("state file %s: %d claims, written at %s", self._file.path,
                     len(state.claims), utc_timestamp(state.written))
        return state

    def changed(self, engine: Engine) -> None:
        """A new snapshot of ``engine`` is served: write its changed objects."""
        self._engine = engine
        self._dirty.set()

    async def run(self) -> None:
        failed = False
        while True:
            await self._dirty.wait()
            engine = self._engine
            assert engine is not None
            keys = sorted(engine.changed_keys)
            self._file.stage(())  # the file's own claims give way, even to none
            for i in range(0, len(keys), STAGE_SLICE):
                self._stage(engine, keys[i:i + STAGE_SLICE])
                await asyncio.sleep(0)
            # Cleared only now: stopped while staging, the exit saves the rest.
            self._dirty.clear()
            if engine.changed_keys:  # changed while staging: the next round
                self._dirty.set()
            try:
                await asyncio.to_thread(self._file.save, now=self._clock(),
                                        annotations=engine.annotations)
                failed = False
            except OSError as e:
                if not failed:
                    log.error("cannot write the state file %s: %s", self._file.path,
                              e.strerror or e)
                failed = True
            await asyncio.sleep(self._interval)

    def flush(self) -> None:
        """At exit: save the last change if it is not saved yet."""
        engine = self._engine
        if engine is None or not self._dirty.is_set():
            return
        with contextlib.suppress(OSError):  # the last change, before exiting
            self._stage(engine, sorted(engine.changed_keys))
            self._file.save(now=self._clock(), annotations=engine.annotations)

    def _stage(self, engine: Engine, keys: Iterable[str]) -> None:
        """Hand objects' claims, as the engine has them now, to the state file
        (an object that changes again is marked again)."""
        keys = list(keys)
        self._file.stage(stored_claims(engine.claims, engine.invalid, keys))
        engine.changed_keys.difference_update(keys)


def stored_claims(claims: Mapping[str, tuple[AliasClaim, ...]],
                  invalid: Mapping[str, tuple[resolver.Invalid, ...]],
                  keys: Iterable[str]) -> list[tuple[str, list[AliasClaim]]]:
    """The claims of these objects to store, but none the name policy denies
    (a denied claim is never served; the state file keeps the Namespaces'
    policies too, so the stored claims are validated at start as they were)."""
    stored = []
    for key in keys:
        denied = {i.claim for i in invalid.get(key, ()) if i.event == resolver.NOT_ALLOWED}
        stored.append((key, [c for c in claims.get(key, ()) if c not in denied]))
    return stored
