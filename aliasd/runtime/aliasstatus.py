"""An Alias's status from the engine's result (pure: no I/O, no clock).

Conditions follow the Kubernetes API conventions and Gateway API's names:
``Accepted`` (every hostname is valid, inside a served zone, allowed by the
name policy and not lost to an older claim), ``ResolvedRefs`` (the Service
exists and has a usable address), ``Programmed`` (every live replica serves
the answer the status names), the summary ``Ready``, and with health checks
``Healthy`` and each checked target's health (as the writing replica's
probes see it). What only aliasd
knows goes here with a reason, never into a crash or a silent drop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aliasd import names
from aliasd.engine import KEY_SEP
from aliasd.model import Check, utc_timestamp
from aliasd.resolver import NOT_ALLOWED, Invalid, Resolution, Result
from aliasd.sources.aliases import AliasInfo
from aliasd.sources.health import STARTING, TargetHealth
from aliasd.zoneconfig import ZoneConfig

ACCEPTED, RESOLVED_REFS, READY, HEALTHY = "Accepted", "ResolvedRefs", "Ready", "Healthy"
PROGRAMMED, PENDING = "Programmed", "Pending"
CONDITION_TYPES = (ACCEPTED, RESOLVED_REFS, PROGRAMMED, READY, HEALTHY)
Health = Mapping[Check, TargetHealth]
"""Each probed check's health (the prober's states)."""
NO_HEALTH: Health = {}


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str


@dataclass(frozen=True)
class Desired:
    """What the status should say, without the bookkeeping (observed
    generation, serial, transition times) added when it is written."""

    hostnames: tuple[str, ...]
    addresses: tuple[str, ...]
    cname: str | None
    conditions: tuple[Condition, ...]
    # Each checked target: (what is probed, healthy, since, last error).
    targets: tuple[tuple[str, bool, float | None, str | None], ...] = field(default=())

    def targets_json(self) -> list[dict[str, Any]]:
        out = []
        for target, healthy, since, error in self.targets:
            t: dict[str, Any] = {"target": target, "healthy": healthy}
            if since is not None:
                t["lastTransitionTime"] = utc_timestamp(since)
            if error is not None:
                t["lastError"] = error[:256]
            out.append(t)
        return out


def engine_key(source: str, key: str) -> str:
    """The engine's key of the Alias ``key`` ("ns/name") of ``source``."""
    return f"{source}{KEY_SEP}alias/{key}"


def inputs(info: AliasInfo, result: Result, zones: ZoneConfig, key: str,
           health: Health = NO_HEALTH) -> tuple[object, ...]:
    """What :func:`desired` reads from ``result`` and ``health`` for ``info``:
    when these are the same objects as last time, the status is the same (a
    cheap check)."""
    return (info, result.invalid_by_key.get(key),
            *(result.resolutions.get(served_name(h, zones)) for h in info.hostnames),
            *(health.get(c) for c in _checks(info)))


def _checks(info: AliasInfo) -> list[Check]:
    return list(dict.fromkeys(c.check for c in info.claims if c.check is not None))


def served_name(hostname: str, zones: ZoneConfig) -> str:
    """The name an Alias's ``hostname`` is resolved under (a bare label gets
    the default zone)."""
    return names.absolute_name(hostname, zones.zones[0])


