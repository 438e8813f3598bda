"""What HTTP and metrics read: a narrow read model of the running process
(no way back into it), and the aliases document built from a result."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

from prometheus_client.core import GaugeMetricFamily

from aliasd.model import OVERRIDE_KIND
from aliasd.resolver import Conflict, Invalid, Resolution, Result
from aliasd.runtime.committer import Source

T = TypeVar("T")


class Component(Protocol):
    """A background part that is not a source (the CoreDNS patcher): it runs
    beside the sources and reports its state in /readyz."""

    name: str

    def status(self) -> dict[str, Any]: ...

    async def run(self) -> None: ...


class Served(Protocol):
    """What is served (``aliasd.runtime.committer.Committer``)."""

    @property
    def result(self) -> Result: ...

    @property
    def ready(self) -> bool: ...

    @property
    def degraded(self) -> bool: ...


class Draining(Protocol):
    """The lame duck (``aliasd.runtime.process.LameDuck``)."""

    @property
    def draining(self) -> bool: ...


class ReadModel:
    """The running process as HTTP and metrics read it, and nothing they could
    change it through."""

    def __init__(self, *, served: Served, sources: Sequence[Source],
                 components: Sequence[Component], lame_duck: Draining) -> None:
        self._served = served
        self._sources = tuple(sources)
        self._components = tuple(components)
        self._lame_duck = lame_duck

    @property
    def result(self) -> Result:
        return self._served.result

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Whether /readyz passes, and its body."""
        sources = {s.name: {"synced": s.synced, "error": s.error} for s in self._sources}
        degraded, draining = self._served.degraded, self._lame_duck.draining
        # Degraded (answering from the state file) is still ready: taking the
        # pod out of its Service would leave clients with no answer at all.
        ready = ((self._served.ready and self.result.snapshot.ready) or degraded) \
            and not draining
        body: dict[str, Any] = {"ready": ready, "degraded": degraded, "draining": draining,
                                "sources": sources,
                                "not_synced": [n for n, s in sources.items() if not s["synced"]]}
        # Components (CoreDNS wiring) are detail, not readiness: DNS answers either way.
        body.update({c.name: c.status() for c in self._components})
        return ready, body

    def collect(self) -> Iterator[GaugeMetricFamily]:
        res = self.result
        yield GaugeMetricFamily("aliasd_aliases", "Aliases served", value=res.entry_count)
        yield GaugeMetricFamily("aliasd_alias_conflicts", "Claims that lost a name conflict",
                                value=res.conflict_count)
        yield GaugeMetricFamily("aliasd_invalid_aliases", "Claims rejected as invalid",
                                value=res.invalid_count)
        by_reason = GaugeMetricFamily(
            "aliasd_invalid_aliases_by_reason", "Claims rejected, by Event reason "
            "(InvalidAlias, TakeoverNotAllowed, AliasNotAllowed = denied by the name policy)",
            labels=["reason"])
        for reason, n in sorted(res.invalid_by_reason().items()):
            by_reason.add_metric([reason], n)
        yield by_reason
        yield GaugeMetricFamily("aliasd_snapshot_serial", "SOA serial of the served snapshot",
                                value=res.snapshot.serial)
        yield GaugeMetricFamily("aliasd_ready", "1 when every source has synced",
                                value=1 if self._served.ready else 0)
        yield GaugeMetricFamily("aliasd_degraded", "1 while answering from the state file "
                                "because the sources have not synced",
                                value=1 if self._served.degraded else 0)
        synced = GaugeMetricFamily("aliasd_source_synced", "1 when the source has synced",
                                   labels=["source"])
        for s in self._sources:
            synced.add_metric([s.name], 1 if s.synced else 0)
        yield synced


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
            "priority": claim.priority,
            "check": claim.check.target if claim.check is not None else None,
            # Whether this target is in the answer now: "standby" (a lower
            # priority's, an unhealthy or an empty one) or "failing-open"
            # (every checked target is unhealthy; all of the best priority answer).
            "state": "standby" if claim in res.standby
            else "failing-open" if res.failing_open else "answering",
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
