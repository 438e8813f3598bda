"""The name policy kept where tenants cannot write it (``--policy-configmap``).

A Namespace's ``aliasd.io/allowed-names`` annotation is written by whoever
may edit the Namespace, and where tenants create their own namespaces
(Capsule, HNC, self-service projects) that is the tenant, who can give a new
namespace ``'*'``. With ``--policy-configmap NAMESPACE/NAME`` the annotations
are ignored and each key of that ConfigMap, in aliasd's own namespace, is a
namespace's allowed names (the annotation's syntax): only those who may edit
the ConfigMap set the policy. A namespace without a key gets
``--default-allowed-names``; an absent ConfigMap is a policy with no keys.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from collections.abc import Callable

from kubernetes_asyncio.client import ApiClient, CoreV1Api

from aliasd.model import AliasClaim
from aliasd.sources.watch import Informer, Obj

log = logging.getLogger(__name__)

PolicySink = Callable[[str, "str | None"], None]
"""(namespace, allowed-names value): a namespace's policy changed (None: none)."""


class PolicyConfigMap:
    """Watches one ConfigMap and hands each namespace's changed value on."""

    name = "policy"
    incremental = True  # pushes policies, never claims

    def __init__(self, api: ApiClient, *, namespace: str, name: str,
                 on_namespace: PolicySink, on_change: Callable[[], None],
                 restarts: Counter[str]) -> None:
        self.ref = f"{namespace}/{name}"
        self._push = on_namespace
        self.allowed_names: dict[str, str] = {}  # namespace -> allowed names

        def restarted() -> None:
            restarts["configmaps"] += 1

        core = CoreV1Api(api)
        self._informer = Informer(
            f"configmap {self.ref}",
            functools.partial(core.list_namespaced_config_map, namespace,
                              field_selector=f"metadata.name={name}"),
            on_change=self._changed, on_restart=restarted, on_sync=on_change)

    @property
    def claims(self) -> list[AliasClaim]:
        return []

    @property
    def synced(self) -> bool:
        return self._informer.synced

    @property
    def error(self) -> str | None:
        return self._informer.error

    def _changed(self, key: str, old: Obj | None, new: Obj | None) -> None:
        data = {str(k): str(v) for k, v in ((new or {}).get("data") or {}).items()}
        for namespace in sorted(self.allowed_names.keys() | data.keys()):
            if self.allowed_names.get(namespace) != data.get(namespace):
                self._push(namespace, data.get(namespace))
        if data != self.allowed_names:
            log.info("ConfigMap %s: allowed names for %d namespaces", self.ref, len(data))
        self.allowed_names = data

    async def run(self) -> None:
        await self._informer.run()
