"""Kubernetes sources: Services, EndpointSlices, Istio ServiceEntries and
aliasd's own Alias objects, and the Namespaces' ``aliasd.io/allowed-names``
(the name policy).

Each resource is list-watched (paged) into a cache of objects trimmed to the
fields aliasd reads (``watch.Informer`` with a ``mapping.trim_*`` transform).
An object's claims are derived when that object changes: a Service's when it
or one of its slices changes, a ServiceEntry's (an Alias's) when it or a
Service one of its endpoints names (its serviceRef) changes, so it follows that
Service live, and handed to the
engine only when they differ. A Namespace event reaches the engine only when
its ``aliasd.io/allowed-names`` value changed.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes_asyncio.client import ApiClient, CoreV1Api, CustomObjectsApi, DiscoveryV1Api

from aliasd.engine import KEY_SEP
from aliasd.model import AliasClaim
from aliasd.names import best_zone, normalize_name
from aliasd.sources import aliases, mapping
from aliasd.sources.aliases import AliasInfo, AliasSink, AliasView
from aliasd.sources.mapping import Problem
from aliasd.sources.watch import Informer, NotFound, Obj
from aliasd.zoneconfig import ZoneConfig

log = logging.getLogger(__name__)

ISTIO_GROUP = "networking.istio.io"
SE_VERSIONS = ("v1", "v1beta1", "v1alpha3")  # preference order
CRD_POLL_SECONDS = 5.0


ClaimsSink = Callable[[str, list[AliasClaim]], None]
"""(key, claims): one object's claims changed (none: it is gone or claims nothing)."""
PolicySink = Callable[[str, "str | None"], None]
"""(namespace, allowed-names value): a Namespace's policy changed (None: no annotation)."""

PAGE_SIZE = 500
# The EndpointSlice controller labels the slices of headless Services; slices
# other controllers (or people) manage may belong to a headless Service too.
# Only those two sets matter (a ClusterIP Service answers with its cluster IP),
# so the slices of every other Service are never sent to aliasd. Disjoint, so a
# slice lives in exactly one of the two caches.
SLICE_SELECTORS = (
    "service.kubernetes.io/headless",
    "endpointslice.kubernetes.io/managed-by!=endpointslice-controller.k8s.io,"
    "!service.kubernetes.io/headless",
)


