"""The relist checker: level-triggered for correctness. After a relist (a
list after the first, when watch events may have been missed) the engine's
snapshot is compared, off the loop, with one built from scratch
(``resolver.build_keyed``); a difference is a bug, logged, counted, and
repaired by feeding every claim to a fresh engine."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Iterator, Mapping

from prometheus_client.core import CounterMetricFamily

from aliasd import resolver
from aliasd.engine import differences
from aliasd.model import AliasClaim, Check
from aliasd.runtime.committer import Committer
from aliasd.runtime.inbox import Inbox
from aliasd.zone import Snapshot
from aliasd.zoneconfig import ZoneConfig

log = logging.getLogger(__name__)


class RelistChecker:
    """Checks after each relist the inbox reports, once things have settled."""

    def __init__(self, inbox: Inbox, committer: Committer, *, zones: ZoneConfig,
                 settle: float) -> None:
        self._inbox = inbox
        self._committer = committer
        self._zones = zones
        self._settle = settle
        self.failures = 0

    async def run(self) -> None:
        while True:
            await self._inbox.wait_relist()  # relists meanwhile: one more check
            await asyncio.sleep(self._settle)  # let the relist settle
            if not self._committer.settled:
                self._inbox.relisted()  # a commit is due first: look again later
                continue
            await self.check()

    async def check(self) -> bool:
        """Compare the served snapshot with a build from scratch; on a
        difference, reset the engine. Returns whether they differed."""
        engine = self._inbox.engine
        claims, annotations = engine.claims, engine.annotations
        unhealthy, holds = engine.unhealthy, engine.holds
        snap = engine.result.snapshot
        diff = await asyncio.to_thread(_check, claims, annotations, unhealthy, holds,
                                       self._zones, snap)
        engine = self._inbox.engine
        if not diff or engine.claims is not claims or engine.annotations is not annotations \
                or engine.unhealthy is not unhealthy or engine.holds is not holds:
            return False  # equal, or changed meanwhile (the next relist checks that)
        self.failures += 1
        log.error("the incremental snapshot %d differs from a build from scratch (%d "
                  "differences, first: %s); rebuilding it", snap.serial, len(diff),
                  diff[0][:300])
        self._inbox.reset()
        self._committer.commit()
        return True

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            "aliasd_check_failures", "Relist checks that found the incremental snapshot "
            "differing from a build from scratch (a bug; the engine is rebuilt)",
            value=self.failures)


def _check(claims: Mapping[str, tuple[AliasClaim, ...]], annotations: Mapping[str, str],
           unhealthy: frozenset[Check], holds: Mapping[str, resolver.Hold], zones: ZoneConfig,
           snapshot: Snapshot) -> list[str]:
    # What the build allocates is garbage once compared, freed by reference
    # counting. A collection during it would only scan it, holding the GIL
    # against the loop the whole pass (two gen2 passes, 59 and 95 ms, during
    # one check of 10,000 claims): the collector stays off meanwhile.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        scratch = resolver.build_keyed(claims, config=zones, serial=snapshot.serial,
                                       ready=snapshot.ready, annotations=annotations,
                                       unhealthy=unhealthy, holds=holds)
        return differences(snapshot, scratch.snapshot)
    finally:
        if was_enabled:
            gc.enable()
