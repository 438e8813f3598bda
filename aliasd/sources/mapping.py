"""Kubernetes objects (raw JSON dicts) → alias claims. Pure: no I/O.

The rules are the contract table in ARCHITECTURE.md: ClusterIP (dual-stack),
headless (ready endpoints), ExternalName (CNAME), named ports (SRV), and the
ServiceEntry target order: spec.addresses, status.addresses, spec.endpoints.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aliasd.model import (
    DEFAULT_TTL,
    AliasClaim,
    Owner,
    Port,
    canonical_ip,
    parse_ttl,
    parse_weight,
)
from aliasd.policy import ALLOWED_NAMES_ANNOTATION, parse_allowed

ALIAS_ANNOTATION = "aliasd.io/alias"
TTL_ANNOTATION = "aliasd.io/ttl"
WEIGHT_ANNOTATION = "aliasd.io/weight"
TAKEOVER_ANNOTATION = "aliasd.io/takeover"
FALLBACK_ANNOTATION = "aliasd.io/fallback"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
_SPLIT = re.compile(r"[\s,]+")
# name.ns.svc or name.ns.svc.cluster.local (any cluster domain)
_SVC_HOST = re.compile(r"^([a-z0-9-]+)\.([a-z0-9-]+)\.svc(\.[a-z0-9.-]+)?\.?$")


@dataclass(frozen=True)
class Problem:
    """Something wrong with one object, for a Kubernetes Event."""

    owner: Owner
    reason: str
    message: str


def key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata", {})
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def owner_of(obj: Mapping[str, Any], kind: str) -> Owner:
    meta = obj.get("metadata", {})
    return Owner(created=_timestamp(meta.get("creationTimestamp")),
                 namespace=meta.get("namespace", ""), name=meta.get("name", ""), kind=kind,
                 uid=meta.get("uid", ""))


def _timestamp(text: str | None) -> float:
    if not text:
        return 0.0
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def _ttl(obj: Mapping[str, Any], owner: Owner, problems: list[Problem]) -> int:
    raw = (obj.get("metadata", {}).get("annotations") or {}).get(TTL_ANNOTATION)
    if raw is None:
        return DEFAULT_TTL
    try:
        return parse_ttl(raw)
    except ValueError as e:
        problems.append(Problem(owner, "InvalidTTL",
                                f"{TTL_ANNOTATION}: {e}; using the default {DEFAULT_TTL}s"))
        return DEFAULT_TTL


def alias_names(obj: Mapping[str, Any], annotation: str = ALIAS_ANNOTATION) -> list[str]:
    raw = (obj.get("metadata", {}).get("annotations") or {}).get(annotation, "")
    names: list[str] = []
    for n in _SPLIT.split(raw.strip()):
        if n and n.lower() not in (x.lower() for x in names):
            names.append(n)
    return names


def ready_addresses(slices: Iterable[Mapping[str, Any]]) -> list[str]:
    """Addresses of ready endpoints (``ready`` unset counts as ready, per the API)."""
    out: list[str] = []
    for s in slices:
        if s.get("addressType") not in ("IPv4", "IPv6"):
            continue
        for ep in s.get("endpoints") or []:
            if (ep.get("conditions") or {}).get("ready") is False:
                continue
            for a in ep.get("addresses") or []:
                if a not in out:
                    out.append(a)
    return out


def service_targets(svc: Mapping[str, Any], slices: Iterable[Mapping[str, Any]]
                    ) -> tuple[tuple[str, ...], str | None]:
    """(addresses, cname) a Service resolves to."""
    spec = svc.get("spec", {})
    if spec.get("type") == "ExternalName":
        return (), spec.get("externalName") or None
    ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    if ips == ["None"] or spec.get("clusterIP") == "None":
        return tuple(_valid_ips(ready_addresses(slices))), None
    return tuple(_valid_ips(ips)), None


def _valid_ips(values: Iterable[str]) -> list[str]:
    out = []
    for v in values:
        try:
            out.append(canonical_ip(v)[1])
        except ValueError:
            continue
    return out


def _fallback(obj: Mapping[str, Any], owner: Owner, problems: list[Problem]
              ) -> tuple[str, ...]:
    """The ``aliasd.io/fallback`` addresses (invalid → Problem, none used)."""
    raw = (obj.get("metadata", {}).get("annotations") or {}).get(FALLBACK_ANNOTATION)
    if raw is None:
        return ()
    out: list[str] = []
    for item in _SPLIT.split(raw.strip()):
        if not item:
            continue
        try:
            out.append(str(ipaddress.ip_address(item)))
        except ValueError:
            problems.append(Problem(owner, "InvalidFallback", f"{FALLBACK_ANNOTATION}: "
                                    f"{item!r} is not an IP address; no fallback is used"))
            return ()
    return tuple(dict.fromkeys(out))


def service_claims(svc: Mapping[str, Any], slices: Iterable[Mapping[str, Any]]
                   ) -> tuple[list[AliasClaim], list[Problem]]:
    names = alias_names(svc)
    takeovers = alias_names(svc, TAKEOVER_ANNOTATION)
    if not names and not takeovers:
        return [], []
    owner = owner_of(svc, "Service")
    problems: list[Problem] = []
    ttl = _ttl(svc, owner, problems)
    addresses, cname = service_targets(svc, slices)
    fallback = _fallback(svc, owner, problems)
    use_fallback = not addresses and cname is None and bool(fallback)
    if use_fallback:
        addresses = fallback
    weight = None
    raw_weight = (svc.get("metadata", {}).get("annotations") or {}).get(WEIGHT_ANNOTATION)
    if raw_weight is not None:
        try:
            weight = parse_weight(raw_weight)
        except ValueError as e:
            problems.append(Problem(owner, "InvalidWeight", f"{WEIGHT_ANNOTATION}: {e}; the "
                                    f"Service does not share its aliases"))
    ports = tuple(
        Port(p["name"], str(p.get("protocol", "TCP")).upper(), int(p["port"]))
        for p in svc.get("spec", {}).get("ports") or [] if p.get("name") and p.get("port")
    ) if cname is None else ()
    claims = [AliasClaim(n, owner, addresses=addresses, cname=cname, ttl=ttl, ports=ports,
                         weight=weight, fallback=use_fallback) for n in names]
    claims += [AliasClaim(n, owner, addresses=addresses, cname=cname, ttl=ttl, weight=weight,
                          fallback=use_fallback, takeover=True) for n in takeovers]
    return claims, problems


ServiceLookup = Callable[[str, str], tuple[tuple[str, ...], str | None] | None]
"""(namespace, name) → the Service's (addresses, cname), or None if unknown."""


