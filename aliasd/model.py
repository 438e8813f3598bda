"""The one data type that crosses every boundary: an ``AliasClaim``.

Sources turn outside objects (Services, ServiceEntries, the aliases file) into
claims; the resolver turns claims into a zone snapshot. Every DNS name goes
through :func:`normalize_name` exactly once, at the resolver.
"""

from __future__ import annotations

import functools
import ipaddress
import time
from dataclasses import dataclass, field

from aliasd.names import normalize_name

DEFAULT_TTL = 30
MIN_TTL = 1
MAX_TTL = 86400


class AliasdError(Exception):
    """Base of aliasd's own errors."""


class ConfigError(AliasdError):
    """A flag, file or annotation is invalid; the message says which and why."""


class SourceError(AliasdError):
    """A source could not read its objects."""


class ApplyError(AliasdError):
    """A change to the cluster (Corefile patch, Event) could not be applied."""


def utc_timestamp(ts: float) -> str:
    """RFC 3339 in UTC, seconds precision, as Kubernetes writes times."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


__all__ = ["normalize_name"]  # re-exported: aliasd.names is where names are handled


@dataclass(frozen=True, order=True)
class Owner:
    """Who claims a name. Ordering is the conflict rule: oldest first, then
    namespace/name, then kind (so the rule is total and replica-independent)."""

    created: float
    namespace: str
    name: str
    kind: str = "Service"
    uid: str = ""

    @property
    def ref(self) -> str:
        """Human-readable reference, e.g. ``Service micro-shake-factory/fruits-api-service``."""
        if self.namespace:
            return f"{self.kind} {self.namespace}/{self.name}"
        return f"{self.kind} {self.name}"


@dataclass(frozen=True)
class Port:
    """A named port: becomes SRV ``_<name>._<proto>.<alias>``."""

    name: str
    protocol: str
    port: int


@dataclass(frozen=True, order=True)
class Check:
    """How one target's health is probed: a TCP connect to ``host:port``, or an
    HTTP GET of ``path`` whose status must be in ``expect``. A target turns
    unhealthy after ``unhealthy`` failed probes in a row and healthy again
    after ``healthy`` good ones (hysteresis: one failure in three never flaps
    the answer). Equal checks are one probe, however many claims carry them."""

    kind: str  # TCP or HTTP
    host: str  # an IP address
    port: int
    path: str = "/"
    expect: tuple[tuple[int, int], ...] = ((200, 399),)  # inclusive status ranges
    interval: float = 5.0
    timeout: float = 2.0
    healthy: int = 2
    unhealthy: int = 3

    @property
    def target(self) -> str:
        """What is probed, e.g. ``tcp://10.0.0.5:5432``, ``http://10.0.0.5:8080/healthz``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        tail = self.path if self.kind == HTTP else ""
        return f"{self.kind.lower()}://{host}:{self.port}{tail}"

    @property
    def detection(self) -> float:
        """Seconds until a dead target leaves the answer (at most one interval
        more): the longest a client should cache it."""
        return self.interval * self.unhealthy

    def cap(self, ttl: int) -> int:
        """``ttl`` cut to the detection time: a client must not cache a dead
        target longer than aliasd takes to notice it died."""
        return max(MIN_TTL, min(ttl, int(self.detection)))


TCP = "TCP"
HTTP = "HTTP"


@dataclass(frozen=True)
class AliasClaim:
    """One owner's wish that ``name`` resolves to ``addresses`` or ``cname``.

    ``name`` is as the user wrote it (a bare label gets the default zone); the
    resolver validates and normalizes it.
    """

    name: str
    owner: Owner
    addresses: tuple[str, ...] = ()
    cname: str | None = None
    ttl: int = DEFAULT_TTL
    ports: tuple[Port, ...] = field(default=())
    # Set when the owner asks to share the name: claims that all carry a weight
    # form a weighted group instead of a conflict (0 = drained).
    weight: int | None = None
    # A name outside the served zones that the owner asks aliasd to answer for
    # (aliasd.io/takeover); served only where --allow-takeover permits it.
    takeover: bool = False
    # The targets are the owner's aliasd.io/fallback addresses: it has no usable
    # target of its own right now.
    fallback: bool = False
    # Ordered failover among one owner's claims for a name: the answer is the
    # healthy, usable claims of the lowest priority that has any (RFC 2782's
    # order: lower is preferred).
    priority: int = 0
    # The target's health check (None: always healthy).
    check: Check | None = None


OVERRIDE_KIND = "Override"
"""Owner kind of an HTTP override: it beats every other claim for its name."""


def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An IP address, raising ``ValueError`` with a readable message."""
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address") from None


def parse_ttl(value: object) -> int:
    """A TTL in seconds, 1..86400; ``ValueError`` otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"ttl {value!r} is not a number")
    try:
        ttl = int(str(value).strip())
    except ValueError:
        raise ValueError(f"ttl {value!r} is not a whole number of seconds") from None
    if not MIN_TTL <= ttl <= MAX_TTL:
        raise ValueError(f"ttl {ttl} is outside {MIN_TTL}..{MAX_TTL}")
    return ttl


MAX_WEIGHT = 10000


def parse_weight(value: object) -> int:
    """A weight 0..10000 (ValueError otherwise)."""
    text = str(value).strip()
    if not text.isdigit() or int(text) > MAX_WEIGHT:
        raise ValueError(f"weight {value!r} must be a whole number 0..{MAX_WEIGHT}")
    return int(text)


def canonical_ip(text: str) -> tuple[int, str]:
    """(version, canonical text) of an IP address; ``ValueError`` if it is not
    one. Cached: an EndpointSlice update parsed each of its addresses three
    times (derivation, validation, RRsets), and the addresses repeat."""
    if type(text) is not str:  # raw JSON may hold anything; only strings are cached
        ip = ipaddress.ip_address(text)
        return ip.version, str(ip)
    return _canonical_ip(text)


@functools.lru_cache(maxsize=65536)
def _canonical_ip(text: str) -> tuple[int, str]:
    ip = ipaddress.ip_address(text)
    return ip.version, str(ip)
