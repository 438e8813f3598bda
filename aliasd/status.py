"""What HTTP and metrics read: a narrow view of the running app (no back
edge into ``aliasd.app``), and the aliases document built from a result."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any, Protocol

from aliasd.access import Authenticator, Trail
from aliasd.dns.answer import Stats
from aliasd.model import OVERRIDE_KIND, AliasClaim
from aliasd.registry import Result, ZoneConfig
from aliasd.sources.overrides import OverridesSource


class Source(Protocol):
    """What the app needs from a source. ``claims`` is the full current set
    (read only when the source said its whole state changed; the Kubernetes
    source pushes per object instead)."""

    name: str

    @property
    def claims(self) -> list[AliasClaim]: ...

    @property
    def synced(self) -> bool: ...

    @property
    def error(self) -> str | None: ...

    async def run(self) -> None: ...


class Component(Protocol):
    """A background part that is not a source (the CoreDNS patcher): it runs
    beside the sources and reports its state in /readyz."""

    name: str

    def status(self) -> dict[str, Any]: ...

    async def run(self) -> None: ...


class Status(Protocol):
    """The running app as HTTP and metrics see it."""

    @property
    def zones(self) -> ZoneConfig: ...

    @property
    def api_token(self) -> str | None: ...

    @property
    def result(self) -> Result: ...

    @property
    def ready(self) -> bool: ...

    @property
    def degraded(self) -> bool: ...

    @property
    def draining(self) -> bool: ...

    @property
    def stats(self) -> Stats: ...

    @property
    def dns_cache_entries(self) -> int: ...

    @property
    def sources(self) -> Sequence[Source]: ...

    @property
    def components(self) -> Sequence[Component]: ...

    @property
    def overrides(self) -> OverridesSource | None: ...

    @property
    def counters(self) -> Counter[str]: ...

    @property
    def watch_restarts(self) -> Counter[str]: ...

    @property
    def patch_results(self) -> Counter[str]: ...

    @property
    def authenticator(self) -> Authenticator | None: ...

    @property
    def trail(self) -> Trail: ...

    def now(self) -> float: ...

    def rebuild(self) -> bool: ...


def aliases_document(result: Result) -> dict[str, Any]:
    """The JSON of /v1/aliases (also what ``aliasd list`` prints)."""
    losers: dict[str, list[str]] = {}
    for c in result.conflicts:
        losers.setdefault(c.name, []).append(c.loser.ref)
    beaten: dict[str, list[str]] = {}
    for c in result.overridden:
        beaten.setdefault(c.name, []).append(c.loser.ref)
    aliases = []
    for e in result.entries:
        claim = e.claim
        aliases.append({
            "name": e.name,
            "addresses": list(claim.addresses),
            "cname": claim.cname,
            "ttl": claim.ttl,
            "ports": [{"name": p.name, "protocol": p.protocol, "port": p.port}
                      for p in claim.ports],
            "owner": claim.owner.ref,
            "weight": claim.weight if e.name in result.snapshot.weighted else None,
            "conflicts": losers.get(e.name, []),
            "override": claim.owner.kind == OVERRIDE_KIND,
            "overridden": beaten.get(e.name, []),
            "takeover": claim.takeover,
            "fallback": claim.fallback,
        })
    return {
        "serial": result.snapshot.serial,
        "ready": result.snapshot.ready,
        "aliases": aliases,
        "conflicts": [
            {"name": c.name, "winner": c.winner.ref, "loser": c.loser.ref}
            for c in result.conflicts
        ],
        "invalid": [{"name": i.claim.name, "owner": i.claim.owner.ref, "reason": i.reason}
                    for i in result.invalid],
    }
