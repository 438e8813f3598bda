"""Each replica's watermark in a Lease of its own; the live replicas'
watermarks for the Alias status writer's ``Programmed`` condition.

One small coordination.k8s.io/v1 Lease per replica (``<leader lease>-<pod>``,
labelled ``aliasd.io/replica-of``, the watermark in the annotation
``aliasd.io/serial``), written when the watermark moves and renewed every
third of its duration, at most once a second: the cost is per replica, never
per Alias. A replica that dies stops renewing; its Lease expires and it no
longer holds ``Programmed`` back. Expiry is judged by when this process last
saw the Lease change, as for leader election, so clock skew does not matter.
On shutdown a replica releases its Lease (no holder), so a rollout does not
wait for the expiry either.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes_asyncio.client import ApiClient, CoordinationV1Api

from aliasd.kubeapi import TRANSIENT, call, message
from aliasd.sources.watch import Informer, Obj

log = logging.getLogger(__name__)

LABEL = "aliasd.io/replica-of"
SERIAL = "aliasd.io/serial"
PERIOD = 1.0
"""Seconds between two looks at the watermark: at most one write a second."""
FORGET_AFTER = 3600.0
"""Seconds after its last renewal when the leader deletes a dead replica's Lease."""


def lease_name(group: str, identity: str) -> str:
    """The Lease of replica ``identity`` (a pod name) in the group ``group``
    (the leader Lease's name): a DNS subdomain of at most 253 characters."""
    tail = re.sub(r"[^a-z0-9.-]+", "-", identity.lower()).strip("-.") or "replica"
    return f"{group}-{tail}"[:253].rstrip("-.")


def live_watermarks(leases: Mapping[str, Obj], seen: Mapping[str, float], *,
                    now: float) -> dict[str, int]:
    """holder -> watermark of each Lease held and renewed (``seen``: when this
    process last saw it change, by key) within its duration of ``now``."""
    out: dict[str, int] = {}
    for key, lease in leases.items():
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        raw = ((lease.get("metadata") or {}).get("annotations") or {}).get(SERIAL)
        duration = float(spec.get("leaseDurationSeconds") or 0)
        if not holder or raw is None or now >= seen.get(key, 0.0) + duration:
            continue
        with contextlib.suppress(ValueError):
            out[str(holder)] = int(raw)
    return out


def _trim(lease: Obj) -> Obj:
    meta = lease.get("metadata") or {}
    return {"metadata": {k: meta[k] for k in ("name", "namespace", "resourceVersion",
                                              "annotations") if k in meta},
            "spec": dict(lease.get("spec") or {})}


