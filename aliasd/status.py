"""What HTTP and metrics read: a narrow view of the running app (no back
edge into ``aliasd.app``), and the aliases document built from a result."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

from aliasd.access import Authenticator, Trail
from aliasd.dns.stats import Stats
from aliasd.model import OVERRIDE_KIND, AliasClaim
from aliasd.registry import Conflict, Invalid, Resolution, Result, ZoneConfig
from aliasd.sources.overrides import OverridesSource

T = TypeVar("T")


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
    return {
        "serial": result.snapshot.serial,
        "ready": result.snapshot.ready,
        "aliases": [a for n in sorted(result.resolutions)
                    for a in _aliases(result.resolutions[n])],
        "conflicts": [_conflict(c) for c in result.conflicts],
        "invalid": [_invalid(i) for i in result.invalid],
    }


def _aliases(res: Resolution) -> list[dict[str, Any]]:
    """One name's entries in the document: a function of its resolution only."""
    out = []
    for e in res.entries:
        claim = e.claim
        out.append({
            "name": e.name,
            "addresses": list(claim.addresses),
            "cname": claim.cname,
            "ttl": claim.ttl,
            "ports": [{"name": p.name, "protocol": p.protocol, "port": p.port}
                      for p in claim.ports],
            "owner": claim.owner.ref,
            # The snapshot's weighted groups are the resolutions' (by name).
            "weight": claim.weight if res.weighted is not None and e.name == res.name
            else None,
            "conflicts": [c.loser.ref for c in res.conflicts if c.name == e.name],
            "override": claim.owner.kind == OVERRIDE_KIND,
            "overridden": [c.loser.ref for c in res.overridden if c.name == e.name],
            "takeover": claim.takeover,
            "fallback": claim.fallback,
        })
    return out


def _conflict(c: Conflict) -> dict[str, Any]:
    return {"name": c.name, "winner": c.winner.ref, "loser": c.loser.ref}


def _invalid(i: Invalid) -> dict[str, Any]:
    return {"name": i.claim.name, "owner": i.claim.owner.ref, "reason": i.reason}


class AliasesRenderer:
    """``json.dumps(aliases_document(result))``, byte for byte, in pieces of
    about ``SLICE`` items each (the caller lets DNS queries in between), and
    rendering again only the names whose resolution changed since the last
    result: at 10,000 aliases a whole ``json.dumps`` held the GIL for tens of
    milliseconds in one C call, on every change while someone polled."""

    SLICE = 256

    def __init__(self) -> None:
        self._parts: dict[str, tuple[Resolution, bytes]] = {}

    def pieces(self, result: Result) -> Iterator[bytes]:
        """The document's bytes, piece by piece; the cache of names is
        replaced once the last piece is taken (an abandoned render keeps the
        old one)."""
        snap = result.snapshot
        yield (f'{{"serial": {json.dumps(snap.serial)}, "ready": {json.dumps(snap.ready)}, '
               f'"aliases": [').encode()
        old, new = self._parts, {}
        resolutions = result.resolutions
        names = sorted(resolutions)
        first = True
        for start in range(0, len(names), self.SLICE):
            chunk = []
            for n in names[start:start + self.SLICE]:
                res = resolutions[n]
                hit = old.get(n)
                if hit is None or hit[0] is not res:
                    hit = (res, ", ".join(json.dumps(a) for a in _aliases(res)).encode())
                new[n] = hit
                if hit[1]:
                    chunk.append(hit[1])
            if chunk:
                yield (b"" if first else b", ") + b", ".join(chunk)
                first = False
        yield b'], "conflicts": ['
        yield from _items(result.conflicts, _conflict, self.SLICE)
        yield b'], "invalid": ['
        yield from _items(result.invalid, _invalid, self.SLICE)
        yield b"]}"
        self._parts = new


def _items(items: Sequence[T], render: Callable[[T], dict[str, Any]],
           size: int) -> Iterator[bytes]:
    for start in range(0, len(items), size):
        yield (b", " if start else b"") + ", ".join(
            json.dumps(render(x)) for x in items[start:start + size]).encode()
