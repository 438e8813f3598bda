"""Alias objects (``aliasd.io/v1alpha1``, raw JSON) → alias claims. Pure: no I/O.

An Alias names its hostnames and exactly one target form: ``serviceRef`` (a
Service in the same namespace, with the annotation's semantics: cluster IPs,
headless ready endpoints, ExternalName → CNAME, SRV for named ports) or
``targets`` (static addresses or a CNAME, optionally weighted). Its claims go
through the same registry as every other claim: the name policy, conflicts
(oldest first), takeover and weights apply unchanged. What the status needs
beyond the claims (the generation, whether the Service reference resolved)
travels beside them as :class:`AliasInfo`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aliasd.model import DEFAULT_TTL, HTTP, TCP, AliasClaim, Check, Owner, Port, canonical_ip
from aliasd.sources.mapping import owner_of, service_targets

GROUP = "aliasd.io"
VERSIONS = ("v1alpha1",)  # preference order
PLURAL = "aliases"
KIND = "Alias"

RESOLVED = "ResolvedRefs"
SERVICE_NOT_FOUND = "ServiceNotFound"
NO_READY_ENDPOINTS = "NoReadyEndpoints"
INVALID_TARGETS = "InvalidTargets"


@dataclass(frozen=True)
class Refs:
    """Whether the Alias's target resolved: the ResolvedRefs condition."""

    ok: bool
    reason: str
    message: str


@dataclass(frozen=True)
class AliasInfo:
    """One Alias as its status needs it: who, which generation, its hostnames
    as written, its claims, whether its references resolved, and a spec
    problem the schema cannot catch (``None``: none)."""

    owner: Owner
    generation: int
    hostnames: tuple[str, ...]
    claims: tuple[AliasClaim, ...]
    refs: Refs
    invalid: str | None = None  # why the targets are unusable (Accepted=False)


AliasView = tuple[AliasInfo, dict[str, Any]]
"""An Alias's status inputs and the status the API server holds for it."""
AliasSink = Callable[[str, "AliasView | None"], None]
"""("ns/name", view): an Alias, its inputs or its status changed (None: it is gone)."""
Slices = Iterable[Mapping[str, Any]]
ServiceFinder = Callable[[str, str], "tuple[Mapping[str, Any], Slices] | None"]
"""(namespace, name) → the Service and its EndpointSlices, or None."""


