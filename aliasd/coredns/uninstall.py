"""``aliasd coredns remove --stop-deployment``: stop aliasd, then remove its
part of the cluster DNS config; or, when that fails, leave both as they were.

A running replica that holds the Lease puts the blocks back within a second of
a removal, so aliasd must be stopped first; but a stopped aliasd with its blocks
still in place fails every alias lookup. Hence the order:

1. plan the removal without writing: a missing or unreadable ConfigMap fails
   here, before anything is stopped;
2. scale the Deployment to zero, remembering its replicas;
3. wait until no replica holds the Lease (a stopping replica keeps patching
   through its lame duck and releases the Lease last);
4. remove.

A failure in 3 or 4 scales the Deployment back, so aliasd serves again with its
blocks in place. The Helm chart's uninstall hook runs this."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from kubernetes_asyncio.client import ApiClient, AppsV1Api

from aliasd.coredns.lease import LeaseError, read_lease, settled_holder
from aliasd.coredns.patcher import Change, Patcher, PatcherConfig
from aliasd.coredns.wiring import wire
from aliasd.kubeapi import TRANSIENT, call, message
from aliasd.model import ApplyError

STOP_TIMEOUT = 120.0
"""Seconds to wait for the stopped replicas to let go of the Lease (their
termination grace period, and a Lease of a killed one expiring, fit in it)."""

LEASE_POLL = 1.0
"""Seconds between two reads of a Lease still held by a stopping replica."""


@dataclass(frozen=True)
class Stop:
    """aliasd's Deployment and its leader-election Lease."""

    namespace: str
    deployment: str
    lease: tuple[str, str]  # namespace, name

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.deployment}"


async def stop_and_remove(api: ApiClient, config: PatcherConfig, *, stop: Stop,
                          say: Callable[[str], None]) -> AsyncIterator[Change]:
    """The removal's change of each target ConfigMap, as written, after the
    Deployment is stopped. ``say`` is told each step. ``ApplyError`` when
    anything fails; the Deployment has been scaled back by then."""
    try:
        await _plan_removal(api, config)
    except TRANSIENT as e:
        raise ApplyError(f"Kubernetes API: {_first_line(e)}; nothing was changed") from None
    except ApplyError as e:
        raise ApplyError(f"{e}; nothing was changed") from None
    try:
        previous = await _scale(api, stop, replicas=0)
    except ApplyError as e:
        raise ApplyError(f"{e}; nothing was changed") from None
    if previous is None:
        say(f"Deployment {stop.ref} not found: nothing to stop")
    elif previous:
        say(f"scaled Deployment {stop.ref} from {previous} to 0 replicas")
    try:
        await _wait_released(api, stop, say=say)
        async for change in wire(api, config, action="remove"):
            yield change
    except (ApplyError, LeaseError, *TRANSIENT) as e:
        if not previous:
            raise ApplyError(_first_line(e)) from None
        try:
            await _scale(api, stop, replicas=previous)
        except ApplyError as back:
            raise ApplyError(
                f"{_first_line(e)}; scaling Deployment {stop.ref} back failed too ({back}): "
                f"aliasd is stopped with its blocks in place, scale it back: kubectl -n "
                f"{stop.namespace} scale deployment {stop.deployment} --replicas={previous}"
            ) from None
        raise ApplyError(f"{_first_line(e)}; scaled Deployment {stop.ref} back to "
                         f"{previous} replicas, so aliasd serves with its blocks in "
                         f"place") from None


async def _plan_removal(api: ApiClient, config: PatcherConfig) -> None:
    patcher = Patcher(api, config)
    for target in await patcher.resolve_targets():
        await patcher.plan(target, remove=True)


async def _scale(api: ApiClient, stop: Stop, *, replicas: int) -> int | None:
    """Set the Deployment's replicas; its replicas before (None: no such Deployment)."""
    apps = AppsV1Api(api)
    try:
        status, scale = await call(apps.read_namespaced_deployment_scale, stop.deployment,
                                   stop.namespace)
        if status == 404:
            return None
        if status != 200:
            raise ApplyError(f"read the scale of Deployment {stop.ref}: "
                             f"{message(status, scale)}")
        previous = int((scale.get("spec") or {}).get("replicas") or 0)
        if previous != replicas:
            status, body = await call(
                apps.patch_namespaced_deployment_scale, stop.deployment, stop.namespace,
                [{"op": "replace", "path": "/spec/replicas", "value": replicas}])
            if status >= 300:
                raise ApplyError(f"scale Deployment {stop.ref} to {replicas}: "
                                 f"{message(status, body)}")
    except TRANSIENT as e:
        raise ApplyError(f"scale Deployment {stop.ref}: {_first_line(e)}") from None
    return previous


async def _wait_released(api: ApiClient, stop: Stop, *, say: Callable[[str], None]) -> None:
    namespace, name = stop.lease
    read = functools.partial(read_lease, api, namespace=namespace, name=name)
    told = False
    try:
        async with asyncio.timeout(STOP_TIMEOUT):
            while (holder := await settled_holder(read)) is not None:
                if not told:
                    say(f"waiting for {holder} to stop and release Lease {namespace}/{name}")
                    told = True
                await asyncio.sleep(LEASE_POLL)
    except TimeoutError:
        raise ApplyError(f"Lease {namespace}/{name} still held after {STOP_TIMEOUT:.0f} s "
                         f"with Deployment {stop.ref} scaled to 0") from None


def _first_line(e: BaseException) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0]
