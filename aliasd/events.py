"""Kubernetes Events: every Event aliasd records is built and sent here.

* :class:`EventSink` creates one Event on one object, in the background (the
  caller never waits for the API server), within an :class:`EventBudget`: an
  object that keeps producing problems (a controller rewriting a bad
  annotation in a loop) cannot flood the API server with Events;
* :class:`EventRecorder` turns each reporter's current problems (the engine's
  conflicts and invalid claims, the Corefile patcher's) into Events, each one
  recorded once while it persists;
* :func:`instance` is this replica's name, computed once by the composition
  root for the Events' ``reportingInstance`` and the leader lease.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio.client import ApiClient, CoreV1Api

from aliasd.kubeapi import TRANSIENT, call, message
from aliasd.model import Owner, utc_timestamp
from aliasd.resolver import Result
from aliasd.sources.mapping import Problem

log = logging.getLogger(__name__)

COMPONENT = "aliasd"
API_VERSIONS = {"Service": "v1", "ConfigMap": "v1", "ServiceEntry": "networking.istio.io/v1",
                "Namespace": "v1", "Alias": "aliasd.io/v1alpha1"}
"""Kinds aliasd records Events on."""
CLUSTER_EVENTS_NAMESPACE = "default"
"""Where Events about cluster-scoped objects (a Namespace) go, as for Nodes."""
MAX_MESSAGE = 1024
OBJECT_BURST = 10
"""Events per object and reason at once (client-go's spam filter: 25 per object)..."""
OBJECT_EVERY = 300.0
"""...then one per this many seconds (client-go: one per 5 minutes)."""
GLOBAL_BURST = 100
"""Events of the whole process at once..."""
GLOBAL_EVERY = 1.0
"""...then one per this many seconds."""
MAX_TRACKED = 4096
"""Objects (and recorded Events) remembered for the budget; the least recent go first."""


def instance() -> str:
    """This replica: the pod name (downward API ``POD_NAME``), else the host name."""
    return os.environ.get("POD_NAME") or socket.gethostname()


@dataclass(frozen=True)
class Event:
    """One Event to record, on ``owner`` (its kind one of ``API_VERSIONS``)."""

    owner: Owner
    reason: str
    message: str
    warning: bool = True


def event_body(event: Event, *, now: float, instance: str) -> dict[str, Any]:
    """The core/v1 Event object for ``event``."""
    o = event.owner
    stamp = utc_timestamp(now)
    namespace = o.namespace or CLUSTER_EVENTS_NAMESPACE
    return {
        "metadata": {"generateName": f"{o.name}.", "namespace": namespace},
        "involvedObject": {"kind": o.kind, "namespace": o.namespace, "name": o.name,
                           "uid": o.uid, "apiVersion": API_VERSIONS[o.kind]},
        "reason": event.reason, "message": event.message[:MAX_MESSAGE],
        "type": "Warning" if event.warning else "Normal",
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT, "reportingInstance": instance,
        "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
    }


class Budget:
    """A token bucket: ``burst`` at once, then one more every ``every`` seconds.
    :meth:`take` drops what finds no token (Events, log lines);
    :meth:`delay` queues it (the Alias status writes)."""

    def __init__(self, burst: int, every: float, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.burst, self.every, self.clock = burst, every, clock
        self.tokens = float(burst)
        self.last = clock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(float(self.burst), self.tokens + (now - self.last) / self.every)
        self.last = now

    def take(self) -> bool:
        """Take a token if there is one."""
        self._refill()
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def delay(self) -> float:
        """Take a token, there or owed: the seconds to wait before using it
        (0: now)."""
        self._refill()
        self.tokens -= 1
        return 0.0 if self.tokens >= 0 else -self.tokens * self.every


@dataclass(frozen=True)
class Admitted:
    """An Event the budget lets through: its message (saying how many were
    left out before it), and the Event already recorded with that very
    message (namespace, name, count), which is counted instead of a new one."""

    message: str
    recorded: tuple[str, str, int] | None = None


class EventBudget:
    """client-go's EventCorrelator, the parts aliasd needs: a token bucket per
    object and reason (its spam filter) and one for the process; an Event
    repeating one already recorded raises that one's ``count`` instead of
    creating another (its logger). What the buckets leave out is counted, and
    said in the next Event of that object and reason."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic,
                 object_burst: int = OBJECT_BURST, object_every: float = OBJECT_EVERY,
                 global_burst: int = GLOBAL_BURST, global_every: float = GLOBAL_EVERY) -> None:
        self._clock = clock
        self._per = (object_burst, object_every)
        self._global = Budget(global_burst, global_every, clock=clock)
        self._objects: OrderedDict[tuple[str, str], Budget] = OrderedDict()
        self._left_out: Counter[tuple[str, str]] = Counter()
        self._recorded: OrderedDict[tuple[str, str, str], tuple[str, str, int]] = OrderedDict()

    def admit(self, event: Event) -> Admitted | None:
        """What to record for ``event``; None: left out (over a budget)."""
        key = (event.owner.uid or event.owner.ref, event.reason)
        bucket = self._objects.pop(key, None) or Budget(*self._per, clock=self._clock)
        self._objects[key] = bucket  # the most recent last
        _trim(self._objects)
        if not (bucket.take() and self._global.take()):
            self._left_out[key] += 1
            if len(self._left_out) > MAX_TRACKED:
                self._left_out.pop(next(iter(self._left_out)))
            return None
        recorded = self._recorded.get((*key, event.message))
        text = event.message
        if left := self._left_out.pop(key, 0):
            text += (f" (and {left} more {event.reason} Events on this object before it, "
                     f"not recorded: at most {self._per[0]} at once, then one per "
                     f"{self._per[1]:g} s)")
            recorded = None
        return Admitted(text, recorded)

    def recorded(self, event: Event, namespace: str, name: str, count: int) -> None:
        """``event`` is recorded as Event ``namespace``/``name`` with ``count``."""
        key = (event.owner.uid or event.owner.ref, event.reason, event.message)
        self._recorded.pop(key, None)
        self._recorded[key] = (namespace, name, count)
        _trim(self._recorded)

    def forget(self, event: Event) -> None:
        """The Event recorded for ``event`` is gone (expired): create a new one."""
        self._recorded.pop((event.owner.uid or event.owner.ref, event.reason, event.message),
                           None)


def _trim(d: OrderedDict[Any, Any]) -> None:
    while len(d) > MAX_TRACKED:
        d.popitem(last=False)


class EventSink:
    """Sends Events in the background, one task each, within ``budget``;
    ``results`` counts them: created, counted (an Event already recorded
    repeated: its ``count`` raised), left_out (over the budget), failed."""

    def __init__(self, api: ApiClient, *, instance: str, results: Counter[str],
                 budget: EventBudget | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._core = CoreV1Api(api)
        self._instance = instance
        self._results = results
        self._budget = budget or EventBudget()
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()

    def send(self, event: Event) -> None:
        """Record ``event`` within the budget (from the event loop; the caller
        does not wait)."""
        admitted = self._budget.admit(event)
        if admitted is None:
            self._results["left_out"] += 1
            log.debug("Event %s on %s left out: over the budget", event.reason,
                      event.owner.ref)
            return
        self._start(event, admitted)

    def record(self, event: Event) -> None:
        """Record ``event`` whatever the budget: for a trail that keeps its own
        (the override trail records every authorized write, refusals within
        a budget of their own)."""
        self._start(event, Admitted(event.message))

    def _start(self, event: Event, admitted: Admitted) -> None:
        task = asyncio.get_running_loop().create_task(self._send(event, admitted))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, event: Event, admitted: Admitted) -> None:
        now = self._clock()
        try:
            if admitted.recorded is not None:
                namespace, name, count = admitted.recorded
                status, answer = await call(
                    self._core.patch_namespaced_event, name, namespace,
                    {"count": count + 1, "lastTimestamp": utc_timestamp(now)},
                    _content_type="application/merge-patch+json")
                if status < 300:
                    self._budget.recorded(event, namespace, name, count + 1)
                    self._results["counted"] += 1
                    return
                if status != 404:
                    self._failed(event, message(status, answer))
                    return
                self._budget.forget(event)  # expired (the API server's --event-ttl)
            body = event_body(Event(event.owner, event.reason, admitted.message, event.warning),
                              now=now, instance=self._instance)
            status, answer = await call(self._core.create_namespaced_event,
                                        body["metadata"]["namespace"], body)
            if status >= 300:
                self._failed(event, message(status, answer))
                return
            self._results["created"] += 1
            meta = answer.get("metadata") or {}
            if admitted.message == event.message and meta.get("name"):
                self._budget.recorded(event, body["metadata"]["namespace"], meta["name"], 1)
        except TRANSIENT as e:
            self._failed(event, str(e).splitlines()[0])

    def _failed(self, event: Event, why: str) -> None:
        self._results["failed"] += 1
        log.warning("could not record Event %s on %s: %s", event.reason, event.owner.ref, why)


Send = Callable[[Event], None]


class EventRecorder:
    """Kubernetes Events for problems, each emitted once while it persists.

    One recorder for the process; each reporter (the engine's problems, the
    Corefile patcher's) hands it the whole set of its current problems under
    its own name, so one reporter's set never clears another's."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._active: dict[str, set[tuple[str, str, str, str]]] = {}

    def sync(self, problems: list[Problem], *, reporter: str = "resolver") -> None:
        """Emit Events for ``reporter``'s problems not in its previous call."""
        current: dict[tuple[str, str, str, str], Problem] = {}
        for p in problems:
            if p.owner.kind not in API_VERSIONS or not (
                    p.owner.namespace or p.owner.kind == "Namespace"):
                continue
            current[(p.owner.uid or p.owner.ref, p.owner.ref, p.reason, p.message)] = p
        active = self._active.get(reporter, set())
        for k, p in current.items():
            if k not in active:
                log.warning("%s %s: %s", p.owner.ref, p.reason, p.message)
                self._send(Event(p.owner, p.reason, p.message))
        self._active[reporter] = set(current)

    def reporter(self, name: str) -> Callable[[list[Problem]], None]:
        """``sync`` for the reporter ``name``."""
        return lambda problems: self.sync(problems, reporter=name)


def resolver_problems(result: Result) -> list[Problem]:
    """Conflicts (on the loser), claims an HTTP override shadows (on the
    shadowed object: its owner learns why its name answers something else)
    and invalid claims, as Event-able problems."""
    out = []
    for c in result.overridden:
        out.append(Problem(c.loser, "AliasOverridden", (
            f"alias {c.name} answers from an HTTP override ({c.winner.name}), not this "
            "claim, until the override is deleted; the overrides ConfigMap's Events say "
            "who set it")))
    for c in result.conflicts:
        if c.until is not None:
            out.append(Problem(c.loser, "AliasReserved", (
                f"alias {c.name} is reserved for namespace {c.winner.namespace} until "
                f"{utc_timestamp(c.until)}: its claim ({c.winner.ref}) went away, and a "
                "claim from another namespace takes the name only once the hold "
                "(--name-hold) ends without that namespace claiming it again")))
            continue
        out.append(Problem(c.loser, "AliasConflict",
                           f"alias {c.name} is already served for {c.winner.ref} (the older "
                           f"claim wins); this claim takes over when that one goes away"))
    for inv in result.invalid:
        out.append(Problem(inv.claim.owner, inv.event, inv.reason))
    return out
