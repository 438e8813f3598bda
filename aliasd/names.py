"""Every DNS name goes through here: normalize, validate, best zone, qualify.

The bottom of the house: imported by every layer, imports nothing of aliasd.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
"""An RFC 1123 label, lower case."""
NS_LABEL = "ns"
"""``ns.<zone>`` is the zone's name server, never an alias."""
WILDCARD = "*."
"""The prefix of a wildcard owner name (RFC 4592): ``*`` as the leftmost label only."""


def normalize_name(name: str) -> str:
    """Lower case, surrounding whitespace removed, exactly one trailing dot."""
    n = name.strip().lower()
    return n.rstrip(".") + "."


def validate_fqdn(name: str, *, wildcard: bool = False) -> str | None:
    """Why ``name`` (normalized) is not a valid RFC 1123 host name, or None.
    ``wildcard``: a leftmost ``*`` label is allowed (an alias's owner name)."""
    bare = name.rstrip(".")
    if not bare:
        return "name is empty"
    if len(bare) > 253:
        return f"name is {len(bare)} characters long (max 253)"
    labels = bare.split(".")
    if wildcard and labels[0] == "*" and len(labels) > 1:
        labels = labels[1:]
    for label in labels:
        if label == "*":
            return ("label '*' is a wildcard, allowed only as the leftmost label of an "
                    "alias inside a served zone")
        if len(label) > 63:
            return f"label {label[:20]!r}... is {len(label)} characters long (max 63)"
        if not LABEL.match(label):
            return (f"label {label!r} is not a valid DNS label "
                    "(lower-case letters, digits and '-', not at either end)")
    return None


def qualify(raw: str, zones: Sequence[str]) -> tuple[str, str]:
    """Normalize ``raw``; a bare label gets the default zone. Returns (name, zone)
    or raises ``ValueError`` with a message a human can act on."""
    if not raw.strip():
        raise ValueError("alias is empty")
    name = absolute_name(raw, zones[0])
    err = validate_fqdn(name, wildcard=True)
    if err:
        raise ValueError(f"alias {raw!r}: {err}")
    zone = best_zone(name, zones)
    if zone is None:
        raise ValueError(
            f"alias {raw!r} is outside the served zones ({', '.join(zones)})"
        )
    if name == WILDCARD + zone:
        # No wildcard at the apex: one claim would answer every name of
        # the shared zone that does not exist (typos, names not deployed yet,
        # names whose owner just deleted its Service).
        raise ValueError(f"alias {raw!r} is a wildcard at the zone apex, which would answer "
                         f"every name of {zone} that does not exist; use one under a "
                         f"subdomain, e.g. *.team.{zone}")
    if name == zone:
        raise ValueError(f"alias {raw!r} is the zone apex, which aliasd itself serves")
    if name == f"{NS_LABEL}.{zone}":
        raise ValueError(f"alias {raw!r} is reserved for the zone's name server")
    return name, zone


def absolute_name(raw: str, default_zone: str) -> str:
    """Normalized; a bare label (no dot at all) gets the default zone, for alias
    names and CNAME targets alike. "web." is absolute: the root's child."""
    name = normalize_name(raw)
    if "." not in raw.strip():
        name += default_zone
    return name


def is_wildcard(name: str) -> bool:
    """Whether ``name`` (normalized) is a wildcard owner name (RFC 4592 2.1.1)."""
    return name.startswith(WILDCARD)


def best_zone(name: str, zones: Iterable[str]) -> str | None:
    """The longest of ``zones`` that ``name`` (normalized) is in or at, or None."""
    best: str | None = None
    for z in zones:
        if (name == z or name.endswith("." + z)) and (best is None or len(z) > len(best)):
            best = z
    return best


def overlaps(name: str, zone: str) -> bool:
    """Whether ``name`` and ``zone`` (normalized) are equal or one is below the
    other: a CoreDNS server block for either would catch queries meant for the
    other's subtree (CoreDNS routes a query to its most specific block)."""
    return name == zone or name.endswith("." + zone) or zone.endswith("." + name)