def alias_info(obj: Mapping[str, Any], *, services: ServiceFinder,
               in_zone: Callable[[str], bool]) -> AliasInfo:
    """The claims and status inputs of one (trimmed) Alias (``in_zone``: whether
    a hostname lies inside a served zone; with ``takeover``, the others are
    takeover claims)."""
    owner = owner_of(obj, KIND)
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    hostnames = tuple(dict.fromkeys(
        h for h in spec.get("hostnames") or [] if isinstance(h, str) and h))
    ttl = int(spec.get("ttl") or DEFAULT_TTL)
    takeover = bool(spec.get("takeover"))
    generation = int(meta.get("generation") or 0)
    fallback = _ips(spec.get("fallback") or [])

    def info(claims: Iterable[AliasClaim], refs: Refs, invalid: str | None = None
             ) -> AliasInfo:
        return AliasInfo(owner, generation, hostnames, tuple(claims), refs, invalid)

    def claims(*, addresses: tuple[str, ...] = (), cname: str | None = None,
               ports: tuple[Port, ...] = (), weight: int | None = None,
               use_fallback: bool = False, priority: int = 0,
               check: Check | None = None) -> list[AliasClaim]:
        return [AliasClaim(h, owner, addresses=addresses, cname=cname,
                           ttl=ttl if check is None else check.cap(ttl),
                           ports=ports if cname is None else (), weight=weight,
                           takeover=takeover and _outside(h) and not in_zone(h),
                           fallback=use_fallback, priority=priority, check=check)
                for h in hostnames]

    ref = spec.get("serviceRef")
    if isinstance(ref, Mapping):
        name = str(ref.get("name", ""))
        found = services(owner.namespace, name)
        if found is None:
            why = Refs(False, SERVICE_NOT_FOUND, f"Service {owner.namespace}/{name} not found")
            return info(claims(addresses=fallback, use_fallback=True) if fallback else [], why)
        svc, slices = found
        addresses, cname = service_targets(svc, slices)
        ports = _ports(svc, ref.get("port"))
        if not addresses and cname is None:
            why = Refs(False, NO_READY_ENDPOINTS,
                       f"Service {owner.namespace}/{name} has no ready endpoints")
            if fallback:
                return info(claims(addresses=fallback, use_fallback=True), why)
            # The names exist with no address (NODATA), as for an annotated Service.
            return info(claims(ports=ports), why)
        return info(claims(addresses=addresses, cname=cname, ports=ports),
                    Refs(True, RESOLVED, f"Service {owner.namespace}/{name}"))
    ok = Refs(True, RESOLVED, "static targets")
    targets = [t for t in spec.get("targets") or [] if isinstance(t, Mapping)]
    if spec.get("healthCheck") or any(
            k in t for t in targets for k in ("priority", "healthCheck", "serviceRef")):
        return _ordered(targets, spec.get("healthCheck"), owner=owner, services=services,
                        claims=claims, info=info)
    if any("weight" in t for t in targets):
        out: list[AliasClaim] = []
        for t in targets:
            weight = max(0, int(t.get("weight", 1)))
            if "address" in t:
                ip = _ips([t["address"]])
                if not ip:
                    return info([], ok, f"target {t['address']!r} is not an IP address")
                out += claims(addresses=ip, weight=weight)
            elif t.get("cname"):
                out += claims(cname=str(t["cname"]), weight=weight)
        return info(out, ok)
    raw = [str(t["address"]) for t in targets if "address" in t]
    addresses = _ips(raw)
    if len(addresses) != len(dict.fromkeys(raw)):
        bad = [a for a in raw if not _ips([a])]
        return info([], ok, f"target {bad[0]!r} is not an IP address")
    cnames = [str(t["cname"]) for t in targets if t.get("cname")]
    if (cnames and addresses) or len(cnames) > 1:
        return info([], ok, "targets mix addresses and CNAMEs (or name several CNAMEs) "
                    "without weights: a name answers with addresses or one CNAME")
    return info(claims(addresses=addresses, cname=cnames[0] if cnames else None), ok)


ClaimMaker = Callable[..., list[AliasClaim]]


def _ordered(targets: list[Mapping[str, Any]], default_check: object, *, owner: Owner,
             services: ServiceFinder, claims: ClaimMaker,
             info: Callable[..., AliasInfo]) -> AliasInfo:
    """Targets with priorities, health checks or Service references: one
    claim per target, so the resolver can leave out the unhealthy ones and
    fail over by priority. A ``serviceRef`` target with no usable address
    claims the names with none (the resolver skips it for the next priority)."""
    weighted = any("weight" in t for t in targets)
    out: list[AliasClaim] = []
    unresolved: list[Refs] = []
    for i, t in enumerate(targets):
        weight = max(0, int(t.get("weight", 1))) if weighted else None
        priority = max(0, int(t.get("priority", 0)))
        if "address" in t:
            ip = _ips([t["address"]])
            if not ip:
                return info([], Refs(True, RESOLVED, "static targets"),
                            f"target {t['address']!r} is not an IP address")
            spec = t.get("healthCheck", default_check)
            try:
                check = parse_check(spec, ip[0]) if spec else None
            except ValueError as e:
                return info([], Refs(True, RESOLVED, "static targets"),
                            f"targets[{i}].healthCheck: {e}")
            out += claims(addresses=ip, weight=weight, priority=priority, check=check)
        elif t.get("cname"):
            out += claims(cname=str(t["cname"]), weight=weight, priority=priority)
        elif isinstance(ref := t.get("serviceRef"), Mapping):
            name = str(ref.get("name", ""))
            found = services(owner.namespace, name)
            if found is None:
                unresolved.append(Refs(False, SERVICE_NOT_FOUND,
                                       f"Service {owner.namespace}/{name} not found"))
                continue
            svc, slices = found
            addresses, cname = service_targets(svc, slices)
            if not addresses and cname is None:
                unresolved.append(Refs(False, NO_READY_ENDPOINTS,
                                       f"Service {owner.namespace}/{name} has no ready "
                                       f"endpoints"))
            out += claims(addresses=addresses, cname=cname, ports=_ports(svc, ref.get("port")),
                          weight=weight, priority=priority)
    refs = unresolved[0] if unresolved else Refs(
        True, RESOLVED, "Service references resolved" if any(
            "serviceRef" in t for t in targets) else "static targets")
    if not out:
        # Only missing Services: the names exist with no address (NODATA).
        out = claims()
    return info(out, refs)