class KubeSource:
    """Services, their EndpointSlices and ServiceEntries → claims, per object:
    an event re-derives the claims of the object it is about (and of the
    ServiceEntries that follow that Service), and hands them to ``on_claims``
    only when they changed."""

    name = "kubernetes"
    incremental = True  # pushes each object's claims (``claims`` is for checks)

    def __init__(self, api: ApiClient, *, zones: ZoneConfig, namespaces: list[str],
                 on_claims: ClaimsSink, on_change: Callable[[], None],
                 restarts: Counter[str], on_relist: Callable[[], None] = lambda: None,
                 on_problems: Callable[[], None] = lambda: None,
                 on_namespace: PolicySink | None = lambda namespace, value: None,
                 probes: Counter[str] | None = None,
                 on_alias: AliasSink = lambda key, alias: None) -> None:
        self._api = api
        self._zones = zones
        self._namespaces = namespaces
        self._push = on_claims
        self._notify = on_change  # readiness may have changed
        self._relisted = on_relist
        self._problems_changed = on_problems  # an object's problems changed, not its claims
        self._alias_sink = on_alias  # an Alias ("ns/name"), its inputs or its status changed
        self._policy_changed = on_namespace or (lambda namespace, value: None)
        self._restarts = restarts
        self._probes = probes if probes is not None else Counter()
        core, disc = CoreV1Api(api), DiscoveryV1Api(api)
        self._services = self._informers(
            "services", core.list_service_for_all_namespaces, core.list_namespaced_service,
            self._service_changed, transform=mapping.trim_service)
        self._slices = [
            inf for i, selector in enumerate(SLICE_SELECTORS)
            for inf in self._informers(
                f"endpointslices{i}", functools.partial(
                    disc.list_endpoint_slice_for_all_namespaces, label_selector=selector),
                functools.partial(_with_selector, disc.list_namespaced_endpoint_slice,
                                  selector),
                self._slice_changed, resource="endpointslices", transform=mapping.trim_slice)]
        # Namespaces, for the name policy: cached trimmed to name + annotation.
        # None: the policy is kept elsewhere (--policy-configmap), the
        # annotations are not read at all.
        self._namespace_informers = self._informers(
            "namespaces", core.list_namespace,
            functools.partial(_named_namespace, core.list_namespace),
            self._namespace_changed, transform=mapping.trim_namespace
        ) if on_namespace is not None else []
        self.allowed_names: dict[str, str] = {}  # namespace -> aliasd.io/allowed-names
        # The custom resources followed while their CRD is installed.
        self._serviceentries = _Followed()
        self._alias_objects = _Followed()
        self._claims: dict[str, list[AliasClaim]] = {}  # engine key -> claims
        self._problems: dict[str, list[Problem]] = {}  # engine key -> problems (non-empty)
        self._slices_of: dict[str, dict[str, Obj]] = {}  # "ns/service" -> slices
        self._ses: dict[str, Obj] = {}  # every served ServiceEntry, by "ns/name"
        self._se_uses: dict[str, set[str]] = {}  # SE key -> Service keys it follows
        self._se_followers: dict[str, set[str]] = {}  # Service key -> SE keys
        self._aliases: dict[str, Obj] = {}  # every served Alias, by "ns/name"
        self._alias_infos: dict[str, AliasInfo] = {}
        self._alias_uses: dict[str, set[str]] = {}  # Alias key -> the Service keys it follows
        self._alias_followers: dict[str, set[str]] = {}  # Service key -> Alias keys

    def _informers(self, name: str, all_ns: Any, one_ns: Any,
                   on_change: Callable[[str, Obj | None, Obj | None], None], *,
                   resource: str | None = None,
                   transform: Callable[[Obj], Obj] | None = None) -> list[Informer]:
        """One informer for all namespaces, or one per ``--namespaces`` entry."""
        def restarted() -> None:
            self._restarts[resource or name] += 1

        # The first list of each informer only builds what the engine already
        # has (a check then costs a build from scratch, ~1 s of CPU at 10,000
        # Services, for nothing); a relist may follow missed events: check.
        kw: dict[str, Any] = {"on_change": on_change, "on_restart": restarted,
                              "on_sync": self._notify, "on_relist": self._relisted,
                              "page_size": PAGE_SIZE}
        if transform is not None:
            kw["transform"] = transform
        if not self._namespaces:
            return [Informer(name, all_ns, **kw)]
        return [Informer(f"{name}/{ns}", functools.partial(one_ns, ns), **kw)
                for ns in self._namespaces]

    # ---- state for the app ----------------------------------------------------------

    @property
    def synced(self) -> bool:
        return (all(i.synced for i in self._core_informers) and self._serviceentries.synced
                and self._alias_objects.synced)

    @property
    def _core_informers(self) -> list[Informer]:
        return self._namespace_informers + self._services + self._slices

    @property
    def error(self) -> str | None:
        for i in (self._core_informers + self._serviceentries.informers
                  + self._alias_objects.informers):
            if i.error:
                return f"{i.name}: {i.error}"
        return None

    @property
    def claims(self) -> list[AliasClaim]:
        """Every claim (for ``aliasd list`` and checks; O(claims))."""
        return [c for claims in self._claims.values() for c in claims]

    @property
    def problems(self) -> list[Problem]:
        """Every current problem (O(objects with problems))."""
        return [p for problems in self._problems.values() for p in problems]

    @property
    def alias_keys(self) -> list[str]:
        """Every Alias being watched ("ns/name")."""
        return list(self._alias_infos)

    def alias(self, key: str) -> AliasView | None:
        """An Alias's status inputs and the status the API server holds for it
        (as last watched); None: no such Alias."""
        info = self._alias_infos.get(key)
        obj = self._aliases.get(key)
        if info is None or obj is None:
            return None
        return info, dict(obj.get("status") or {})

    def _set(self, key: str, claims: list[AliasClaim], problems: list[Problem]) -> None:
        engine_key = f"{self.name}{KEY_SEP}{key}"
        if problems != self._problems.get(engine_key, []):
            if problems:
                self._problems[engine_key] = problems
            else:
                self._problems.pop(engine_key, None)
            self._problems_changed()
        if claims == self._claims.get(engine_key, []):
            return
        if claims:
            self._claims[engine_key] = claims
        else:
            self._claims.pop(engine_key, None)
        self._push(engine_key, claims)

    def _in_zone(self, host: str) -> bool:
        return best_zone(normalize_name(host), self._zones.zones) is not None

    def _service(self, k: str) -> Obj | None:
        for inf in self._services:
            svc = inf.items.get(k)
            if svc is not None:
                return svc
        return None

    # ---- per-event derivation (only the object that changed) ------------------------

    def _derive_service(self, k: str) -> None:
        svc = self._service(k)
        if svc is None:
            self._set(f"svc/{k}", [], [])
        else:
            self._set(f"svc/{k}", *mapping.service_claims(
                svc, self._slices_of.get(k, {}).values()))
        for se in sorted(self._se_followers.get(k, ())):
            self._derive_serviceentry(se)
        for alias in sorted(self._alias_followers.get(k, ())):
            self._derive_alias(alias)

    def _derive_alias(self, k: str) -> None:
        for used in self._alias_uses.pop(k, ()):
            followers = self._alias_followers[used]
            followers.discard(k)
            if not followers:
                del self._alias_followers[used]
        obj = self._aliases.get(k)
        if obj is None:
            self._set(f"alias/{k}", [], [])
            if self._alias_infos.pop(k, None) is not None:
                self._alias_changed(k, None)
            return

        def lookup(namespace: str, name: str) -> tuple[Obj, list[Obj]] | None:
            sk = f"{namespace}/{name}"
            self._alias_uses.setdefault(k, set()).add(sk)
            self._alias_followers.setdefault(sk, set()).add(k)
            svc = self._service(sk)
            if svc is None:
                return None
            return svc, list(self._slices_of.get(sk, {}).values())

        info = aliases.alias_info(obj, services=lookup, in_zone=self._in_zone)
        self._set(f"alias/{k}", list(info.claims), [])
        if self._alias_infos.get(k) != info:
            self._alias_infos[k] = info
            self._alias_changed(k, self.alias(k))

    def _alias_changed(self, k: str, view: AliasView | None) -> None:
        """Hand an Alias to the status writer, and have the reporters run after
        the next commit, which carries its claims (a status is never derived
        from a result that does not hold them yet)."""
        self._alias_sink(k, view)
        self._problems_changed()

    def _derive_serviceentry(self, k: str) -> None:
        for svc in self._se_uses.pop(k, ()):
            followers = self._se_followers[svc]
            followers.discard(k)
            if not followers:
                del self._se_followers[svc]
        se = self._ses.get(k)
        if se is None:
            self._set(f"se/{k}", [], [])
            return
        used: set[str] = set()

        def lookup(namespace: str, name: str) -> tuple[tuple[str, ...], str | None] | None:
            sk = f"{namespace}/{name}"
            used.add(sk)
            svc = self._service(sk)
            if svc is None:
                return None
            return mapping.service_targets(svc, self._slices_of.get(sk, {}).values())

        claims, problems = mapping.serviceentry_claims(se, in_zone=self._in_zone,
                                                       services=lookup)
        if used:
            self._se_uses[k] = used
            for sk in used:
                self._se_followers.setdefault(sk, set()).add(k)
        self._set(f"se/{k}", claims, problems)

    def _service_changed(self, k: str, old: Obj | None, new: Obj | None) -> None:
        self._derive_service(k)

    def _slice_changed(self, k: str, old: Obj | None, new: Obj | None) -> None:
        touched: list[str] = []  # a slice update names its Service twice: derive it once
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
            if sk not in touched:
                touched.append(sk)
        for sk in touched:
            self._derive_service(sk)

    def _namespace_changed(self, k: str, old: Obj | None, new: Obj | None) -> None:
        """Only a change of ``aliasd.io/allowed-names`` costs anything: the
        engine then re-validates that namespace's claims, and no other."""
        value = mapping.allowed_names(new)
        if value == mapping.allowed_names(old):
            return
        name = str(((new or old or {}).get("metadata") or {}).get("name", ""))
        if value is None:
            self.allowed_names.pop(name, None)
        else:
            self.allowed_names[name] = value
        self._set(f"ns/{name}", [], mapping.namespace_problems(new, self._zones.zones[0])
                  if new is not None else [])
        self._policy_changed(name, value)

    def _alias_event(self, k: str, old: Obj | None, new: Obj | None) -> None:
        if new is None:
            self._aliases.pop(k, None)
        else:
            self._aliases[k] = new
        if old is None or new is None or not _status_only(old, new):
            self._derive_alias(k)  # not for the echo of a status write: no input moved
        if new is not None and (old or {}).get("status") != new.get("status"):
            self._alias_changed(k, self.alias(k))  # the status on the API server moved

    def _se_changed(self, k: str, old: Obj | None, new: Obj | None) -> None:
        if new is None:
            self._ses.pop(k, None)
        else:
            self._ses[k] = new
        self._derive_serviceentry(k)

    # ---- running ----------------------------------------------------------------------

    async def run(self) -> None:
        await asyncio.gather(*(i.run() for i in self._core_informers),
                             self._follow_crd(_SERVICEENTRIES, self._serviceentries,
                                              self._se_changed),
                             self._follow_crd(_ALIASES, self._alias_objects, self._alias_event))

    async def _follow_crd(self, crd: _Crd, followed: _Followed,
                          on_change: Callable[[str, Obj | None, Obj | None], None]) -> None:
        """Follow a CRD: off while it is absent, on as soon as it appears, off
        again if it is removed. Each change of state is logged once; polling
        an absent CRD changes nothing (no claims, no rebuild)."""
        custom = CustomObjectsApi(self._api)
        state = ""  # "" unknown, "absent", or the version being watched

        while True:
            for version in crd.versions:
                def served(version: str = version) -> None:
                    nonlocal state
                    if state != version:
                        log.info("watching %s (%s/%s)", crd.kind, crd.group, version)
                        state = version

                informers = self._informers(
                    f"{crd.plural}.{version}",
                    functools.partial(custom.list_cluster_custom_object, crd.group, version,
                                      crd.plural),
                    functools.partial(_namespaced_custom, custom, crd.group, version,
                                      crd.plural),
                    on_change, resource=crd.plural, transform=crd.transform)
                for inf in informers:
                    inf.on_sync = functools.partial(_chain, served, inf.on_sync)
                followed.informers = informers
                self._probes["crd_probes"] += 1
                try:
                    await asyncio.gather(*(i.run() for i in informers))
                except NotFound:
                    followed.informers = []
                    gone = [k for i in informers for k in i.items]
                    if gone:
                        log.info("%s %s no longer served; its aliases are removed",
                                 crd.kind, version)
                    for k in gone:
                        on_change(k, None, None)
            if state != "absent":
                log.info("%s CRD (%s) not installed: %s aliases are off until it appears",
                         crd.kind, crd.group, crd.kind)
                state = "absent"
                followed.absent = True
                self._notify()
            await asyncio.sleep(CRD_POLL_SECONDS)


