"""Kubernetes Events: every Event aliasd records is built and sent here.

* :class:`EventSink` creates one Event on one object, in the background (the
  caller never waits for the API server);
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


class EventSink:
    """Sends Events in the background, one task each; a failure is logged."""

    def __init__(self, api: ApiClient, *, instance: str,
                 clock: Callable[[], float] = time.time) -> None:
        self._core = CoreV1Api(api)
        self._instance = instance
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()

    def send(self, event: Event) -> None:
        """Record ``event`` (from the event loop; the caller does not wait)."""
        task = asyncio.get_running_loop().create_task(self._send(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, event: Event) -> None:
        body = event_body(event, now=self._clock(), instance=self._instance)
        ref = event.owner.ref
        try:
            status, answer = await call(self._core.create_namespaced_event,
                                        body["metadata"]["namespace"], body)
            if status >= 300:
                log.warning("could not record Event %s on %s: %s", event.reason, ref,
                            message(status, answer))
        except TRANSIENT as e:
            log.warning("could not record Event %s on %s: %s", event.reason, ref,
                        str(e).splitlines()[0])


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
    """Conflicts (on the loser) and invalid claims, as Event-able problems."""
    out = []
    for c in result.conflicts:
        out.append(Problem(c.loser, "AliasConflict",
                           f"alias {c.name} is already served for {c.winner.ref} (the older "
                           f"claim wins); this claim takes over when that one goes away"))
    for inv in result.invalid:
        out.append(Problem(inv.claim.owner, inv.event, inv.reason))
    return out