def parse_check(spec: object, host: str) -> Check:
    """A target's ``healthCheck`` (the Alias schema's fields); ``ValueError``
    naming the field otherwise."""
    if not isinstance(spec, Mapping):
        raise ValueError("must be an object")
    kind = str(spec.get("protocol", TCP)).upper()
    if kind not in (TCP, HTTP):
        raise ValueError(f"protocol {kind!r} is not TCP or HTTP")
    port = spec.get("port")
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise ValueError(f"port {port!r} is not 1..65535")
    path = str(spec.get("path") or "/")
    if not path.startswith("/") or any(ch.isspace() for ch in path):
        raise ValueError(f"path {path!r} must start with / and hold no spaces")
    codes = spec.get("expectedStatuses") or []
    for code in codes:
        if not isinstance(code, int) or isinstance(code, bool) or not 100 <= code <= 599:
            raise ValueError(f"expectedStatuses {code!r} is not an HTTP status 100..599")
    # Unset: any 2xx or 3xx, as Kubernetes' httpGet probes judge.
    expect = tuple((c, c) for c in sorted(set(codes))) or ((200, 399),)
    numbers: dict[str, int] = {}
    for field, default, low, high in (("intervalSeconds", 5, 1, 3600),
                                      ("timeoutSeconds", 2, 1, 60),
                                      ("healthyThreshold", 2, 1, 10),
                                      ("unhealthyThreshold", 3, 1, 10)):
        value = spec.get(field, default)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ValueError(f"{field} {value!r} is not {low}..{high}")
        numbers[field] = value
    if numbers["timeoutSeconds"] > numbers["intervalSeconds"]:
        raise ValueError("timeoutSeconds must not exceed intervalSeconds")
    return Check(kind, host, port, path if kind == HTTP else "/", expect,
                 float(numbers["intervalSeconds"]), float(numbers["timeoutSeconds"]),
                 numbers["healthyThreshold"], numbers["unhealthyThreshold"])


def _outside(hostname: str) -> bool:
    """A hostname with a dot may lie outside the zones (a takeover candidate);
    a bare label always gets the default zone."""
    return "." in hostname.rstrip(".")


def _ips(values: Iterable[object]) -> tuple[str, ...]:
    out: list[str] = []
    for v in values:
        try:
            out.append(canonical_ip(str(v).strip())[1])
        except ValueError:
            continue
    return tuple(dict.fromkeys(out))


def _ports(svc: Mapping[str, Any], only: object) -> tuple[Port, ...]:
    ports = [Port(str(p["name"]), str(p.get("protocol", "TCP")).upper(), int(p["port"]))
             for p in (svc.get("spec") or {}).get("ports") or []
             if p.get("name") and p.get("port")]
    if only:
        ports = [p for p in ports if p.name == str(only) or str(p.port) == str(only)]
    return tuple(ports)


STATUS_FIELDS = ("observedGeneration", "hostnames", "addresses", "cname", "serial",
                 "targets", "conditions")


def trim_alias(obj: Mapping[str, Any]) -> dict[str, Any]:
    """An Alias with the fields read here and the status fields aliasd writes
    (so a status that is already right is not written again)."""
    meta = obj.get("metadata") or {}
    out: dict[str, Any] = {
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "creationTimestamp",
                                          "resourceVersion", "generation") if k in meta},
        "spec": dict(obj.get("spec") or {}),
    }
    status = obj.get("status") or {}
    kept = {k: status[k] for k in STATUS_FIELDS if k in status}
    if kept:
        out["status"] = kept
    return out

