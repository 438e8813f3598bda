"""Kubernetes sources: Services, EndpointSlices and Istio ServiceEntries.

Each resource is list-watched into a cache of raw objects (``watch.Informer``).
Per-Service claims are recomputed only when that Service or its slices change;
ServiceEntry claims are recomputed from the caches on every rebuild, so an
endpoint naming a cluster Service follows that Service live.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kubernetes_asyncio.client import ApiClient, CoreV1Api, CustomObjectsApi, DiscoveryV1Api
from kubernetes_asyncio.client.exceptions import ApiException

from aliasd.kubeapi import make_client, split_ref
from aliasd.model import AliasClaim, utc_timestamp
from aliasd.registry import Result, ZoneConfig, best_zone
from aliasd.sources import mapping
from aliasd.sources.mapping import Problem
from aliasd.sources.overrides import ConfigMapOverrides
from aliasd.sources.watch import Informer, NotFound, Obj

if TYPE_CHECKING:
    from aliasd.app import App

log = logging.getLogger(__name__)

ISTIO_GROUP = "networking.istio.io"
SE_VERSIONS = ("v1", "v1beta1", "v1alpha3")  # preference order
CRD_POLL_SECONDS = 5.0
API_VERSIONS = {"Service": "v1", "ConfigMap": "v1", "ServiceEntry": f"{ISTIO_GROUP}/v1"}
"""Kinds aliasd records Events on."""


class KubeSource:
    name = "kubernetes"

    def __init__(self, api: ApiClient, *, zones: ZoneConfig, namespaces: list[str],
                 on_change: Callable[[], None], restarts: Counter[str]) -> None:
        self.api = api
        self.zones = zones
        self.namespaces = namespaces
        self._notify = on_change
        self.restarts = restarts
        # Bumped on every change; ServiceEntry results are cached per generation so
        # ``claims`` and ``problems`` (both read on every rebuild) map each SE once.
        self._generation = 0
        self._se_cache: tuple[int, list[tuple[list[AliasClaim], list[Problem]]]] = (-1, [])
        core, disc = CoreV1Api(api), DiscoveryV1Api(api)
        self.services = self._informers(
            "services", core.list_service_for_all_namespaces, core.list_namespaced_service,
            self._service_changed)
        self.slices = self._informers(
            "endpointslices", disc.list_endpoint_slice_for_all_namespaces,
            disc.list_namespaced_endpoint_slice, self._slice_changed)
        self.se_informers: list[Informer] = []
        # Set once every version was tried and none is served: the source then
        # counts as synced (like an informer, it never goes back to unsynced).
        self.se_seen_absent = False
        self._svc_claims: dict[str, tuple[list[AliasClaim], list[Problem]]] = {}
        self._slices_of: dict[str, dict[str, Obj]] = {}  # "ns/service" -> slices

    def on_change(self) -> None:
        self._generation += 1
        self._notify()

    def _informers(self, name: str, all_ns: Any, one_ns: Any,
                   on_change: Callable[[str, Obj | None, Obj | None], None], *,
                   resource: str | None = None) -> list[Informer]:
        """One informer for all namespaces, or one per ``--namespaces`` entry."""
        def restarted() -> None:
            self.restarts[resource or name] += 1

        if not self.namespaces:
            return [Informer(name, all_ns, on_change=on_change, on_restart=restarted,
                             on_sync=self.on_change)]
        return [Informer(f"{name}/{ns}", functools.partial(one_ns, ns), on_change=on_change,
                         on_restart=restarted, on_sync=self.on_change) for ns in self.namespaces]

    # ---- state for the app ----------------------------------------------------------

    @property
    def synced(self) -> bool:
        se_synced = self.se_seen_absent or (
            bool(self.se_informers) and all(i.synced for i in self.se_informers))
        return all(i.synced for i in self.services + self.slices) and se_synced

    @property
    def error(self) -> str | None:
        for i in self.services + self.slices + self.se_informers:
            if i.error:
                return f"{i.name}: {i.error}"
        return None

    @property
    def claims(self) -> list[AliasClaim]:
        results = [*self._svc_claims.values(), *self._se_results()]
        return [c for claims, _ in results for c in claims]

    @property
    def problems(self) -> list[Problem]:
        results = [*self._svc_claims.values(), *self._se_results()]
        return [p for _, problems in results for p in problems]

    def _se_results(self) -> list[tuple[list[AliasClaim], list[Problem]]]:
        """ServiceEntry claims and problems, recomputed only after a change (an
        endpoint may name a Service, so any change can alter them)."""
        generation, results = self._se_cache
        if generation != self._generation:
            results = [mapping.serviceentry_claims(se, in_zone=self._in_zone,
                                                   services=self._service_targets)
                       for i in self.se_informers for se in i.items.values()]
            self._se_cache = (self._generation, results)
        return results

    def _in_zone(self, host: str) -> bool:
        return best_zone(host.lower().rstrip(".") + ".", self.zones.zones) is not None

    def _service_targets(self, namespace: str, name: str
                         ) -> tuple[tuple[str, ...], str | None] | None:
        k = f"{namespace}/{name}"
        for inf in self.services:
            svc = inf.items.get(k)
            if svc is not None:
                return mapping.service_targets(svc, self._slices_of.get(k, {}).values())
        return None

    # ---- per-event bookkeeping (cheap: only the object that changed) ----------------

    def _recompute_service(self, k: str) -> None:
        svc = next((i.items[k] for i in self.services if k in i.items), None)
        if svc is None:
            self._svc_claims.pop(k, None)
            return
        claims, problems = mapping.service_claims(svc, self._slices_of.get(k, {}).values())
        if claims or problems:
            self._svc_claims[k] = (claims, problems)
        else:
            self._svc_claims.pop(k, None)

    def _service_changed(self, k: str, old: Obj | None, new: Obj | None) -> None:
        self._recompute_service(k)
        self.on_change()

    def _slice_changed(self, k: str, old: Obj | None, new: Obj | None) -> None:
        for obj in (old, new):
            if obj is None:
                continue
            svc = (obj.get("metadata", {}).get("labels") or {}).get(mapping.SERVICE_NAME_LABEL)
            if not svc:
                continue
            sk = f"{obj['metadata'].get('namespace', '')}/{svc}"
            bucket = self._slices_of.setdefault(sk, {})
            if obj is new:
                bucket[k] = new
            else:
                bucket.pop(k, None)
            if not bucket:
                self._slices_of.pop(sk, None)
            self._recompute_service(sk)
        self.on_change()

    def _se_changed(self, k: str, old: Obj | None, new: Obj | None) -> None:
        self.on_change()

    # ---- running ----------------------------------------------------------------------

    async def run(self) -> None:
        await asyncio.gather(*(i.run() for i in self.services + self.slices),
                             self._run_serviceentries())

    async def _run_serviceentries(self) -> None:
        """Follow the ServiceEntry CRD: off while it is absent (logged once),
        on as soon as it appears, off again if it is removed."""
        custom = CustomObjectsApi(self.api)
        absent_logged = False
        while True:
            for version in SE_VERSIONS:
                informers = self._informers(
                    f"serviceentries.{version}",
                    functools.partial(custom.list_cluster_custom_object, ISTIO_GROUP, version,
                                      "serviceentries"),
                    functools.partial(_namespaced_custom, custom, version),
                    self._se_changed, resource="serviceentries")
                self.se_informers = informers
                try:
                    log.info("watching ServiceEntries (%s/%s)", ISTIO_GROUP, version)
                    absent_logged = False
                    await asyncio.gather(*(i.run() for i in informers))
                except NotFound:
                    had = any(i.items for i in informers)
                    self.se_informers = []
                    if had:
                        log.info("ServiceEntry %s no longer served; its aliases are removed",
                                 version)
                        self.on_change()
            self.se_seen_absent = True
            if not absent_logged:
                log.info("ServiceEntry CRD (%s) not installed: ServiceEntry aliases are off "
                         "until it appears", ISTIO_GROUP)
                absent_logged = True
                self.on_change()
            await asyncio.sleep(CRD_POLL_SECONDS)


def _namespaced_custom(custom: CustomObjectsApi, version: str, namespace: str,
                       **kw: Any) -> Any:
    return custom.list_namespaced_custom_object(ISTIO_GROUP, version, namespace,
                                                "serviceentries", **kw)


class EventRecorder:
    """Kubernetes Events for problems, each emitted once while it persists."""

    def __init__(self, api: ApiClient, *, component: str = "aliasd") -> None:
        self.core = CoreV1Api(api)
        self.component = component
        self.instance = os.environ.get("POD_NAME") or socket.gethostname()
        self.active: set[tuple[str, str, str, str]] = set()
        self.tasks: set[asyncio.Task[None]] = set()

    def sync(self, problems: list[Problem]) -> None:
        """Emit Events for problems not seen in the previous call."""
        current: dict[tuple[str, str, str, str], Problem] = {}
        for p in problems:
            if p.owner.kind not in API_VERSIONS or not p.owner.namespace:
                continue
            current[(p.owner.uid or p.owner.ref, p.owner.ref, p.reason, p.message)] = p
        for k, p in current.items():
            if k not in self.active:
                log.warning("%s %s: %s", p.owner.ref, p.reason, p.message)
                task = asyncio.get_running_loop().create_task(self._emit(p))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
        self.active = set(current)

    async def _emit(self, p: Problem) -> None:
        now = utc_timestamp(time.time())
        api_version = API_VERSIONS[p.owner.kind]
        body: Any = {
            "metadata": {"generateName": f"{p.owner.name}.", "namespace": p.owner.namespace},
            "involvedObject": {"kind": p.owner.kind, "namespace": p.owner.namespace,
                               "name": p.owner.name, "uid": p.owner.uid,
                               "apiVersion": api_version},
            "reason": p.reason, "message": p.message[:1024], "type": "Warning",
            "source": {"component": self.component},
            "reportingComponent": self.component, "reportingInstance": self.instance,
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        }
        try:
            await self.core.create_namespaced_event(p.owner.namespace, body)
        except (TimeoutError, ApiException, OSError) as e:
            log.warning("could not record Event %s on %s: %s", p.reason, p.owner.ref, e)


def registry_problems(result: Result) -> list[Problem]:
    """Conflicts (on the loser) and invalid claims, as Event-able problems."""
    out = []
    for c in result.conflicts:
        out.append(Problem(c.loser, "AliasConflict",
                           f"alias {c.name} is already served for {c.winner.ref} (the older "
                           f"claim wins); this claim takes over when that one goes away"))
    for inv in result.invalid:
        out.append(Problem(inv.claim.owner, inv.event, inv.reason))
    return out


async def add_kube_sources(app: App, *, kubeconfig: str | None, namespaces: list[str],
                           overrides: str) -> ApiClient:
    """Create the client, the sources (Kubernetes objects; the overrides
    ConfigMap ``overrides``, NAMESPACE/NAME) and the Event reporter; attach them."""
    cm_ns, cm_name = split_ref(overrides, flag="--overrides-configmap")
    api = await make_client(kubeconfig)
    source = KubeSource(api, zones=app.config.zones, namespaces=namespaces,
                        on_change=app.mark_dirty, restarts=app.watch_restarts)
    recorder = EventRecorder(api)
    app.sources.append(source)
    app.overrides = ConfigMapOverrides(api, app.config.zones, app.mark_dirty, namespace=cm_ns,
                                       name=cm_name, restarts=app.watch_restarts)
    app.sources.append(app.overrides)

    def report(result: Result, changed: bool) -> None:
        with contextlib.suppress(RuntimeError):  # no running loop: nothing to report to
            recorder.sync(source.problems + registry_problems(result))

    app.reporters.append(report)
    return api