def desired(info: AliasInfo, result: Result, zones: ZoneConfig, key: str,
            health: Health = NO_HEALTH) -> Desired:
    """The status of the Alias ``info`` (engine key ``key``) in ``result``,
    its checked targets' health from ``health``."""
    invalid = {i.claim.name: i for i in result.invalid_by_key.get(key, ())}
    refused: list[tuple[str, str]] = []  # (reason, message), one per refused hostname
    served: list[str] = []
    addresses: list[str] = []
    cname: str | None = None
    if info.invalid is not None:
        refused.append(("InvalidTargets", info.invalid))
    for h in info.hostnames:
        inv = invalid.get(h)
        if inv is not None:
            refused.append((_reason(inv, zones), inv.reason))
            continue
        name = served_name(h, zones)
        res: Resolution | None = result.resolutions.get(name)
        if res is None:
            continue  # no claim for it (a missing Service): ResolvedRefs says why
        mine = [e.claim for e in res.entries if e.claim.owner == info.owner]
        if not mine:
            lost = next((c for c in (*res.conflicts, *res.overridden)
                         if c.loser == info.owner), None)
            winner = lost.winner.ref if lost is not None else "another claim"
            refused.append(("Conflicted", f"{name} is served for {winner} (the older claim "
                            f"wins); this Alias takes over when that one goes away"))
            continue
        served.append(name)
        for c in mine:
            if c in res.standby:
                continue  # not in the answer now (failed over, unhealthy, empty)
            addresses += [a for a in c.addresses if a not in addresses]
            cname = cname or c.cname
    if refused:
        reason = refused[0][0]
        accepted = Condition(ACCEPTED, False, reason, "; ".join(m for _, m in refused))
    else:
        accepted = Condition(ACCEPTED, True, "Accepted",
                             f"serving {', '.join(served)}" if served else "accepted")
    refs = Condition(RESOLVED_REFS, info.refs.ok, info.refs.reason, info.refs.message)
    if not accepted.status:
        ready = Condition(READY, False, accepted.reason, accepted.message)
    elif not refs.status:
        ready = Condition(READY, False, refs.reason, refs.message)
    elif not served:
        ready = Condition(READY, False, "NotServed", "no hostname is being served")
    else:
        ready = Condition(READY, True, "Ready", f"{', '.join(served)} answer")
    checks = _checks(info)
    if not checks:
        return Desired(tuple(served), tuple(addresses), cname, (accepted, refs, ready))
    states = [(c, health.get(c, STARTING)) for c in checks]
    targets = tuple((c.target, h.healthy, h.since, h.error) for c, h in states)
    down = [f"{c.target} ({h.error or 'failing'})" for c, h in states if not h.healthy]
    if not down:
        healthy = Condition(HEALTHY, True, "Healthy",
                            f"{len(checks)} of {len(checks)} checked targets healthy")
    elif len(down) < len(checks):
        healthy = Condition(HEALTHY, False, "Degraded",
                            f"{len(down)} of {len(checks)} checked targets unhealthy, "
                            f"left out of the answer: {', '.join(down)}")
    else:
        healthy = Condition(HEALTHY, False, "AllTargetsUnhealthy",
                            f"every checked target is unhealthy: {', '.join(down)}; the "
                            f"names answer with all of them rather than with nothing")
    return Desired(tuple(served), tuple(addresses), cname, (accepted, refs, ready, healthy),
                   targets)


def _reason(inv: Invalid, zones: ZoneConfig) -> str:
    """The Accepted reason of a refused hostname."""
    if inv.event == "TakeoverNotAllowed":
        return "TakeoverNotAllowed"
    if inv.event == NOT_ALLOWED:
        return "NotAllowedByPolicy"
    name = served_name(inv.claim.name, zones)
    if names.validate_fqdn(name, wildcard=True) is not None:
        return "InvalidHostname"
    if not inv.claim.takeover and names.best_zone(name, zones.zones) is None:
        return "NotInZone"
    try:
        names.qualify(inv.claim.name, zones.zones)
    except ValueError:
        return "InvalidHostname"  # the apex, the name server's name, an apex wildcard
    return "InvalidTargets"


def same(want: Desired, observed: Mapping[str, Any], generation: int) -> bool:
    """Whether the status on the API server already says ``want`` for
    ``generation`` (the serial and transition times aside: a new leader, or a
    restart with another serial, rewrites nothing that is right)."""
    return (observed.get("observedGeneration") == generation
            and tuple(observed.get("hostnames") or ()) == want.hostnames
            and tuple(observed.get("addresses") or ()) == want.addresses
            and observed.get("cname") == want.cname
            and list(observed.get("targets") or ()) == want.targets_json()
            and _conditions(observed) == {
                c.type: (_text(c.status), c.reason, c.message, generation)
                for c in want.conditions})


def _conditions(observed: Mapping[str, Any]) -> dict[str, tuple[object, ...]]:
    return {str(c.get("type")): (c.get("status"), c.get("reason"), c.get("message"),
                            c.get("observedGeneration"))
            for c in observed.get("conditions") or () if isinstance(c, Mapping)}


def _text(status: bool) -> str:
    return "True" if status else "False"


def status_body(want: Desired, observed: Mapping[str, Any], *, generation: int, serial: int,
                now: float) -> dict[str, Any]:
    """The full status to write (``serial``: see :func:`serial_to_write`): a
    condition keeps its lastTransitionTime while its status stays the same."""
    before = {c.get("type"): c for c in observed.get("conditions") or ()
              if isinstance(c, Mapping)}
    conditions = []
    for c in want.conditions:
        old = before.get(c.type) or {}
        stamp = (old.get("lastTransitionTime") if old.get("status") == _text(c.status)
                 and old.get("lastTransitionTime") else utc_timestamp(now))
        conditions.append({"type": c.type, "status": _text(c.status), "reason": c.reason,
                           "message": c.message[:1024], "observedGeneration": generation,
                           "lastTransitionTime": stamp})
    return {"observedGeneration": generation, "hostnames": list(want.hostnames),
            "addresses": list(want.addresses), "cname": want.cname, "serial": serial,
            "targets": want.targets_json(), "conditions": conditions}


