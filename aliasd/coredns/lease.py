"""Leader election with a coordination.k8s.io/v1 Lease (client-go's shape):
every replica serves DNS, only the Lease holder writes the cluster DNS config.

Expiry is judged by when *this* process last saw the Lease record change, not
by the holder's clock, so clock skew between nodes cannot cause two leaders.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from kubernetes_asyncio.client import ApiClient, CoordinationV1Api

from aliasd.kubeapi import TRANSIENT, call, message

log = logging.getLogger(__name__)


def _micro_time(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


DEFAULT_DURATION = 15.0
"""Seconds a Lease is held without renewal (``--leader-lease-duration``)."""


class LeaderElector:
    def __init__(self, api: ApiClient, *, namespace: str, name: str, identity: str,
                 duration: float = DEFAULT_DURATION, clock: Callable[[], float] = time.monotonic,
                 on_change: Callable[[bool], None] = lambda leading: None) -> None:
        self._coord = CoordinationV1Api(api)
        self._namespace, self._name, self.identity = namespace, name, identity
        self._duration = duration
        self._clock = clock
        self._on_change = on_change
        self.leading = False
        self.holder: str | None = None
        self.error: str | None = None
        self._observed: tuple[Any, Any] = (None, None)
        self._observed_at = 0.0
        self._renewed_at = 0.0

    @property
    def lease_ref(self) -> str:
        return f"{self._namespace}/{self._name}"

    async def try_acquire_or_renew(self) -> bool:
        now = _micro_time(dt.datetime.now(dt.UTC))
        status, lease = await call(self._coord.read_namespaced_lease, self._name, self._namespace)
        if status == 404:
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self._name, "namespace": self._namespace},
                    "spec": {"holderIdentity": self.identity,
                             "leaseDurationSeconds": max(1, round(self._duration)),
                             "acquireTime": now, "renewTime": now, "leaseTransitions": 0}}
            status, created = await call(self._coord.create_namespaced_lease, self._namespace,
                                         body)
            if status == 409:  # someone else created it first
                return False
            if status >= 300:
                raise LeaseError(f"create Lease {self.lease_ref}: {message(status, created)}")
            self._seen(self.identity, now)
            return True
        if status >= 300:
            raise LeaseError(f"read Lease {self.lease_ref}: {message(status, lease)}")
        spec = lease.setdefault("spec", {})
        holder = spec.get("holderIdentity") or None
        self._seen(holder, spec.get("renewTime"))
        duration = spec.get("leaseDurationSeconds") or self._duration
        if holder not in (None, self.identity) and self._clock() < self._observed_at + duration:
            return False
        if holder != self.identity:
            spec["acquireTime"] = now
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        spec.update(holderIdentity=self.identity, renewTime=now,
                    leaseDurationSeconds=max(1, round(self._duration)))
        status, body = await call(self._coord.replace_namespaced_lease, self._name,
                                  self._namespace, lease)
        if status == 409:  # changed since we read it: somebody else renewed or took it
            return False
        if status >= 300:
            raise LeaseError(f"update Lease {self.lease_ref}: {message(status, body)}")
        self._seen(self.identity, now)
        return True

    def _seen(self, holder: str | None, renew: Any) -> None:
        self.holder = holder
        if (holder, renew) != self._observed:
            self._observed = (holder, renew)
            self._observed_at = self._clock()

    def _set(self, leading: bool) -> None:
        if leading != self.leading:
            self.leading = leading
            if leading:
                log.info("became leader (Lease %s, identity %s)", self.lease_ref, self.identity)
            else:
                log.info("no longer leader (Lease %s now held by %s)", self.lease_ref,
                         self.holder or "nobody")
            self._on_change(leading)

    async def run(self) -> None:
        """Acquire, then renew every third of the lease duration; step down when
        a renewal has not succeeded for two thirds of it (client-go's deadlines)."""
        period = self._duration / 3
        while True:
            try:
                ok = await self.try_acquire_or_renew()
                self.error = None
            except (LeaseError, *TRANSIENT) as e:
                ok = False
                if self.error is None:
                    log.warning("leader election: %s", e)
                self.error = str(e)[:300]
            if ok:
                self._renewed_at = self._clock()
            self._set(ok or (self.leading
                             and self._clock() - self._renewed_at < self._duration * 2 / 3))
            await asyncio.sleep(period)

    async def release(self) -> None:
        """Give the Lease up on shutdown so another replica takes over at once."""
        if not self.leading:
            return
        self._set(False)
        try:
            status, lease = await call(self._coord.read_namespaced_lease, self._name,
                                       self._namespace)
            if status != 200 or lease.get("spec", {}).get("holderIdentity") != self.identity:
                return
            lease["spec"].update(holderIdentity=None, leaseDurationSeconds=1)
            await call(self._coord.replace_namespaced_lease, self._name, self._namespace, lease)
        except TRANSIENT as e:
            log.warning("could not release Lease %s: %s", self.lease_ref, e)


class Election:
    """A leader election run on its own, as a component (the CoreDNS patcher
    runs its elector itself; without the wiring, the Alias status writer still
    needs one leader)."""

    name = "leader-election"

    def __init__(self, elector: LeaderElector) -> None:
        self.elector = elector

    def status(self) -> dict[str, Any]:
        return {"leader": self.elector.leading, "error": self.elector.error}

    async def run(self) -> None:
        try:
            await self.elector.run()
        finally:
            await asyncio.shield(self.elector.release())


class LeaseError(Exception):
    """The API server refused a Lease request (other than a lost race)."""


def live_holder(lease: dict[str, Any], *, now: dt.datetime) -> str | None:
    """The identity holding ``lease`` if its last renewal is recent enough for the
    holder to be alive (twice the lease duration, to allow for clock skew), else None."""
    spec = lease.get("spec") or {}
    holder, renew = spec.get("holderIdentity"), spec.get("renewTime")
    if not holder or not renew:
        return None
    if isinstance(renew, str):
        renew = dt.datetime.fromisoformat(renew.replace("Z", "+00:00"))
    duration = float(spec.get("leaseDurationSeconds") or 15)
    return str(holder) if (now - renew).total_seconds() < 2 * duration else None


def handover_left(lease: dict[str, Any], *, now: dt.datetime,
                  duration: float = DEFAULT_DURATION) -> float:
    """Seconds in which another replica may still take ``lease`` after its
    holder released it (no holder, last renewed less than ``duration`` ago:
    the release comes at most a third of it after that renewal, and candidates
    retry every third), else 0."""
    spec = lease.get("spec") or {}
    renew = spec.get("renewTime")
    if spec.get("holderIdentity") or not renew:
        return 0.0
    if isinstance(renew, str):
        renew = dt.datetime.fromisoformat(renew.replace("Z", "+00:00"))
    return max(0.0, duration - (now - renew).total_seconds())


async def read_lease(api: ApiClient, *, namespace: str, name: str) -> dict[str, Any] | None:
    """The Lease NAMESPACE/NAME (None: there is none)."""
    status, lease = await call(CoordinationV1Api(api).read_namespaced_lease, name, namespace)
    if status == 404:
        return None
    if status != 200:
        raise LeaseError(f"read Lease {namespace}/{name}: {message(status, lease)}")
    return dict(lease)


HANDOVER_POLL = 0.5
"""Seconds between two reads of a just-released Lease in :func:`settled_holder`."""


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def settled_holder(
        read: Callable[[], Awaitable[dict[str, Any] | None]], *,
        on_wait: Callable[[float], None] = lambda left: None,
        clock: Callable[[], dt.datetime] = _utcnow,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> str | None:
    """The identity of the live holder of the Lease that ``read`` returns, None
    when nobody holds it. A Lease just released (a rollout, a replica stopping)
    may be taken by another replica within :data:`DEFAULT_DURATION`: this waits
    to see, calling ``on_wait(seconds_left)`` once when it starts waiting.
    :class:`LeaseError` when the Lease cannot be read."""
    waiting = False
    while True:
        lease = await read()
        if lease is None:
            return None
        now = clock()
        holder = live_holder(lease, now=now)
        if holder is not None:
            return holder
        left = handover_left(lease, now=now)
        if left <= 0:
            return None
        if not waiting:
            on_wait(left)
            waiting = True
        await sleep(min(left, HANDOVER_POLL))
