"""The overrides service: what HTTP may change. Each write is authorized
(``aliasd.access.Authenticator``), stored by the overrides source, recorded
in the trail, allowed or refused, and answered once the normal source →
engine path has committed it, so the caller's next query sees it."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterator

from prometheus_client.core import GaugeMetricFamily

from aliasd.access import READ_RESOURCE, Authenticator, Refused, Trail, Write
from aliasd.kubeapi import TRANSIENT
from aliasd.model import ApplyError, utc_timestamp
from aliasd.sources import overrides
from aliasd.sources.overrides import Override, OverridesSource
from aliasd.zoneconfig import ZoneConfig

log = logging.getLogger(__name__)


class OverrideError(Exception):
    """A write or read that cannot be done: ``status`` 400 (bad name or
    body), 404 (no such override) or 503 (overrides are off, or storing
    failed)."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def describe(o: Override | None) -> str:
    """An override in a trail message: ``10.0.0.7 (ttl 5)``, or ``none``."""
    if o is None:
        return "none"
    return f"{o.cname or ', '.join(o.addresses)} (ttl {o.ttl})"


def _asked(raw: bytes) -> str:
    """A refused PUT's body for the trail: what the caller wanted, trimmed."""
    text = raw.decode(errors="replace")
    return " ".join(text.split())[:200] or "(empty body)"


class OverridesService:
    """Reads for everyone; each write authorized by ``authenticator`` (None:
    the write API is off) and recorded in ``trail``. ``source`` None: there
    is nowhere to store overrides."""

    def __init__(self, source: OverridesSource | None, *, zones: ZoneConfig,
                 authenticator: Authenticator | None, trail: Trail,
                 clock: Callable[[], float], committed: Callable[[], Awaitable[None]]) -> None:
        self._source = source
        self._zones = zones
        self._authenticator = authenticator
        self._trail = trail
        self._clock = clock
        self._committed = committed

    def list(self) -> list[Override]:
        items = self._source.items.values() if self._source is not None else []
        return sorted(items, key=lambda o: o.name)

    def name(self, text: str) -> str:
        """An override's name from the caller (400 when outside the zones)."""
        try:
            return overrides.parse_name(text, self._zones)
        except ValueError as e:
            raise OverrideError(400, str(e)) from None

    def get(self, name: str) -> Override | None:
        """The override of ``name`` (503 when overrides are off)."""
        return self._store().get(name)

    def _current(self, name: str) -> Override | None:
        return self._source.get(name) if self._source is not None else None

    async def put(self, text: str, raw: bytes, *, token: str | None,
                  remote: str) -> tuple[Override, bool]:
        """Set the override of ``text`` from the JSON body ``raw``: the
        override and whether it is new."""
        name = self.name(text)
        before = self._current(name)
        who = await self._authorize(token, verb="update", name=name, before=before,
                                    asked=_asked(raw), remote=remote)
        source = self._store()
        try:
            body = json.loads(raw)
        except ValueError as e:
            raise OverrideError(400, f"the body is not valid JSON: {e}") from None
        try:
            if isinstance(body, dict) and ({"updated", "by", "name"} & set(body)):
                raise ValueError("name, updated and by are set by aliasd, not the caller")
            o = overrides.parse(text, body, zones=self._zones,
                                updated=utc_timestamp(self._clock()), by=who)
        except ValueError as e:
            raise OverrideError(400, str(e)) from None
        await _stored(source.put(o))
        self._trail.record(Write(who, "update", o.name, describe(before), describe(o)))
        await self._committed()  # answer with it before replying
        return o, before is None

    async def delete(self, text: str, *, token: str | None, remote: str) -> Override:
        """Delete the override of ``text``; the one deleted."""
        name = self.name(text)
        found = self._current(name)
        who = await self._authorize(token, verb="delete", name=name, before=found,
                                    asked="none", remote=remote)
        source = self._store()
        if found is None:
            raise OverrideError(404, f"no override for {name}")
        await _stored(source.delete(found))
        self._trail.record(Write(who, "delete", name, describe(found), "none"))
        await self._committed()
        return found

    def _store(self) -> OverridesSource:
        if self._source is None:
            raise OverrideError(503, "overrides are off: aliasd has no place to store them")
        return self._source

    async def _authorize(self, token: str | None, *, verb: str, name: str,
                         before: Override | None, asked: str, remote: str) -> str:
        """The caller's name (the trail's "who"), or the refusal, recorded."""
        if self._authenticator is None:
            raise Refused(403, "the write API is off: start aliasd with --api-token-file, "
                          "or in a cluster")
        try:
            if not token:
                raise Refused(401, "missing bearer token (Authorization: Bearer <token>)")
            return await self._authenticator.authorize(token, verb=verb,
                                                       name=name.rstrip("."), remote=remote)
        except Refused as e:
            who = e.who or f"an unauthenticated caller at {remote}"
            self._trail.record(Write(who, verb, name, describe(before), asked, refused=e))
            raise

    async def authorize_read(self, token: str | None, *, remote: str) -> str:
        """Who may read the zone (``--read-access token``): the static token,
        or a Kubernetes user RBAC lets ``list`` ``aliases.aliasd.io``. Reads
        are not recorded in the trail."""
        if self._authenticator is None:
            raise Refused(403, "reads need a token, and there is none to check: start "
                          "aliasd with --api-token-file, or in a cluster")
        if not token:
            raise Refused(401, "missing bearer token (Authorization: Bearer <token>): "
                          "reads need one (--read-access token)")
        return await self._authenticator.authorize(token, verb="list", name="",
                                                   resource=READ_RESOURCE, remote=remote)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily("aliasd_overrides", "HTTP overrides in effect",
                                value=len(self._source.items) if self._source else 0)


async def _stored(write: Awaitable[None]) -> None:
    try:
        await write
    except (ApplyError, *TRANSIENT) as e:
        log.error("storing an override failed: %s", str(e).splitlines()[0])
        raise OverrideError(503, "could not store the override: "
                            f"{str(e).splitlines()[0][:300]}") from None