def _single_ip(text: str) -> str | None:
    """An IP, or a /32 or /128 CIDR, as an IP; None otherwise."""
    try:
        if "/" in text:
            net = ipaddress.ip_network(text, strict=False)
            if net.num_addresses != 1:
                return None
            return str(net.network_address)
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def serviceentry_claims(
    se: Mapping[str, Any], *, in_zone: Callable[[str], bool], services: ServiceLookup,
) -> tuple[list[AliasClaim], list[Problem]]:
    """Claims for every host of ``se`` inside a served zone, and for the hosts
    its ``aliasd.io/takeover`` annotation names."""
    spec = se.get("spec") or {}
    # A wildcard host (*.foo.internal) is an alias like any other (RFC 4592).
    all_hosts = [h for h in spec.get("hosts") or [] if isinstance(h, str)]
    takeovers = {h.lower().rstrip(".") for h in alias_names(se, TAKEOVER_ANNOTATION)}
    hosts = [h for h in all_hosts if in_zone(h) or h.lower().rstrip(".") in takeovers]
    owner = owner_of(se, "ServiceEntry")
    problems: list[Problem] = []
    missing = takeovers - {h.lower().rstrip(".") for h in all_hosts}
    if missing:
        problems.append(Problem(owner, "InvalidTakeover", f"{TAKEOVER_ANNOTATION}: "
                                f"{', '.join(sorted(missing))} not in spec.hosts; ignored"))
    if not hosts:
        return [], problems
    scope = _export_scope(spec.get("exportTo"))
    if scope is not None:
        problems.append(Problem(owner, "NotExported", (
            f"spec.exportTo {scope}: the entry is exported to "
            f"{_EXPORT_WORDS.get(scope, f'namespaces {scope} only')}, and an alias answers "
            f"every pod in the cluster; "
            f"{', '.join(hosts)} not served (export it to '*' to serve it)")))
        return [], problems
    ttl = _ttl(se, owner, problems)
    fallback = _fallback(se, owner, problems)
    ports = tuple(
        Port(str(p["name"]).lower(), _se_protocol(p), int(p["number"]))
        for p in spec.get("ports") or [] if p.get("name") and p.get("number")
        and re.match(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$", str(p["name"]).lower())
    )
    claims = []
    weighted = _se_weighted(se, services)
    for host in hosts:
        takeover = host.lower().rstrip(".") in takeovers
        host_ports = () if takeover else ports
        if weighted:
            claims += [AliasClaim(host, owner, addresses=a, cname=c, ttl=ttl, weight=w,
                                  takeover=takeover, ports=host_ports if c is None else ())
                       for a, c, w in weighted]
            continue
        addresses, cname, why = _se_targets(se, host, services)
        if not addresses and cname is None:
            if fallback:
                claims.append(AliasClaim(host, owner, addresses=fallback, ttl=ttl,
                                         takeover=takeover, fallback=True))
                continue
            problems.append(Problem(owner, "NoUsableAddress",
                                    f"host {host}: {why}; it is not served"))
            continue
        claims.append(AliasClaim(host, owner, addresses=addresses, cname=cname, ttl=ttl,
                                 takeover=takeover, ports=host_ports if cname is None else ()))
    return claims, problems


_EXPORT_WORDS = {"'.'": "its own namespace only", "'~'": "no namespace"}


def _export_scope(export_to: object) -> str | None:
    """None when a ServiceEntry is exported to every namespace (``exportTo``
    absent, empty, or listing ``*``), else how it is written. Istio's
    ``exportTo`` limits which namespaces see the entry (``.``: its own, ``~``:
    none, names: those); an alias is answered to every pod that asks, so only
    an entry every namespace sees becomes one (a mesh whose
    ``defaultServiceExportTo`` is narrower should set ``exportTo`` explicitly)."""
    if not isinstance(export_to, list) or not export_to:
        return None
    items = [str(x).strip() for x in export_to]
    if "*" in items:
        return None
    return ", ".join(f"'{x}'" for x in items)


def _se_protocol(port: Mapping[str, Any]) -> str:
    proto = str(port.get("protocol", "TCP")).upper()
    return "UDP" if proto == "UDP" else "TCP"  # HTTP, GRPC, TLS, ... all ride on TCP


def _se_weighted(se: Mapping[str, Any], services: ServiceLookup
                 ) -> list[tuple[tuple[str, ...], str | None, int]]:
    """With endpoint weights (and no spec/status addresses, which come first):
    one target set per usable endpoint with its weight (missing = 1)."""
    spec = se.get("spec") or {}
    endpoints = [ep for ep in spec.get("endpoints") or [] if isinstance(ep, dict)]
    if spec.get("addresses") or (se.get("status") or {}).get("addresses") or not any(
            "weight" in ep for ep in endpoints):
        return []
    out: list[tuple[tuple[str, ...], str | None, int]] = []
    for ep in endpoints:
        try:
            weight = parse_weight(ep.get("weight", 1))
        except ValueError:
            continue
        address = str(ep.get("address", "")).strip()
        ip = _single_ip(address)
        m = _SVC_HOST.match(address.lower())
        if ip:
            out.append(((ip,), None, weight))
        elif m:
            found = services(m.group(2), m.group(1))
            if found is not None and (found[0] or found[1]):
                out.append((found[0], found[1], weight))
        elif address and not address.startswith("unix://"):
            out.append(((), address, weight))
    return out


def _se_targets(se: Mapping[str, Any], host: str, services: ServiceLookup
                ) -> tuple[tuple[str, ...], str | None, str]:
    spec = se.get("spec") or {}
    addrs = [a for a in (_single_ip(str(x)) for x in spec.get("addresses") or []) if a]
    if addrs:
        return tuple(dict.fromkeys(addrs)), None, ""
    status_addrs = []
    for entry in (se.get("status") or {}).get("addresses") or []:
        if not isinstance(entry, dict):
            continue
        if entry.get("host") and str(entry["host"]).lower() != host.lower():
            continue
        ip = _single_ip(str(entry.get("value", "")))
        if ip:
            status_addrs.append(ip)
    if status_addrs:
        return tuple(dict.fromkeys(status_addrs)), None, ""
    ips: list[str] = []
    cnames: list[str] = []
    missing: list[str] = []
    for ep in spec.get("endpoints") or []:
        address = str((ep or {}).get("address", "")).strip()
        if not address or address.startswith("unix://"):
            continue
        ip = _single_ip(address)
        if ip:
            ips.append(ip)
            continue
        m = _SVC_HOST.match(address.lower())
        if m:
            found = services(m.group(2), m.group(1))
            if found is None:
                missing.append(address)
                continue
            svc_addrs, svc_cname = found
            ips.extend(svc_addrs)
            if svc_cname:
                cnames.append(svc_cname)
            continue
        cnames.append(address)
    if ips:
        return tuple(dict.fromkeys(ips)), None, ""
    if cnames:
        return (), cnames[0], ""
    if missing:
        return (), None, f"endpoint Service {', '.join(missing)} does not exist (yet)"
    return (), None, "no spec.addresses, no status.addresses and no usable spec.endpoints"


# ---- trimming at the edge: cache only the fields read above ---------------------------

ANNOTATION_PREFIX = "aliasd.io/"


def _trim_meta(meta: Mapping[str, Any], *, labels: tuple[str, ...] = ()) -> dict[str, Any]:
    out = {k: meta[k] for k in ("name", "namespace", "uid", "creationTimestamp",
                                "resourceVersion") if k in meta}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items()
                   if k.startswith(ANNOTATION_PREFIX)}
    if annotations:
        out["annotations"] = annotations
    kept = {k: v for k, v in (meta.get("labels") or {}).items() if k in labels}
    if kept:
        out["labels"] = kept
    return out


