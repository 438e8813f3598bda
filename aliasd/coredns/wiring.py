"""One pass over the cluster DNS wiring, outside a running aliasd: show (diff),
apply or remove aliasd's part in every ConfigMap the mode edits. ``aliasd
coredns diff|apply|remove`` prints what this yields; the HTTP API and tests can
call it the same way."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal

from kubernetes_asyncio.client import ApiClient

from aliasd.coredns.patcher import Change, Patcher, PatcherConfig
from aliasd.kubeapi import TRANSIENT
from aliasd.model import ApplyError

Action = Literal["diff", "apply", "remove"]
ACTIONS: tuple[Action, ...] = ("diff", "apply", "remove")


async def wire(api: ApiClient, config: PatcherConfig, *, action: Action) -> AsyncIterator[Change]:
    """The change of each target ConfigMap, in order, as it is planned (``diff``)
    or written (``apply``, ``remove``). ``remove`` restores each ConfigMap to what
    it would be without aliasd. Kubernetes API failures raise ``ApplyError``."""
    patcher = Patcher(api, config)
    remove = action == "remove"
    try:
        targets = await patcher.resolve_targets()
        if not remove:
            patcher.forward = await patcher.resolve_forward()
    except TRANSIENT as e:
        raise _api_error(e) from None
    for target in targets:
        try:
            change = await patcher.apply(target, remove=remove, write=action != "diff")
        except TRANSIENT as e:
            raise _api_error(e) from None
        yield change


def _api_error(e: BaseException) -> ApplyError:
    first = (str(e).splitlines() or [type(e).__name__])[0]
    return ApplyError(f"Kubernetes API: {first}")
