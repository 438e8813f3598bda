"""What the cluster DNS configuration should look like (pure).

Given the current ConfigMap data, the served zones and where aliasd listens,
compute the desired data: one managed Corefile block per zone, or aliasd's
entries in kube-dns ``stubDomains``. Removing is the same computation with no
zones, which is how ``aliasd coredns remove`` restores the original exactly.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aliasd.coredns import corefile
from aliasd.model import ApplyError

COREFILE_KEY = "Corefile"
STUB_KEY = "stubDomains"
# kube-dns mode only: stubDomains is JSON, so exact removal needs aliasd's zones
# and the value as it was before aliasd touched it (null = no key).
STUB_ANNOTATION = "aliasd.io/stub-domains"


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


def corefile_text(text: str, zones: Sequence[str], forward: Forward | None
                  ) -> tuple[str, tuple[str, ...]]:
    """The Corefile with one managed block per zone (same port and bind as the
    root ``.`` block), stale managed blocks removed, user-owned zones left alone."""
    try:
        root = corefile.root_block(text)
        port, bind = 53, None
        if root is not None:
            port = next(corefile.split_key(k)[1] for k in root.keys
                        if corefile.split_key(k)[0] == ".")
            args = corefile.directive(root, "bind")
            bind = " ".join(args) if args else None
        wanted = [zone_key(z) for z in zones]
        out = text
        for region in corefile.managed_regions(text):
            if region.zone not in wanted:
                out = corefile.remove_managed(out, region.zone)
        conflicts = []
        for z in wanted:
            if corefile.user_blocks_for(out, z):
                conflicts.append(z)
                out = corefile.remove_managed(out, z)
            elif forward is not None:
                block = corefile.render_block(z, port=port, forward_to=str(forward), bind=bind)
                out = corefile.upsert_managed(out, z, block)
    except corefile.CorefileError as e:
        raise ApplyError(f"cannot parse the Corefile: {e}") from None
    return out, tuple(conflicts)


def stub_domains(value: str | None, annotations: Mapping[str, str], zones: Sequence[str],
                 forward: Forward | None
                 ) -> tuple[str | None, dict[str, str], tuple[str, ...]]:
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
    conflicts = tuple(z for z in wanted if z in rest)
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
