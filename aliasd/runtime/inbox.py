"""What the sources hand to the engine: one object's claims, a Namespace's
name policy, or word that a whole-state source (the aliases file, the
overrides) changed. Cheap and synchronous: a watch event costs one
``Engine.set``; the committer (``aliasd.runtime.committer``) commits later,
debounced."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily

from aliasd.engine import Engine
from aliasd.model import AliasClaim, Check


class Inbox:
    """Owns the engine between commits; the committer takes what is waiting."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._dirty = asyncio.Event()
        self._whole: set[str] = set()  # sources whose whole state changed
        self._report = False  # problems changed, not claims: run the reporters
        self._relisted = asyncio.Event()
        self._claim_updates = 0
        self._policy_updates = 0
        self._health_updates = 0

    @property
    def engine(self) -> Engine:
        return self._engine

    # ---- the sources' side -----------------------------------------------------

    def update_claims(self, key: str, claims: list[AliasClaim]) -> None:
        """One object's claims changed (``source\\0key``)."""
        if self._engine.set(key, claims):
            self._claim_updates += 1
            self._dirty.set()

    def update_namespace(self, namespace: str, allowed_names: str | None) -> None:
        """A Namespace's ``aliasd.io/allowed-names`` changed (None: absent):
        only that namespace's claims are validated again."""
        if self._engine.set_namespace(namespace, allowed_names):
            self._policy_updates += 1
            self._dirty.set()

    def update_health(self, check: Check, healthy: bool) -> None:
        """A target's health changed (a prober's verdict, after hysteresis).
        The reporters run even when no answer changes (a standby target's
        health is still in its Alias's status)."""
        if self._engine.set_health(check, healthy):
            self._health_updates += 1
            self._report = True
            self._dirty.set()

    def notifier(self, source: str) -> Callable[[], None]:
        """``on_change`` for a source that hands over its whole state (``claims``)."""
        def changed() -> None:
            self._whole.add(source)
            self._dirty.set()
        return changed

    def changed(self) -> None:
        """Something besides claims changed (a source synced): commit."""
        self._dirty.set()

    def problems_changed(self) -> None:
        """A source's problems changed (not its claims): run the reporters."""
        self._report = True
        self._dirty.set()

    def relisted(self) -> None:
        """A source listed again after its first list: events may have been
        missed, so the relist checker compares the engine with a build from
        scratch."""
        self._relisted.set()

    async def wait_relist(self) -> None:
        """Until the next relist (for the relist checker)."""
        await self._relisted.wait()
        self._relisted.clear()

    # ---- the committer's side --------------------------------------------------

    @property
    def waiting(self) -> bool:
        """Whether a commit is due."""
        return self._dirty.is_set()

    async def wait(self) -> None:
        await self._dirty.wait()

    def take(self) -> tuple[set[str], bool]:
        """What is waiting: the whole-state sources that changed, and whether
        the reporters must run though no claim changed."""
        self._dirty.clear()
        whole, self._whole = self._whole, set()
        report, self._report = self._report, False
        return whole, report

    def reset(self) -> None:
        """The safety net: a fresh engine fed every claim (should never run)."""
        old = self._engine
        self._engine = Engine(old.config, serial=old.serial, track_changes=old.track_changes)
        self._engine.holds = old.holds  # what went away before is not in the claims
        for namespace, allowed_names in old.annotations.items():
            self._engine.set_namespace(namespace, allowed_names)
        for key, claims in old.claims.items():
            self._engine.set(key, claims)
        for check in old.unhealthy:
            self._engine.set_health(check, False)
        self._engine.changed_keys |= old.changed_keys  # gone since the last save
        self._dirty.set()

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily("aliasd_claim_updates", "Objects whose claims changed",
                                  value=self._claim_updates)
        yield CounterMetricFamily("aliasd_policy_updates",
                                  "Namespaces whose aliasd.io/allowed-names changed",
                                  value=self._policy_updates)
        yield CounterMetricFamily("aliasd_health_updates",
                                  "Target health changes handed to the engine",
                                  value=self._health_updates)
