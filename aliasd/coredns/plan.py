"""What the cluster DNS configuration should look like (pure).

Given the current ConfigMap data, the served zones and where aliasd listens,
compute the desired data: one managed Corefile block per zone, one
``aliasd-<zone>.server`` key per zone in ``coredns-custom`` (AKS, k3s), or
aliasd's entries in kube-dns ``stubDomains``. Removing is the same computation
with no zones, which is how ``aliasd coredns remove`` restores the original
exactly.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aliasd.coredns import corefile
from aliasd.model import ApplyError
from aliasd.names import overlaps

COREFILE_KEY = "Corefile"
STUB_KEY = "stubDomains"
# kube-dns mode only: stubDomains is JSON, so exact removal needs aliasd's zones
# and the value as it was before aliasd touched it (null = no key).
STUB_ANNOTATION = "aliasd.io/stub-domains"
# coredns-custom mode: aliasd owns exactly the keys named aliasd-<name>.server.
CUSTOM_PREFIX = "aliasd-"
CUSTOM_SUFFIX = ".server"
_CUSTOM_IMPORT = re.compile(r"(^|/)custom/\*\.server$")
MAX_KEY = 253  # a ConfigMap data key
CUSTOM_HEADER = "# managed by aliasd; `aliasd coredns remove` deletes this key\n"


@dataclass(frozen=True)
class Forward:
    """Where the cluster DNS forwards the alias zones."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def zone_key(z: str) -> str:
    return z.lower().rstrip(".")


def managed_names(text: str) -> list[str]:
    """The names of aliasd's blocks in a Corefile (unparseable: none)."""
    try:
        return [r.zone for r in corefile.managed_regions(text)]
    except corefile.CorefileError:
        return []


def stub_names(annotations: Mapping[str, str]) -> list[str]:
    """aliasd's kube-dns stubDomains entries, from its record annotation."""
    try:
        return list(_json_object(annotations.get(STUB_ANNOTATION), STUB_ANNOTATION)
                    .get("zones", []))
    except ApplyError:
        return []


def _listen(text: str) -> tuple[int, str | None]:
    """Port and ``bind`` of the Corefile's root ``.`` block (53 and none without one)."""
    root = corefile.root_block(text)
    if root is None:
        return 53, None
    port = next(corefile.split_key(k)[1] for k in root.keys if corefile.split_key(k)[0] == ".")
    args = corefile.directive(root, "bind")
    return port, (" ".join(args) if args else None)


Conflicts = dict[str, str]
"""Names aliasd adds no block for -> why (the ``CorefileConflict`` Event)."""


def _block_conflict(z: str) -> str:
    return (f"zone {z} already has a server block aliasd does not own; aliasd leaves it "
            f"alone, so that block decides where {z} goes")


# Plugins that answer the cluster's own service discovery: no name below
# their zones may be taken over either (it would shadow a Service's name).
_DISCOVERY = frozenset({"kubernetes", "k8s_external", "federation", "etcd"})


def _plugin_conflict(z: str, served: Sequence[tuple[str, str]]) -> str | None:
    """Why ``z`` overlaps a zone a plugin serves (``served``: (zone, plugin) of
    :func:`corefile.plugin_zones`), or None.

    A block for the zone itself or a parent of it would take that plugin's
    whole zone away from it: CoreDNS sends a query to its most specific server
    block, so ``cluster.local:53`` would end Service discovery for the cluster
    although ``kubernetes`` sits in the ``.`` block. Below a service-discovery
    zone (``svc.cluster.local``) a block would shadow Services' names, so that
    is refused too; below any other zone (``legacy-lb.example.com`` under a
    ``hosts`` or ``file`` zone ``example.com``) a block takes exactly the name
    taken over, which is what a takeover is for."""
    name = z + "."
    for zone, plugin in served:
        whole = name == zone or zone.endswith("." + name)
        if whole or (plugin in _DISCOVERY and overlaps(name, zone)):
            return (f"zone {z} overlaps {zone.rstrip('.')}, which the {plugin} plugin of "
                    f"the Corefile serves; aliasd adds no server block for it, so the "
                    f"Corefile keeps answering it")
    return None


def corefile_text(text: str, zones: Sequence[str], forward: Forward | None
                  ) -> tuple[str, Conflicts]:
    """The Corefile with one managed block per zone (same port and bind as the
    root ``.`` block), stale managed blocks removed, user-owned zones (and the
    zones of the Corefile's plugins, such as ``kubernetes``) left alone."""
    try:
        port, bind = _listen(text)
        wanted = [zone_key(z) for z in zones]
        served = corefile.plugin_zones(text)  # aliasd's own blocks are not read
        out = text
        for region in corefile.managed_regions(text):
            if region.zone not in wanted:
                out = corefile.remove_managed(out, region.zone)
        conflicts: Conflicts = {}
        for z in wanted:
            why = (_block_conflict(z) if corefile.user_blocks_for(out, z)
                   else _plugin_conflict(z, served))
            if why is not None:
                conflicts[z] = why
                out = corefile.remove_managed(out, z)
            elif forward is not None:
                block = corefile.render_block(z, port=port, forward_to=str(forward), bind=bind)
                out = corefile.upsert_managed(out, z, block)
    except corefile.CorefileError as e:
        raise ApplyError(f"cannot parse the Corefile: {e}") from None
    return out, conflicts


