"""The composition root: builds and wires every part from a parsed config.

Sources (file, Kubernetes, overrides) → engine (``App``) → DNS server; after
each commit one effects step runs the reporters (Events, the patcher's
takeovers); HTTP and metrics read the app through ``aliasd.status.Status``.
Flags are the CLI's business: everything here takes typed values.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio.client import ApiClient

from aliasd import registry
from aliasd.access import AnyOf, EventTrail, KubernetesAuth
from aliasd.api import start_http
from aliasd.app import App, AppConfig
from aliasd.coredns.lease import LeaderElector
from aliasd.coredns.patcher import Patcher, PatcherConfig
from aliasd.events import EventRecorder, EventSink, instance, registry_problems
from aliasd.kubeapi import make_client
from aliasd.model import ConfigError
from aliasd.registry import Result, ZoneConfig
from aliasd.sources.file import FileSource
from aliasd.sources.kube import KubeSource
from aliasd.sources.overrides import ConfigMapOverrides, FileOverrides
from aliasd.status import aliases_document
from aliasd.supervisor import supervise

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


@dataclass(frozen=True)
class RunConfig:
    app: AppConfig
    kube: KubeConfig | None = None


async def serve(config: RunConfig, stop: asyncio.Event) -> None:
    """Build every part from ``config`` and serve until ``stop`` is set."""
    app = App(config.app)
    state = app.load_state()
    zones = config.app.zones
    if config.app.aliases_file is not None:
        fs = FileSource(config.app.aliases_file, config=zones,
                        on_change=app.notifier(FileSource.name))
        fs.load()  # a bad file at start is fatal: there is no last good zone yet
        app.sources.append(fs)
    api: ApiClient | None = None
    if config.kube is not None:
        api = await make_client(config.kube.kubeconfig)
        _wire_kube(app, api, config.kube)
    elif app.state is not None:
        overrides = FileOverrides(zones, app.notifier(FileOverrides.name), state=app.state,
                                  clock=app.clock)
        overrides.load(state.overrides if state else ())
        app.overrides = overrides
        app.sources.append(overrides)
    elif config.app.api_token is not None:
        raise ConfigError("--api-token-file without Kubernetes needs --state-file: that is "
                          "where overrides are kept across restarts")
    try:
        if not app.sources:
            raise ConfigError("nothing to serve: give --aliases-file, or --kubeconfig "
                              "(or run in a cluster) to watch Kubernetes")
        log.info("serving zones %s; sources: %s", ", ".join(zones.zones),
                 ", ".join(s.name for s in app.sources))
        runner = await start_http(app, config.app.http_host, config.app.http_port)
        try:
            await app.run(stop)
        finally:
            await runner.cleanup()
    finally:
        if api is not None:
            await api.close()


def _wire_kube(app: App, api: ApiClient, config: KubeConfig) -> None:
    """The Kubernetes source, the overrides ConfigMap, one Event recorder, and
    the CoreDNS patcher; the effects step after each commit."""
    source = KubeSource(api, zones=app.config.zones, namespaces=list(config.namespaces),
                        on_claims=app.update_claims, on_change=app.mark_dirty,
                        on_relist=app.schedule_check, on_problems=app.problems_changed,
                        on_namespace=app.update_namespace, restarts=app.watch_restarts,
                        probes=app.counters)
    me = instance()  # the Events' reportingInstance and the lease holder's name
    events = EventSink(api, instance=me)
    recorder = EventRecorder(events.send)
    app.sources.append(source)
    cm_ns, cm_name = config.overrides_configmap
    app.overrides = ConfigMapOverrides(api, app.config.zones, app.notifier("overrides"),
                                       namespace=cm_ns, name=cm_name,
                                       restarts=app.watch_restarts)
    app.sources.append(app.overrides)
    # Override writes also take Kubernetes tokens (RBAC decides, in the
    # overrides ConfigMap's namespace) and leave Events on that ConfigMap.
    static = [app.authenticator] if app.authenticator is not None else []
    app.authenticator = AnyOf([*static, KubernetesAuth(api, namespace=cm_ns)])
    app.trail = EventTrail(api, send=events.send, namespace=cm_ns, name=cm_name)

    def report(result: Result, changed: bool) -> None:
        with contextlib.suppress(RuntimeError):  # no running loop: nothing to report to
            recorder.sync(source.problems + registry_problems(result))

    app.reporters.append(report)
    if config.patcher is None:
        return
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

    patcher = Patcher(api, config.patcher, results=app.patch_results,
                      report=recorder.reporter("corefile"), elect=elect)
    app.components.append(patcher)

    def wire_takeovers(result: Result, changed: bool) -> None:
        if result.snapshot.ready:
            patcher.set_takeovers(result.takeovers)

    app.reporters.append(wire_takeovers)


async def list_from_cluster(kubeconfig: str | None, *, zones: ZoneConfig, namespaces: list[str],
                       overrides: tuple[str, str]) -> dict[str, Any]:
    """List (and watch until synced) like ``aliasd run`` does, then build once."""
    cm_ns, cm_name = overrides
    api = await make_client(kubeconfig)
    try:
        restarts: Counter[str] = Counter()
        kube = KubeSource(api, zones=zones, namespaces=namespaces,
                          on_claims=lambda key, claims: None, on_change=lambda: None,
                          restarts=restarts)
        switch = ConfigMapOverrides(api, zones, lambda: None, namespace=cm_ns, name=cm_name,
                                    restarts=restarts)

        async def synced() -> None:
            deadline = time.monotonic() + SYNC_TIMEOUT
            while not (kube.synced and switch.synced):
                if time.monotonic() > deadline:
                    raise ConfigError(f"could not read the cluster within {SYNC_TIMEOUT:.0f}s: "
                                      f"{kube.error or switch.error or 'not synced'}")
                await asyncio.sleep(0.05)

        await supervise({"source-kubernetes": kube.run(), "source-overrides": switch.run()},
                        until=synced())
        result = registry.build([*kube.claims, *switch.claims], config=zones,
                                serial=registry.next_serial(0, time.time()), ready=True,
                                annotations=kube.allowed_names)
        return aliases_document(result)
    finally:
        await api.close()