def status_patch(body: Mapping[str, Any], observed: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of ``body`` (see :func:`status_body`) that ``observed`` does
    not already hold, as a JSON merge patch (RFC 7396) of the status: a list is
    replaced whole, and a field that is absent or empty on both sides is left
    out."""
    return {k: v for k, v in body.items() if _or_none(observed.get(k)) != _or_none(v)}


def _or_none(value: object) -> object:
    return value if value not in (None, [], {}) else None


def transitions(want: Desired, observed: Mapping[str, Any]) -> list[Condition]:
    """The conditions whose status or reason differ from ``observed`` (one
    Event each)."""
    before = _conditions(observed)
    return [c for c in want.conditions
            if before.get(c.type, (None, None))[:2] != (_text(c.status), c.reason)]


# ---- Programmed: every live replica serves the answer the status names --------------


def serves(want: Desired, observed: Mapping[str, Any], generation: int) -> bool:
    """Whether the answer this replica computed (``want``) is the one the
    status on the API server names for ``generation``. With health checks,
    the names and targets it serves are compared, not which targets answer:
    each replica probes for itself and may rightly see another target dead
    (the status's addresses are the writing replica's view)."""
    if observed.get("observedGeneration") != generation \
            or tuple(observed.get("hostnames") or ()) != want.hostnames:
        return False
    if want.targets:
        return [t.get("target") for t in observed.get("targets") or ()
                if isinstance(t, Mapping)] == [t[0] for t in want.targets]
    return (tuple(observed.get("addresses") or ()) == want.addresses
            and observed.get("cname") == want.cname)


def status_serial(observed: Mapping[str, Any], generation: int) -> int | None:
    """The serial of a status that describes ``generation`` (None: there is no
    such status yet)."""
    serial = observed.get("serial")
    if observed.get("observedGeneration") != generation or not isinstance(serial, int):
        return None
    return serial


def serial_to_write(want: Desired, observed: Mapping[str, Any], *, generation: int,
                    serial: int) -> tuple[int, bool]:
    """The serial a status write carries, and whether it is new: the serial
    that first carried the answer is kept while the answer stays (so the
    replicas' confirmations of it stay valid), the current one otherwise."""
    kept = status_serial(observed, generation)
    if kept is not None and serves(want, observed, generation):
        return kept, False
    return serial, True


def watermark(lagging: Mapping[str, int], top: int) -> int:
    """What a replica publishes: the highest status serial up to which it
    serves every Alias's answer as its status names it. ``lagging``: the
    serials of the statuses it does not (yet) agree with; ``top``: the
    highest status serial it has seen."""
    return min(lagging.values()) - 1 if lagging else top


def programmed(want: Desired, serial: int | None, replicas: Mapping[str, int], *,
               me: str | None = None) -> Condition:
    """The Programmed condition of an Alias whose status carries ``serial``
    (None: a new answer, written now, that no other replica can have
    confirmed yet), given the live replicas' watermarks. ``me``: the replica
    deciding, known to serve the answer whatever watermark it last published
    (the leader writing it: a cold start of one replica writes Ready and
    Programmed at once, without waiting for its own Lease round trip)."""
    if not want.hostnames:
        return Condition(PROGRAMMED, False, "NotServed", "no hostname is being served")
    live = len(replicas) + (me is not None and me not in replicas)
    if not live:
        return Condition(PROGRAMMED, False, PENDING, "no live replica has published yet")
    # A new answer lags everywhere else: the same message as when it is
    # counted, so the count alone never costs a write.
    lag = sum(1 for r, w in replicas.items() if r != me and (serial is None or w < serial))
    if lag:
        return Condition(PROGRAMMED, False, PENDING,
                         f"{lag} of {live} replicas do not serve this answer yet")
    # No replica count in the message: scaling would rewrite every status.
    return Condition(PROGRAMMED, True, PROGRAMMED, "every live replica serves this answer")


def with_condition(want: Desired, condition: Condition) -> Desired:
    """``want`` with one more condition (before the summary ``Ready``)."""
    at = next(i for i, c in enumerate(want.conditions) if c.type == READY)
    return dataclasses.replace(
        want, conditions=(*want.conditions[:at], condition, *want.conditions[at:]))


def condition_of(observed: Mapping[str, Any], type_: str) -> tuple[object, object]:
    """(status, reason) of the condition ``type_`` in ``observed`` ((None, None):
    there is none)."""
    got = _conditions(observed).get(type_)
    return (got[0], got[1]) if got else (None, None)


def kept_condition(observed: Mapping[str, Any], type_: str) -> Condition | None:
    """The condition ``type_`` as ``observed`` has it (None: it has none)."""
    for c in observed.get("conditions") or ():
        if isinstance(c, Mapping) and c.get("type") == type_:
            return Condition(type_, c.get("status") == "True", str(c.get("reason", "")),
                             str(c.get("message", "")))
    return None