def imports_custom_servers(text: str) -> bool:
    """Whether a Corefile imports ``coredns-custom``'s ``*.server`` keys at the top
    level (AKS: ``import custom/*.server``; k3s: ``import
    /etc/coredns/custom/*.server``), so a server block there is served."""
    try:
        return any(_CUSTOM_IMPORT.search(arg) for arg in corefile.top_level_imports(text))
    except corefile.CorefileError:
        return False


def custom_key(name: str) -> str:
    return f"{CUSTOM_PREFIX}{zone_key(name)}{CUSTOM_SUFFIX}"


def is_custom_key(key: str) -> bool:
    return key.startswith(CUSTOM_PREFIX) and key.endswith(CUSTOM_SUFFIX)


def custom_names(data: Mapping[str, str]) -> list[str]:
    """The names aliasd has keys for in ``coredns-custom``."""
    return [k[len(CUSTOM_PREFIX):-len(CUSTOM_SUFFIX)] for k in data if is_custom_key(k)]


def custom_data(data: Mapping[str, str], platform: str, zones: Sequence[str],
                forward: Forward | None) -> tuple[dict[str, str], Conflicts]:
    """``coredns-custom`` data with one ``aliasd-<zone>.server`` key per zone (a
    server block on the port and bind of ``platform``'s root block), every other
    key untouched, aliasd's stale keys gone.

    A zone that already has a server block, in the platform Corefile or in
    someone else's ``*.server`` key, is a conflict and gets no key: CoreDNS
    refuses two blocks for one zone and port, and would stop reloading. So is
    a zone overlapping one a plugin serves (``kubernetes cluster.local``), and
    a name whose key would be too long: each one refused alone, the others
    still get their keys."""
    try:
        port, bind = _listen(platform)
        taken = {corefile.split_key(k)[0] for b in corefile.server_blocks(platform)
                 for k in b.keys}
        served = corefile.plugin_zones(platform)
    except corefile.CorefileError as e:
        raise ApplyError(f"cannot parse the Corefile: {e}") from None
    out = {k: v for k, v in data.items() if not is_custom_key(k)}
    for k, v in out.items():
        if k.endswith(CUSTOM_SUFFIX):
            # A broken key of someone else's breaks CoreDNS, not aliasd's plan.
            with contextlib.suppress(corefile.CorefileError):
                taken |= {corefile.split_key(key)[0] for b in corefile.server_blocks(v)
                          for key in b.keys}
                served += corefile.plugin_zones(v)
    conflicts: Conflicts = {}
    for z in (zone_key(z) for z in zones):
        key = custom_key(z)
        why = _block_conflict(z) if z + "." in taken else _plugin_conflict(z, served)
        if why is None and len(key) > MAX_KEY:
            # A ConfigMap key is at most 253 characters (a DNS subdomain); one
            # long name must not stop the wiring of every other one.
            why = (f"name {z}: its coredns-custom key would be {len(key)} characters, "
                   f"longer than a ConfigMap key may be ({MAX_KEY}); aliasd adds no key "
                   f"for it")
        if why is not None:
            conflicts[z] = why
        elif forward is not None:
            out[key] = CUSTOM_HEADER + corefile.render_server(
                z, port=port, forward_to=str(forward), bind=bind)
    return out, conflicts


def stub_domains(value: str | None, annotations: Mapping[str, str], zones: Sequence[str],
                 forward: Forward | None
                 ) -> tuple[str | None, dict[str, str], Conflicts]:
    """kube-dns ``stubDomains`` with ``{"<zone>": ["<ip>"]}`` merged in, other
    entries untouched; (text or None for no key, annotations, conflicts).

    The annotation records aliasd's zones and the value before aliasd's first
    change, so that with no zones left the original text comes back exactly
    (when nobody else changed the rest meanwhile)."""
    current = _json_object(value, "kube-dns stubDomains")
    annotations = dict(annotations)
    record = _json_object(annotations.get(STUB_ANNOTATION), STUB_ANNOTATION)
    original = record.get("original", value)
    prev_ours = set(record.get("zones", []))
    rest = {k: v for k, v in current.items() if k not in prev_ours}
    wanted = [zone_key(z) for z in zones]
    conflicts = {z: (f"zone {z} already has a stubDomains entry aliasd does not own; "
                     f"aliasd leaves it alone") for z in wanted if z in rest}
    if forward is not None and len(conflicts) < len(wanted) and forward.port != 53:
        raise ApplyError(f"kube-dns stubDomains take IPs only, so aliasd's Service must "
                         f"listen on port 53 (the forward target is {forward})")
    ours = {z: [forward.host] for z in wanted if z not in rest} if forward else {}
    if not ours:
        annotations.pop(STUB_ANNOTATION, None)
        if original is not None and _json_object(original, "the recorded original") == rest:
            return original, annotations, conflicts
        if original is None and not rest:
            return None, annotations, conflicts
        return json.dumps(rest), annotations, conflicts
    new = {**rest, **ours}
    annotations[STUB_ANNOTATION] = json.dumps({"original": original, "zones": sorted(ours)})
    return (value if current == new else json.dumps(new)), annotations, conflicts


def _json_object(text: str | None, what: str) -> dict[str, Any]:
    if text is None or not text.strip():
        return {}
    try:
        v = json.loads(text)
    except ValueError as e:
        raise ApplyError(f"{what} is not valid JSON: {e}") from None
    if not isinstance(v, dict):
        raise ApplyError(f"{what} is not a JSON object")
    return v