def trim_service(svc: Mapping[str, Any]) -> dict[str, Any]:
    """A Service with only what ``service_claims``/``service_targets`` read (no
    managedFields, no last-applied copy, no status, no foreign annotations)."""
    spec = svc.get("spec") or {}
    out = {k: spec[k] for k in ("type", "externalName", "clusterIP", "clusterIPs")
           if k in spec}
    out["ports"] = [{k: p[k] for k in ("name", "protocol", "port") if k in p}
                    for p in spec.get("ports") or [] if p.get("name")]
    return {"metadata": _trim_meta(svc.get("metadata") or {}), "spec": out}


def trim_slice(s: Mapping[str, Any]) -> dict[str, Any]:
    """An EndpointSlice reduced to its Service, address type and endpoint
    addresses with their readiness."""
    endpoints = []
    for ep in s.get("endpoints") or []:
        e: dict[str, Any] = {"addresses": ep.get("addresses") or []}
        ready = (ep.get("conditions") or {}).get("ready")
        if ready is not None:
            e["conditions"] = {"ready": ready}
        endpoints.append(e)
    return {"metadata": _trim_meta(s.get("metadata") or {}, labels=(SERVICE_NAME_LABEL,)),
            "addressType": s.get("addressType"), "endpoints": endpoints}


