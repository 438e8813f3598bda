"""The composition root: builds every part whole from a parsed config.

Sources (file, Kubernetes, overrides) → inbox → committer (engine commit, the
DNS server's snapshot swap, then the effects: Events, the patcher's
takeovers, the state file) ; HTTP and metrics read ``aliasd.status.ReadModel``
and write through ``aliasd.runtime.overrides.OverridesService``. Flags are the
CLI's business: everything here takes typed values.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes_asyncio.client import ApiClient
from prometheus_client import CollectorRegistry

from aliasd import resolver
from aliasd.access import (
    DEFAULT_AUDIENCES,
    AnyOf,
    Authenticator,
    EventTrail,
    KubernetesAuth,
    LogTrail,
    StaticToken,
    Trail,
)
from aliasd.api import make_app, make_metrics_app, start_http
from aliasd.app import AppConfig
from aliasd.coredns.lease import Election, LeaderElector
from aliasd.coredns.patcher import Patcher, PatcherConfig
from aliasd.dns.server import DnsServer
from aliasd.dns.stats import Stats
from aliasd.engine import Engine
from aliasd.events import EventRecorder, EventSink, instance, resolver_problems
from aliasd.kubeapi import TRANSIENT, RawClient, make_client
from aliasd.metrics import (
    CountsBy,
    DnsMetrics,
    alias_status_writes,
    auth_reviews,
    build_registry,
    corefile_patches,
    crd_probes,
    event_results,
    watch_restarts,
)
from aliasd.model import ConfigError
from aliasd.resolver import Result
from aliasd.runtime.checker import RelistChecker
from aliasd.runtime.committer import Committer, Reporter, Source
from aliasd.runtime.inbox import Inbox
from aliasd.runtime.overrides import OverridesService
from aliasd.runtime.process import LameDuck, ProcessTuning
from aliasd.runtime.replicas import LocalReplica, ReplicaLeases
from aliasd.runtime.statewriter import StateWriter
from aliasd.runtime.statuswriter import DEFAULT_RATE, AliasStatusWriter
from aliasd.runtime.statuswriter import INFLIGHT as STATUS_INFLIGHT
from aliasd.sources.aliases import GROUP as ALIAS_GROUP
from aliasd.sources.aliases import KIND as ALIAS_KIND
from aliasd.sources.aliases import PLURAL as ALIAS_PLURAL
from aliasd.sources.aliases import VERSIONS as ALIAS_VERSIONS
from aliasd.sources.file import FileSource
from aliasd.sources.kube import KubeSource
from aliasd.sources.overrides import ConfigMapOverrides, FileOverrides, OverridesSource
from aliasd.sources.policymap import PolicyConfigMap
from aliasd.sources.probes import Prober
from aliasd.state import State, StateFile
from aliasd.status import Component, ReadModel, aliases_document
from aliasd.supervisor import supervise
from aliasd.zoneconfig import ZoneConfig

log = logging.getLogger(__name__)

SYNC_TIMEOUT = 30.0


@dataclass(frozen=True)
class KubeConfig:
    """Watching Kubernetes (``aliasd run`` with a cluster)."""

    kubeconfig: str | None = None
    namespaces: tuple[str, ...] = ()
    overrides_configmap: tuple[str, str] = ("aliasd-system", "aliasd-overrides")
    patcher: PatcherConfig | None = None  # None: the cluster DNS wiring is off
    leader_lease: tuple[str, str] | None = None  # None: no leader election
    lease_duration: float = 15.0
    status_rate: float = DEFAULT_RATE  # Alias status writes per second (burst: as many)
    audiences: tuple[str, ...] = DEFAULT_AUDIENCES  # a write API token's (TokenReview)
    # The name policy from this ConfigMap, not the Namespaces' annotations.
    policy_configmap: tuple[str, str] | None = None


@dataclass(frozen=True)
class RunConfig:
    app: AppConfig
    kube: KubeConfig | None = None


@dataclass
class _Parts:
    """What ``serve`` collects while building, before the committer exists."""

    prober: Prober  # the health probes: verdicts into the inbox, states to the status
    sources: list[Source] = field(default_factory=list)
    components: list[Component] = field(default_factory=list)
    reporters: list[Reporter] = field(default_factory=list)
    # Counted by the watches and the patcher; served (at zero) without them too.
    restarts: CountsBy = field(default_factory=watch_restarts)
    probes: CountsBy = field(default_factory=crd_probes)
    patches: CountsBy = field(default_factory=corefile_patches)
    status_writes: CountsBy = field(default_factory=alias_status_writes)
    events: CountsBy = field(default_factory=event_results)
    reviews: CountsBy = field(default_factory=auth_reviews)
    overrides: OverridesSource | None = None
    authenticator: Authenticator | None = None
    trail: Trail = field(default_factory=LogTrail)


async def serve(config: RunConfig, stop: asyncio.Event) -> None:
    """Build every part from ``config`` and serve until ``stop`` is set.

    Sources write into the inbox; the committer turns it into the snapshot the
    DNS server answers from and runs the reporters (Events, the patcher's
    takeovers) and the state writer; HTTP reads the read model and writes
    through the overrides service."""
    app = config.app
    zones = app.zones
    clock = time.time
    file = StateFile(app.state_file) if app.state_file is not None else None
    writer = (StateWriter(file, clock=clock, interval=app.state_interval)
              if file is not None else None)
    state = writer.load() if writer is not None else None
    inbox = Inbox(Engine(zones, serial=resolver.next_serial(0, clock()),
                         track_changes=file is not None))
    parts = _Parts(Prober(on_health=inbox.update_health, limit=app.probe_limit),
                   authenticator=StaticToken(app.api_token) if app.api_token else None)
    if app.aliases_file is not None:
        fs = FileSource(app.aliases_file, config=zones, on_change=inbox.notifier(FileSource.name))
        fs.load()  # a bad file at start is fatal: there is no last good zone yet
        parts.sources.append(fs)
    api: ApiClient | None = None
    raw: RawClient | None = None
    try:
        if config.kube is not None:
            api = await make_client(config.kube.kubeconfig)
            raw = RawClient(api, connections=STATUS_INFLIGHT)
            _wire_kube(parts, inbox, api, raw, zones=zones, config=config.kube)
        elif file is not None:
            overrides = FileOverrides(zones, inbox.notifier(FileOverrides.name), state=file,
                                      clock=clock)
            overrides.load(state.overrides if state else ())
            parts.overrides = overrides
            parts.sources.append(overrides)
        elif app.api_token is not None:
            raise ConfigError("--api-token-file without Kubernetes needs --state-file: that "
                              "is where overrides are kept across restarts")
        if not parts.sources:
            raise ConfigError("nothing to serve: give --aliases-file, or --kubeconfig "
                              "(or run in a cluster) to watch Kubernetes")
        await _run(parts, inbox, config=app, clock=clock, writer=writer, state=state,
                   stop=stop)
    finally:
        if raw is not None:
            await raw.close()
        if api is not None:
            await api.close()


@dataclass(frozen=True)
class _Process:
    """The parts that follow the sources, built whole."""

    dns: DnsServer
    tuning: ProcessTuning
    lame_duck: LameDuck
    committer: Committer
    checker: RelistChecker
    service: OverridesService
    read: ReadModel
    registry: CollectorRegistry


def _assemble(parts: _Parts, inbox: Inbox, *, config: AppConfig, clock: Callable[[], float],
              writer: StateWriter | None, state: State | None) -> _Process:
    zones = config.zones
    stats = Stats()
    prober = parts.prober

    def probe_what_is_claimed(result: Result, changed: bool) -> None:
        prober.reconcile(inbox.engine.checks)

    dns = DnsServer(inbox.engine.result.snapshot, config.dns, stats=stats)
    tuning = ProcessTuning()
    lame_duck = LameDuck(config.lame_duck)
    committer = Committer(inbox, zones=zones, dns=dns, sources=parts.sources,
                          reporters=[probe_what_is_claimed, *parts.reporters], clock=clock,
                          debounce=config.debounce,
                          stale=state, state=writer, on_synced=tuning.synced)
    checker = RelistChecker(inbox, committer, zones=zones, settle=config.debounce * 5)
    service = OverridesService(parts.overrides, zones=zones, authenticator=parts.authenticator,
                               trail=parts.trail, clock=clock, committed=committer.committed)
    read = ReadModel(served=committer, sources=parts.sources, components=parts.components,
                     lame_duck=lame_duck)
    metrics = build_registry([
        DnsMetrics(stats, cache_entries=lambda: dns.answerer.cache_size), read, inbox,
        committer, checker, service, prober, parts.restarts, parts.probes, parts.patches,
        parts.status_writes, parts.events, parts.reviews])
    return _Process(dns, tuning, lame_duck, committer, checker, service, read, metrics)


def metrics_registry(config: AppConfig) -> CollectorRegistry:
    """The registry a process serving ``config`` serves at /metrics (nothing
    started: for the docs' metrics reference)."""
    inbox = Inbox(Engine(config.zones, serial=1))
    return _assemble(_Parts(Prober(on_health=inbox.update_health)), inbox, config=config,
                     clock=time.time, writer=None, state=None).registry


async def _run(parts: _Parts, inbox: Inbox, *, config: AppConfig, clock: Callable[[], float],
               writer: StateWriter | None, state: State | None, stop: asyncio.Event) -> None:
    """The parts that follow the sources, then serving until ``stop``."""
    p = _assemble(parts, inbox, config=config, clock=clock, writer=writer, state=state)
    log.info("serving zones %s; sources: %s", ", ".join(config.zones.zones),
             ", ".join(s.name for s in parts.sources))
    separate = config.metrics_listen
    async with contextlib.AsyncExitStack() as listeners:
        runner = await start_http(make_app(p.read, p.service, zones=config.zones,
                                           registry=None if separate else p.registry,
                                           reads_need_token=config.reads_need_token),
                                  config.http_host, config.http_port)
        listeners.push_async_callback(runner.cleanup)
        if separate is not None:
            metrics = await start_http(make_metrics_app(p.registry), *separate,
                                       what="metrics")
            listeners.push_async_callback(metrics.cleanup)
        await p.dns.start()
        p.tuning.start()
        try:
            tasks = {"commit": p.committer.run(), "relist-check": p.checker.run(),
                     parts.prober.name: parts.prober.run()}
            if writer is not None:
                tasks["state-file"] = writer.run()
            tasks.update({f"source-{s.name}": s.run() for s in parts.sources})
            tasks.update({c.name: c.run() for c in parts.components})
            await supervise(tasks, until=p.lame_duck.until(stop))
        finally:
            p.tuning.stop()
            await p.dns.stop()
            if writer is not None:
                writer.flush()


def _wire_kube(parts: _Parts, inbox: Inbox, api: ApiClient, raw: RawClient, *,
               zones: ZoneConfig, config: KubeConfig) -> None:
    """The Kubernetes source, the overrides ConfigMap, one Event recorder, the
    CoreDNS patcher and the Alias status writer (its writes over ``raw``); the
    effects after each commit."""
    restarts, probes = parts.restarts, parts.probes
    me = instance()  # the Events' reportingInstance and the lease holder's name
    events = EventSink(api, instance=me, results=parts.events.counts)
    recorder = EventRecorder(events.send)
    patcher, election = _wire_leader(parts, api, recorder, config=config, me=me)
    if election is not None:
        parts.components.append(election)
    leader = patcher.elector if patcher is not None else (
        election.elector if election is not None else None)
    statuses = AliasStatusWriter(
        source=KubeSource.name, patch=functools.partial(_patch_alias_status, raw),
        zones=zones, leading=(lambda: leader.leading) if leader is not None else (lambda: True),
        send=events.send, clock=time.time, results=parts.status_writes.counts, identity=me,
        rate=config.status_rate, inflight=STATUS_INFLIGHT, health=parts.prober.states)
    parts.components.append(statuses)
    # Programmed: each replica's watermark, in a Lease of its own beside the
    # leader's (alone without an election).
    if config.leader_lease is not None:
        lease_ns, lease_group = config.leader_lease
        parts.components.append(ReplicaLeases(
            api, namespace=lease_ns, group=lease_group, identity=me,
            duration=config.lease_duration, watermark=lambda: statuses.watermark,
            on_replicas=statuses.replicas, leading=lambda: leader is not None and leader.leading))
    else:
        parts.components.append(LocalReplica(identity=me, watermark=lambda: statuses.watermark,
                                             on_replicas=statuses.replicas))
    policy = config.policy_configmap
    source = KubeSource(api, zones=zones, namespaces=list(config.namespaces),
                        on_claims=inbox.update_claims, on_change=inbox.changed,
                        on_relist=inbox.relisted, on_problems=inbox.problems_changed,
                        on_namespace=inbox.update_namespace if policy is None else None,
                        restarts=restarts.counts, probes=probes.counts,
                        on_alias=statuses.update)
    parts.sources.append(source)
    if policy is not None:
        parts.sources.append(PolicyConfigMap(
            api, namespace=policy[0], name=policy[1], on_namespace=inbox.update_namespace,
            on_change=inbox.changed, restarts=restarts.counts))
    cm_ns, cm_name = config.overrides_configmap
    parts.overrides = ConfigMapOverrides(api, zones, inbox.notifier("overrides"),
                                         namespace=cm_ns, name=cm_name,
                                         restarts=restarts.counts)
    parts.sources.append(parts.overrides)
    # Override writes also take Kubernetes tokens (RBAC decides, in the
    # overrides ConfigMap's namespace) and leave Events on that ConfigMap.
    static = [parts.authenticator] if parts.authenticator is not None else []
    parts.authenticator = AnyOf([*static, KubernetesAuth(
        api, namespace=cm_ns, audiences=config.audiences, reviews=parts.reviews.counts)])
    parts.trail = EventTrail(api, send=events.record, namespace=cm_ns, name=cm_name)

    def report(result: Result, changed: bool) -> None:
        # An Alias's problems are its status conditions, with their own Events.
        recorder.sync([p for p in source.problems + resolver_problems(result)
                       if p.owner.kind != ALIAS_KIND])

    parts.reporters.append(report)
    parts.reporters.append(statuses.report)
    if patcher is None:
        return

    def wire_takeovers(result: Result, changed: bool) -> None:
        if result.snapshot.ready:
            patcher.set_takeovers(result.takeovers)

    parts.reporters.append(wire_takeovers)


def _wire_leader(parts: _Parts, api: ApiClient, recorder: EventRecorder, *, config: KubeConfig,
                 me: str) -> tuple[Patcher | None, Election | None]:
    """The CoreDNS patcher (None: the wiring is off) and the leader election:
    the patcher's own, or, without the wiring, one for the Alias status alone
    (None: no election, this process is the only writer)."""
    elect: Callable[[Callable[[bool], None]], LeaderElector] | None = None
    if config.leader_lease is not None:
        ns, name = config.leader_lease
        duration = config.lease_duration

        def elect(on_change: Callable[[bool], None]) -> LeaderElector:
            # A random suffix: a restarted process is a new candidate, never
            # mistaken for the old holder.
            return LeaderElector(api, namespace=ns, name=name,
                                 identity=f"{me}_{secrets.token_hex(3)}", duration=duration,
                                 on_change=on_change)

    if config.patcher is None:
        return None, Election(elect(lambda leading: None)) if elect is not None else None
    patcher = Patcher(api, config.patcher, results=parts.patches.counts,
                      report=recorder.reporter("corefile"), elect=elect)
    parts.components.append(patcher)
    return patcher, None


async def _patch_alias_status(raw: RawClient, namespace: str, name: str,
                              body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """A JSON merge patch (RFC 7396) of one Alias's status subresource; an
    unreachable API server is status 0."""
    path = (f"/apis/{ALIAS_GROUP}/{ALIAS_VERSIONS[0]}/namespaces/{namespace}/{ALIAS_PLURAL}/"
            f"{name}/status?fieldManager=aliasd")
    try:
        return await raw.request("PATCH", path, json.dumps(body, separators=(",", ":")).encode(),
                                 content_type="application/merge-patch+json")
    except TRANSIENT as e:
        return 0, {"message": str(e).splitlines()[0] if str(e) else type(e).__name__}


async def list_from_cluster(kubeconfig: str | None, *, zones: ZoneConfig, namespaces: list[str],
                            overrides: tuple[str, str],
                            policy: tuple[str, str] | None = None) -> dict[str, Any]:
    """List (and watch until synced) like ``aliasd run`` does, then build once."""
    cm_ns, cm_name = overrides
    api = await make_client(kubeconfig)
    try:
        restarts: Counter[str] = Counter()
        kube = KubeSource(api, zones=zones, namespaces=namespaces,
                          on_claims=lambda key, claims: None, on_change=lambda: None,
                          on_namespace=(lambda namespace, value: None) if policy is None
                          else None, restarts=restarts)
        switch = ConfigMapOverrides(api, zones, lambda: None, namespace=cm_ns, name=cm_name,
                                    restarts=restarts)
        sources: list[KubeSource | ConfigMapOverrides | PolicyConfigMap] = [kube, switch]
        policies = None
        if policy is not None:
            policies = PolicyConfigMap(api, namespace=policy[0], name=policy[1],
                                       on_namespace=lambda namespace, value: None,
                                       on_change=lambda: None, restarts=restarts)
            sources.append(policies)

        async def synced() -> None:
            deadline = time.monotonic() + SYNC_TIMEOUT
            while not all(s.synced for s in sources):
                if time.monotonic() > deadline:
                    errors = [s.error for s in sources if s.error]
                    raise ConfigError(f"could not read the cluster within {SYNC_TIMEOUT:.0f}s: "
                                      f"{errors[0] if errors else 'not synced'}")
                await asyncio.sleep(0.05)

        await supervise({f"source-{s.name}": s.run() for s in sources}, until=synced())
        result = resolver.build([*kube.claims, *switch.claims], config=zones,
                                serial=resolver.next_serial(0, time.time()), ready=True,
                                annotations=(kube.allowed_names if policies is None
                                             else policies.allowed_names))
        return aliases_document(result)
    finally:
        await api.close()
