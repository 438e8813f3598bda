"""Apply the desired cluster DNS configuration to its ConfigMaps (the I/O edge
of ``aliasd.coredns``).

Every write is an RFC 6902 JSON Patch whose ``test`` ops pin the values being
replaced, so a concurrent edit by someone else makes the patch fail (422)
instead of being overwritten; then the ConfigMap is re-read and the change
recomputed on top of that edit. Nothing is written when nothing differs, so a
restart causes zero writes. A watch on each ConfigMap repairs drift.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import functools
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jsonpatch
from kubernetes_asyncio.client import ApiClient, CoreV1Api

from aliasd.coredns import plan
from aliasd.coredns.lease import LeaderElector
from aliasd.coredns.plan import Forward
from aliasd.kubeapi import TRANSIENT, call, message, split_ref
from aliasd.model import ApplyError, ConfigError, Owner, parse_ip
from aliasd.sources.mapping import Problem
from aliasd.sources.watch import Backoff, Informer, NotFound
from aliasd.supervisor import supervise

log = logging.getLogger(__name__)

MODES = ("auto", "corefile", "coredns-custom", "kube-dns", "node-local-dns", "off")
RESYNC_SECONDS = 30.0
MAX_ATTEMPTS = 8


@dataclass(frozen=True)
class Target:
    """One ConfigMap aliasd edits, and how (a Corefile, ``coredns-custom``
    keys, or kube-dns JSON)."""

    namespace: str
    name: str
    flavour: str  # "corefile" | "coredns-custom" | "kube-dns"

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def key(self) -> str:
        """The data key aliasd edits (``coredns-custom``: its own keys, see plan)."""
        return plan.STUB_KEY if self.flavour == "kube-dns" else plan.COREFILE_KEY


COREDNS = Target("kube-system", "coredns", "corefile")
# AKS and k3s: the platform owns (and on AKS reconciles) the Corefile, which
# imports this ConfigMap's *.server keys as extra server blocks.
COREDNS_CUSTOM = Target("kube-system", "coredns-custom", "coredns-custom")
KUBE_DNS = Target("kube-system", "kube-dns", "kube-dns")
NODE_LOCAL_DNS = Target("kube-system", "node-local-dns", "corefile")


@dataclass(frozen=True)
class PatcherConfig:
    zones: tuple[str, ...]
    mode: str = "auto"
    forward_to: Forward | None = None  # else the cluster IP of dns_service
    dns_service: str = "aliasd-system/aliasd"
    coredns_configmap: str = "kube-system/coredns"


@dataclass(frozen=True)
class Change:
    """A ConfigMap as read, and what aliasd wants it to be."""

    target: Target
    obj: dict[str, Any]  # the ConfigMap as read
    data: dict[str, str]  # desired data
    annotations: dict[str, str]  # desired annotations
    conflicts: plan.Conflicts = field(default_factory=dict)  # name -> why no block
    exists: bool = True  # False: the ConfigMap is absent and would be created

    @property
    def old_value(self) -> str | None:
        return (self.obj.get("data") or {}).get(self.target.key)

    @property
    def new_value(self) -> str | None:
        return self.data.get(self.target.key)

    @property
    def changed(self) -> bool:
        meta = self.obj.get("metadata", {})
        return ((self.obj.get("data") or {}) != self.data
                or (meta.get("annotations") or {}) != self.annotations)

    def diff(self) -> str:
        """Unified diff of every data value that changes (empty when none does)."""
        old: dict[str, str] = self.obj.get("data") or {}
        out: list[str] = []
        for key in sorted(set(old) | set(self.data)):
            if old.get(key) != self.data.get(key):
                name = f"{self.target.ref}:data.{key}"
                out += difflib.unified_diff(_lines(old.get(key)), _lines(self.data.get(key)),
                                            f"a/{name}", f"b/{name}")
        return "".join(out)

    def patch(self) -> list[dict[str, Any]]:
        """JSON Patch from what was read to what is wanted, with a ``test`` op in
        front of every replaced or removed value (and on resourceVersion when a
        member is added), so it applies only to the ConfigMap exactly as read."""
        meta = self.obj.get("metadata", {})
        # Only the parts aliasd edits, present exactly where the object has them.
        src: dict[str, Any] = {"metadata": {}}
        if "annotations" in meta:
            src["metadata"]["annotations"] = meta["annotations"]
        if "data" in self.obj:
            src["data"] = self.obj["data"]
        dst: dict[str, Any] = {"metadata": {"annotations": self.annotations}, "data": self.data}
        if not self.annotations and "annotations" not in meta:
            dst["metadata"].pop("annotations")
        if not self.data and "data" not in self.obj:
            dst.pop("data")
        ops = list(jsonpatch.make_patch(src, dst))
        tests: list[dict[str, Any]] = []
        for op in ops:
            if op["op"] in ("replace", "remove"):
                value = jsonpatch.JsonPointer(op["path"]).resolve(src)
                tests.append({"op": "test", "path": op["path"], "value": value})
            elif op["op"] == "add" and not any(t["path"] == "/metadata/resourceVersion"
                                               for t in tests):
                tests.append({"op": "test", "path": "/metadata/resourceVersion",
                              "value": meta.get("resourceVersion")})
        return tests + ops


def _lines(text: str | None) -> list[str]:
    if text is None:
        return []
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n\\ No newline at end of file\n"
    return lines


def parse_forward(text: str, *, flag: str = "--forward-to") -> Forward:
    """``IP:PORT`` or ``[IPv6]:PORT`` (port defaults to 53). An IP, never a name:
    CoreDNS resolves names in ``forward`` only once, at start."""
    t = text.strip()
    host, port = t, "53"
    if t.startswith("["):
        host, _, rest = t[1:].partition("]")
        port = rest.lstrip(":") or "53"
    elif t.count(":") == 1:
        host, port = t.split(":")
    try:
        parse_ip(host)
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: need IP:PORT with an IP address (CoreDNS "
                          f"resolves a host name in forward only once, at start)") from None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{flag} {text!r}: port must be 1..65535")
    return Forward(host, int(port))


class Patcher:
    """Keeps the cluster DNS ConfigMaps forwarding the alias zones to aliasd."""

    name = "coredns"

    def __init__(self, api: ApiClient, config: PatcherConfig, *,
                 results: Counter[str] | None = None,
                 report: Callable[[list[Problem]], None] = lambda problems: None,
                 elect: Callable[[Callable[[bool], None]], LeaderElector] | None = None
                 ) -> None:
        if config.mode not in MODES:
            raise ConfigError(f"--coredns-mode {config.mode!r}: choose one of "
                              f"{', '.join(MODES)}")
        self._core = CoreV1Api(api)
        self._config = config
        self._results: Counter[str] = results if results is not None else Counter()
        self._report = report
        ns, name = split_ref(config.coredns_configmap, flag="--coredns-configmap")
        self._coredns = Target(ns, name, "corefile")
        self._targets: list[Target] = []
        self._conflicts: dict[str, plan.Conflicts] = {}
        self.forward: Forward | None = config.forward_to
        self._error: str | None = None
        # Only the leader writes (None: no election, this process always does);
        # a change of leader reconciles at once.
        self._elector: LeaderElector | None = (
            elect(lambda leading: self._mark_dirty()) if elect is not None else None)
        self._dirty = asyncio.Event()
        self._applied: set[str] = set()  # targets this process has written (drift = change after)
        # Names outside the zones that aliasd serves (takeovers), each
        # one more managed block; None until the sources have synced, and
        # meanwhile the blocks already there are kept as they are.
        self._takeovers: tuple[str, ...] | None = None

    def set_takeovers(self, names: tuple[str, ...]) -> None:
        """The taken-over names of the current snapshot (a reporter calls this)."""
        if names != self._takeovers:
            self._takeovers = names
            self._mark_dirty()

    def _names(self, target: Target, data: dict[str, str],
               annotations: dict[str, str]) -> tuple[str, ...]:
        """The zones, plus the taken-over names (the ones already wired while
        those are not known yet)."""
        if self._takeovers is not None:
            return (*self._config.zones, *self._takeovers)
        zones = {plan.zone_key(z) for z in self._config.zones}
        if target.flavour == "corefile":
            present = plan.managed_names(data.get(target.key) or "")
        elif target.flavour == "coredns-custom":
            present = plan.custom_names(data)
        else:
            present = plan.stub_names(annotations)
        return (*self._config.zones, *(n for n in present if n not in zones))

    # ---- reading --------------------------------------------------------------------

    async def _read(self, target: Target) -> dict[str, Any] | None:
        status, obj = await call(self._core.read_namespaced_config_map, target.name,
                                 target.namespace)
        if status == 404:
            return None
        if status >= 300:
            raise ApplyError(f"read ConfigMap {target.ref}: {message(status, obj)}")
        return obj

    async def resolve_targets(self) -> list[Target]:
        """The ConfigMaps this mode edits; ``auto`` looks at which exist."""
        mode = self._config.mode
        if mode == "off":
            return []
        if mode == "corefile":
            return [self._coredns]
        if mode == "coredns-custom":
            return [COREDNS_CUSTOM]
        if mode == "kube-dns":
            return [KUBE_DNS]
        if mode == "node-local-dns":
            return [self._coredns, NODE_LOCAL_DNS]
        read = {t: await self._read(t) for t in (self._coredns, KUBE_DNS, NODE_LOCAL_DNS)}
        found = [t for t, obj in read.items() if obj is not None]
        if self._coredns in found:  # CoreDNS serves; a kube-dns ConfigMap would be unused
            platform = ((read[self._coredns] or {}).get("data") or {}).get(plan.COREFILE_KEY)
            if plan.imports_custom_servers(platform or ""):
                # AKS, k3s: leave the platform's Corefile alone, add keys it imports.
                found[found.index(self._coredns)] = COREDNS_CUSTOM
            return [t for t in found if t != KUBE_DNS]
        if not found:
            raise ApplyError(f"no cluster DNS ConfigMap found (looked for {self._coredns.ref}, "
                             f"{KUBE_DNS.ref}, {NODE_LOCAL_DNS.ref}); set --coredns-mode")
        return found

    async def resolve_forward(self) -> Forward:
        """``--forward-to``, else the cluster IP and DNS port of aliasd's Service."""
        if self._config.forward_to is not None:
            return self._config.forward_to
        ns, name = split_ref(self._config.dns_service, flag="--dns-service")
        status, svc = await call(self._core.read_namespaced_service, name, ns)
        if status >= 300:
            raise ApplyError(f"cannot read aliasd's Service {ns}/{name} for the forward "
                             f"target: {message(status, svc)} (or set --forward-to)")
        spec = svc.get("spec") or {}
        ip = spec.get("clusterIP")
        if not ip or ip == "None":
            raise ApplyError(f"Service {ns}/{name} has no cluster IP (headless?); CoreDNS "
                             f"must forward to a stable IP")
        ports = spec.get("ports") or []
        port = next((p for p in ports if p.get("name") == "dns"), None) or next(
            (p for p in ports if p.get("port") == 53), None) or next(
            (p for p in ports if p.get("protocol", "TCP") == "UDP"), None)
        if port is None:
            raise ApplyError(f"Service {ns}/{name} has no DNS port (name it 'dns')")
        return Forward(ip, int(port["port"]))

    async def plan(self, target: Target, *, remove: bool = False) -> Change:
        obj = await self._read(target)
        exists = obj is not None
        if obj is None:
            if target.flavour != "coredns-custom":
                raise ApplyError(f"ConfigMap {target.ref} not found")
            obj = {"metadata": {}}  # k3s ships none: aliasd creates it
        forward = None if remove else self.forward
        data = dict(obj.get("data") or {})
        annotations = dict(obj.get("metadata", {}).get("annotations") or {})
        value = data.get(target.key)
        zones = () if remove else self._names(target, data, annotations)
        if target.flavour == "coredns-custom":
            platform = await self._platform_corefile(required=not remove)
            data, conflicts = plan.custom_data(data, platform, zones, forward)
        elif target.flavour == "corefile":
            if value is None:
                raise ApplyError(f"ConfigMap {target.ref} has no data.{target.key}")
            text, conflicts = plan.corefile_text(value, zones, forward)
            data[target.key] = text
        else:
            stub, annotations, conflicts = plan.stub_domains(value, annotations, zones, forward)
            if stub is None:
                data.pop(target.key, None)
            else:
                data[target.key] = stub
        return Change(target, obj, data, annotations, conflicts, exists=exists)

    async def _platform_corefile(self, *, required: bool) -> str:
        """The platform's Corefile, read only: port, bind and its own blocks."""
        obj = await self._read(self._coredns)
        text: str | None = ((obj or {}).get("data") or {}).get(plan.COREFILE_KEY)
        if text is None or not plan.imports_custom_servers(text):
            if required:
                raise ApplyError(
                    f"{self._coredns.ref} has no Corefile that imports custom/*.server, so "
                    f"server blocks in {COREDNS_CUSTOM.ref} would not be served; use "
                    f"--coredns-mode corefile (or auto)")
            return text or ""
        return text

    # ---- writing --------------------------------------------------------------------

    async def apply(self, target: Target, *, remove: bool = False,
                    write: bool = True) -> Change:
        """Plan and (when ``write``) patch until it sticks; the final change."""
        backoff = Backoff(initial=0.1, cap=2.0)
        for attempt in range(1, MAX_ATTEMPTS + 1):
            change = await self.plan(target, remove=remove)
            if not write:
                return change
            if not change.changed:
                self._results["unchanged"] += 1
                return change
            self._results["attempt"] += 1
            if change.exists:
                status, body = await call(self._core.patch_namespaced_config_map, target.name,
                                          target.namespace, change.patch(),
                                          field_manager="aliasd")
            else:
                status, body = await call(self._core.create_namespaced_config_map,
                                          target.namespace, {
                                              "apiVersion": "v1", "kind": "ConfigMap",
                                              "metadata": {"name": target.name},
                                              "data": change.data}, field_manager="aliasd")
                if status == 403:
                    self._results["error"] += 1
                    raise ApplyError(
                        f"cannot create ConfigMap {target.ref} ({message(status, body)}); "
                        f"create it once: kubectl -n {target.namespace} create configmap "
                        f"{target.name}")
            if status < 300:
                self._results["applied"] += 1
                return change
            if status in (409, 422) and attempt < MAX_ATTEMPTS:
                # Someone changed it between our read and our patch: their edit
                # stands; recompute ours on top of it.
                self._results["conflict"] += 1
                log.info("%s changed while patching (%s); re-reading (attempt %d)",
                         target.ref, message(status, body), attempt)
                await asyncio.sleep(backoff.next())
                continue
            self._results["error"] += 1
            raise ApplyError(f"patch ConfigMap {target.ref}: {message(status, body)}")
        raise AssertionError("unreachable")

    async def _reconcile(self, write: bool) -> None:
        """One pass over every target; errors are kept for /readyz and retried."""
        problems: list[Problem] = []
        errors = []
        for target in self._targets:
            try:
                change = await self.apply(target, write=write)
            except (ApplyError, *TRANSIENT) as e:
                errors.append(str(e).splitlines()[0][:300])
                continue
            self._conflicts[target.ref] = change.conflicts
            if write and change.changed:
                self._log_change(change)
                self._applied.add(target.ref)
            for why in change.conflicts.values():
                meta = change.obj.get("metadata", {})
                problems.append(Problem(
                    Owner(0.0, target.namespace, target.name, "ConfigMap", meta.get("uid", "")),
                    "CorefileConflict", why))
        error = "; ".join(errors) or None
        if error and error != self._error:
            log.warning("CoreDNS wiring: %s", error)
        self._error = error
        if write:
            self._report(problems)

    def _log_change(self, change: Change) -> None:
        if change.target.ref in self._applied:
            log.warning("%s was changed by someone else; restoring aliasd's part:\n%s",
                        change.target.ref, change.diff().rstrip())
        else:
            log.info("patched %s:\n%s", change.target.ref, change.diff().rstrip())

    # ---- running --------------------------------------------------------------------

    def _mark_dirty(self) -> None:
        self._dirty.set()

    @property
    def elector(self) -> LeaderElector | None:
        """The Lease election that decides whether this replica writes (None:
        every replica writes); other leader-only writers follow it too."""
        return self._elector

    def status(self) -> dict[str, Any]:
        return {
            "mode": self._config.mode,
            "targets": [t.ref for t in self._targets],
            "forward_to": str(self.forward) if self.forward else None,
            "leader": self._elector.leading if self._elector else True,
            "conflicts": {ref: list(z) for ref, z in self._conflicts.items() if z},
            "takeovers": list(self._takeovers or ()),
            "error": self._error,
        }

    async def run(self) -> None:
        backoff = Backoff(initial=0.5, cap=30.0)
        while True:  # targets and forward address first; both need the API server
            try:
                self._targets = await self.resolve_targets()
                self.forward = await self.resolve_forward()
                break
            except (ApplyError, ConfigError, *TRANSIENT) as e:
                msg = str(e).splitlines()[0][:300]
                if msg != self._error:
                    log.warning("CoreDNS wiring: %s", msg)
                self._error = msg
                await asyncio.sleep(backoff.next())
        if not self._targets:
            log.info("CoreDNS wiring is off")
            return
        log.info("CoreDNS wiring (%s): %s forward the alias zones to %s", self._config.mode,
                 ", ".join(t.ref for t in self._targets), self.forward)
        watched = list(self._targets)
        if COREDNS_CUSTOM in watched:  # its port, bind and blocks decide the keys
            watched.append(self._coredns)
        watches = [Informer(f"configmap {t.ref}", functools.partial(
            self._core.list_namespaced_config_map, t.namespace,
            field_selector=f"metadata.name={t.name}"),
            on_change=lambda k, old, new: self._mark_dirty()) for t in watched]
        tasks = {f"watch-{w.name}": _watch(w) for w in watches}
        if self._elector is not None:
            tasks["leader-election"] = self._elector.run()
        tasks["reconcile"] = self._reconcile_loop()
        try:
            await supervise(tasks)
        finally:
            if self._elector is not None:
                await asyncio.shield(self._elector.release())

    async def _reconcile_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), RESYNC_SECONDS)
            self._dirty.clear()
            with contextlib.suppress(ApplyError, ConfigError, *TRANSIENT):
                if self._config.forward_to is None:  # follow the Service if recreated
                    self.forward = await self.resolve_forward()
            await self._reconcile(write=self._elector is None or self._elector.leading)


async def _watch(informer: Informer) -> None:
    """A ConfigMap watch; one whose resource is not served just ends."""
    with contextlib.suppress(NotFound):
        await informer.run()