@dataclass(frozen=True)
class _Crd:
    """A custom resource the source follows while its CRD is installed."""

    kind: str
    group: str
    versions: tuple[str, ...]  # preference order
    plural: str
    transform: Callable[[Obj], Obj]


_SERVICEENTRIES = _Crd("ServiceEntry", ISTIO_GROUP, SE_VERSIONS, "serviceentries",
                       mapping.trim_serviceentry)
_ALIASES = _Crd(aliases.KIND, aliases.GROUP, aliases.VERSIONS, aliases.PLURAL,
                aliases.trim_alias)


@dataclass
class _Followed:
    """The informers of a followed custom resource (none while its CRD is
    absent); ``absent`` is set once every version was tried and none is
    served: the source then counts as synced (like an informer, it never goes
    back to unsynced)."""

    informers: list[Informer] = field(default_factory=list)
    absent: bool = False

    @property
    def synced(self) -> bool:
        return self.absent or (bool(self.informers) and all(i.synced for i in self.informers))


def _chain(first: Callable[[], None], second: Callable[[], None]) -> None:
    first()
    second()


def _with_selector(list_fn: Any, selector: str, namespace: str, **kw: Any) -> Any:
    return list_fn(namespace, label_selector=selector, **kw)


def _named_namespace(list_fn: Any, name: str, **kw: Any) -> Any:
    """``--namespaces``: watch just those Namespace objects."""
    return list_fn(field_selector=f"metadata.name={name}", **kw)


def _namespaced_custom(custom: CustomObjectsApi, group: str, version: str, plural: str,
                       namespace: str, **kw: Any) -> Any:
    return custom.list_namespaced_custom_object(group, version, namespace, plural, **kw)


def _status_only(old: Obj, new: Obj) -> bool:
    """Whether two versions of a (trimmed) Alias differ at most in their status
    and resourceVersion: the claims they make are the same."""
    a, b = old.get("metadata") or {}, new.get("metadata") or {}
    return (old.get("spec") == new.get("spec")
            and all(a.get(f) == b.get(f) for f in ("uid", "generation", "creationTimestamp")))