def trim_serviceentry(se: Mapping[str, Any]) -> dict[str, Any]:
    """A ServiceEntry with the fields ``serviceentry_claims`` reads."""
    spec = se.get("spec") or {}
    out: dict[str, Any] = {"metadata": _trim_meta(se.get("metadata") or {}), "spec": {
        "hosts": spec.get("hosts") or [], "addresses": spec.get("addresses") or [],
        **({"exportTo": spec["exportTo"]} if spec.get("exportTo") else {}),
        "endpoints": [{k: ep[k] for k in ("address", "weight") if k in ep}
                      if isinstance(ep, dict) else ep for ep in spec.get("endpoints") or []],
        "ports": [{k: p[k] for k in ("name", "number", "protocol") if k in p}
                  for p in spec.get("ports") or [] if isinstance(p, dict)],
    }}
    addresses = (se.get("status") or {}).get("addresses")
    if addresses:
        out["status"] = {"addresses": addresses}
    return out


def trim_namespace(ns: Mapping[str, Any]) -> dict[str, Any]:
    """A Namespace reduced to what the name policy reads: its name and its
    ``aliasd.io/allowed-names`` annotation (uid for Events, resourceVersion for
    relists)."""
    meta = ns.get("metadata") or {}
    out: dict[str, Any] = {k: meta[k] for k in ("name", "uid", "resourceVersion") if k in meta}
    value = (meta.get("annotations") or {}).get(ALLOWED_NAMES_ANNOTATION)
    if value is not None:
        out["annotations"] = {ALLOWED_NAMES_ANNOTATION: value}
    return {"metadata": out}


def allowed_names(ns: Mapping[str, Any] | None) -> str | None:
    """A (trimmed) Namespace's ``aliasd.io/allowed-names`` value; None: absent."""
    if ns is None:
        return None
    value: str | None = ((ns.get("metadata") or {}).get("annotations") or {}).get(
        ALLOWED_NAMES_ANNOTATION)
    return value


def namespace_problems(ns: Mapping[str, Any], default_zone: str) -> list[Problem]:
    """A malformed ``aliasd.io/allowed-names`` pattern, as an Event on the Namespace."""
    value = allowed_names(ns)
    meta = ns.get("metadata") or {}
    name = meta.get("name", "")
    if value is None:
        return []
    allowed = parse_allowed(value, namespace=name, rule=ALLOWED_NAMES_ANNOTATION,
                            default_zone=default_zone)
    if not allowed.malformed:
        return []
    return [Problem(Owner(0.0, "", name, "Namespace", meta.get("uid", "")),
                    "InvalidAllowedNames",
                    f"{ALLOWED_NAMES_ANNOTATION} on Namespace {name}: malformed patterns match "
                    f"nothing (fail closed): {', '.join(allowed.malformed)}; "
                    f"the other patterns still apply")]