def _micro_time(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ReplicaLeases:
    """Publishes this replica's watermark and hands the live replicas' ones to
    ``on_replicas`` (see the module)."""

    name = "replica-leases"

    def __init__(self, api: ApiClient, *, namespace: str, group: str, identity: str,
                 duration: float, watermark: Callable[[], int | None],
                 on_replicas: Callable[[Mapping[str, int]], None],
                 leading: Callable[[], bool], clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self._coord = CoordinationV1Api(api)
        self._namespace, self._group, self._identity = namespace, group, identity
        self._name = lease_name(group, identity)
        self._duration = duration
        self._watermark = watermark
        self._on_replicas = on_replicas
        self._leading = leading
        self._clock = clock
        self._mine: Obj | None = None  # the Lease as last written
        self._published: int | None = None
        self._written_at = 0.0
        self._seen: dict[str, float] = {}  # Lease key -> when it last changed here
        self._live: dict[str, int] | None = None
        self.error: str | None = None
        self._informer = Informer(
            f"leases/{namespace}",
            functools.partial(self._coord.list_namespaced_lease, namespace,
                              label_selector=f"{LABEL}={group}"),
            on_change=self._changed, transform=_trim)

    def status(self) -> dict[str, Any]:
        return {"lease": f"{self._namespace}/{self._name}", "published": self._published,
                "live": self._live, "error": self.error}

    def _changed(self, key: str, old: Obj | None, new: Obj | None) -> None:
        if new is None:
            self._seen.pop(key, None)
        else:
            self._seen[key] = self._clock()

    async def run(self) -> None:
        try:
            await asyncio.gather(self._informer.run(), self._loop())
        finally:
            await asyncio.shield(self._release())

    async def _loop(self) -> None:
        while True:
            await self._publish()
            if self._informer.synced:
                live = live_watermarks(self._informer.items, self._seen, now=self._clock())
                if live != self._live:
                    self._live = live
                    self._on_replicas(live)
                if self._leading():
                    await self._forget()
            await asyncio.sleep(PERIOD)

    async def _publish(self) -> None:
        mark = self._watermark()
        if mark is None:  # not caught up yet: confirms nothing
            return
        due = self._clock() - self._written_at >= self._duration / 3
        if mark == self._published and not due:
            return
        try:
            await self._write(mark)
            self.error = None
        except (LeaseWriteError, *TRANSIENT) as e:
            if self.error is None:
                log.warning("replica Lease: %s", e)
            self.error = str(e)[:300]

    async def _write(self, mark: int | None) -> None:
        now = _micro_time(dt.datetime.now(dt.UTC))
        spec = {"holderIdentity": self._identity if mark is not None else None,
                "leaseDurationSeconds": max(1, round(self._duration)), "renewTime": now}
        annotations = {SERIAL: str(mark)} if mark is not None else {}
        if self._mine is None:
            status, lease = await call(self._coord.read_namespaced_lease, self._name,
                                       self._namespace)
            if status == 404:
                body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                        "metadata": {"name": self._name, "namespace": self._namespace,
                                     "labels": {LABEL: self._group},
                                     "annotations": annotations},
                        "spec": {**spec, "acquireTime": now}}
                status, lease = await call(self._coord.create_namespaced_lease,
                                           self._namespace, body)
                if status >= 300:
                    raise LeaseWriteError(f"create Lease {self._name}: {message(status, lease)}")
                self._mine, self._published, self._written_at = lease, mark, self._clock()
                return
            if status >= 300:
                raise LeaseWriteError(f"read Lease {self._name}: {message(status, lease)}")
            self._mine = lease
        lease = self._mine
        meta = lease.setdefault("metadata", {})
        meta.setdefault("labels", {})[LABEL] = self._group
        meta["annotations"] = {**(meta.get("annotations") or {}), **annotations}
        if mark is None:
            meta["annotations"].pop(SERIAL, None)
        lease.setdefault("spec", {}).update(spec)
        status, body = await call(self._coord.replace_namespaced_lease, self._name,
                                  self._namespace, lease)
        if status >= 300:
            self._mine = None  # 409: changed elsewhere; read it again next time
            raise LeaseWriteError(f"update Lease {self._name}: {message(status, body)}")
        self._mine, self._published, self._written_at = body, mark, self._clock()

    async def _forget(self) -> None:
        """The leader deletes the Leases of replicas gone for an hour (a
        rollout leaves one behind per old pod)."""
        now = dt.datetime.now(dt.UTC)
        for lease in list(self._informer.items.values()):
            meta, spec = lease.get("metadata") or {}, lease.get("spec") or {}
            renew = spec.get("renewTime")
            if not isinstance(renew, str) or meta.get("name") == self._name:
                continue
            age = (now - dt.datetime.fromisoformat(renew.replace("Z", "+00:00"))).total_seconds()
            if age > FORGET_AFTER:
                with contextlib.suppress(*TRANSIENT):
                    await call(self._coord.delete_namespaced_lease, meta["name"],
                               self._namespace)

    async def _release(self) -> None:
        """No holder: the other replicas stop waiting for this one at once."""
        if self._mine is None:
            return
        try:
            await self._write(None)
        except (LeaseWriteError, *TRANSIENT) as e:
            log.warning("could not release replica Lease %s: %s", self._name, e)


class LocalReplica:
    """Without leader election (one replica): its own watermark is the only one."""

    name = "replica-self"

    def __init__(self, *, identity: str, watermark: Callable[[], int | None],
                 on_replicas: Callable[[Mapping[str, int]], None]) -> None:
        self._identity = identity
        self._watermark = watermark
        self._on_replicas = on_replicas
        self._last: int | None = None

    def status(self) -> dict[str, Any]:
        return {"published": self._last}

    async def run(self) -> None:
        # Heard at once: there is no other replica (so a new answer is
        # Programmed as it is written, by the replica that serves it).
        self._on_replicas({})
        while True:
            mark = self._watermark()
            if mark is not None and mark != self._last:
                self._last = mark
                self._on_replicas({self._identity: mark})
            await asyncio.sleep(PERIOD)


class LeaseWriteError(Exception):
    """The API server refused a replica Lease request."""
