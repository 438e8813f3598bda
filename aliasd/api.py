"""HTTP endpoints: /healthz, /readyz, /metrics, /v1/aliases, and the
overrides API (/v1/overrides, issue 7), described in ``openapi.yaml``."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from aliasd.access import Authenticator, Refused, Trail, Write
from aliasd.kubeapi import TRANSIENT
from aliasd.metrics import build_registry
from aliasd.model import ApplyError, ConfigError, utc_timestamp
from aliasd.registry import Result
from aliasd.sources import overrides
from aliasd.status import AliasesRenderer, Status

log = logging.getLogger(__name__)

MAX_BODY = 16 * 1024  # an override is a few hundred bytes
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


_LABEL = "[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"


def name_pattern(zones: tuple[str, ...]) -> str:
    """An override name of these zones: a bare label, or labels ending in a zone."""
    suffix = "|".join(re.escape(z.rstrip(".")) for z in zones)
    return f"^{_LABEL}$|^({_LABEL}[.])+({suffix})[.]?$"


def _error(status: int, text: str, **headers: str) -> web.Response:
    return web.json_response({"error": text}, status=status, headers=headers)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as ``{"error": "..."}`` (aiohttp's own 404/405/413 included)."""
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        text = e.text if e.text and not e.text.startswith(f"{e.status}:") else e.reason
        if e.status == 413:
            text = f"the body is larger than {MAX_BODY} bytes"
        return _error(e.status, text or e.reason, **{
            k: v for k, v in e.headers.items() if k.lower() in ("allow", "www-authenticate")})


def make_app(app: Status) -> web.Application:
    registry = build_registry(app)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        sources = {s.name: {"synced": s.synced, "error": s.error} for s in app.sources}
        # Degraded (answering from the state file) is still ready: taking the
        # pod out of its Service would leave clients with no answer at all.
        ready = ((app.ready and app.result.snapshot.ready) or app.degraded) and not app.draining
        not_ready = [n for n, s in sources.items() if not s["synced"]]
        body: dict[str, Any] = {"ready": ready, "degraded": app.degraded,
                                "draining": app.draining, "sources": sources,
                                "not_synced": not_ready}
        # Components (CoreDNS wiring) are detail, not readiness: DNS answers either way.
        body.update({c.name: c.status() for c in app.components})
        return web.json_response(body, status=200 if ready else 503)

    async def metrics(_: web.Request) -> web.Response:
        resp = web.Response(body=generate_latest(registry))
        resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        resp.charset = "utf-8"
        return resp

    # /v1/aliases grows with the cluster: rendered once per result, on the
    # loop a slice at a time and only the names whose resolution changed
    # (AliasesRenderer), and written a piece at a time, so a DNS query waits
    # behind at most one piece of it, however hard the endpoint is polled.
    renderer = AliasesRenderer()
    rendered: list[tuple[Result, asyncio.Future[tuple[list[bytes], int]]]] = []

    async def render(result: Result) -> tuple[list[bytes], int]:
        pieces = []
        for piece in renderer.pieces(result):
            pieces.append(piece)
            await asyncio.sleep(0)
        return pieces, sum(map(len, pieces))

    async def aliases(request: web.Request) -> web.StreamResponse:
        result = app.result
        if not rendered or rendered[0][0] is not result:
            rendered[:] = [(result, asyncio.ensure_future(render(result)))]
        pieces, length = await asyncio.shield(rendered[0][1])
        resp = web.StreamResponse()
        resp.content_type = "application/json"
        resp.content_length = length
        await resp.prepare(request)
        for piece in pieces:
            await resp.write(piece)
        await resp.write_eof()
        return resp

    openapi_text = resources.files("aliasd").joinpath("openapi.yaml").read_text().replace(
        "@NAME_PATTERN@", name_pattern(app.zones.zones))

    async def openapi(_: web.Request) -> web.Response:
        return web.Response(text=openapi_text, content_type="application/yaml")

    web_app = web.Application(client_max_size=MAX_BODY, middlewares=[json_errors])
    web_app.router.add_get("/healthz", healthz)
    web_app.router.add_get("/readyz", readyz)
    web_app.router.add_get("/metrics", metrics)
    web_app.router.add_get("/v1/aliases", aliases)
    web_app.router.add_get("/openapi.yaml", openapi)
    OverridesApi(app, authenticator=app.authenticator, trail=app.trail).add_routes(web_app)
    return web_app


_REFUSALS: dict[int, type[web.HTTPException]] = {
    401: web.HTTPUnauthorized, 403: web.HTTPForbidden, 429: web.HTTPTooManyRequests,
    503: web.HTTPServiceUnavailable}


def _asked(raw: bytes) -> str:
    """A refused PUT's body for the trail: what the caller wanted, trimmed."""
    text = raw.decode(errors="replace")
    return " ".join(text.split())[:200] or "(empty body)"


def describe(o: overrides.Override | None) -> str:
    """An override in a trail message: ``10.0.0.7 (ttl 5)``, or ``none``."""
    if o is None:
        return "none"
    return f"{o.cname or ', '.join(o.addresses)} (ttl {o.ttl})"


class OverridesApi:
    """``/v1/overrides``: reads for everyone; each write authorized by the
    ``authenticator`` (None: the write API is off) and recorded in the ``trail``,
    allowed or refused."""

    def __init__(self, app: Status, *, authenticator: Authenticator | None, trail: Trail) -> None:
        self.app = app
        self.authenticator = authenticator
        self.trail = trail

    def add_routes(self, web_app: web.Application) -> None:
        web_app.router.add_get("/v1/overrides", self.list)
        web_app.router.add_get("/v1/overrides/{name}", self.get)
        web_app.router.add_put("/v1/overrides/{name}", self.put)
        web_app.router.add_delete("/v1/overrides/{name}", self.delete)

    def _source(self) -> overrides.OverridesSource:
        if self.app.overrides is None:
            raise web.HTTPServiceUnavailable(text="overrides are off: aliasd has no "
                                             "place to store them")
        return self.app.overrides

    def _name(self, request: web.Request) -> str:
        try:
            return overrides.parse_name(request.match_info["name"], self.app.zones)
        except ValueError as e:
            raise web.HTTPBadRequest(text=str(e)) from None

    async def _authorize(self, request: web.Request, *, verb: str, name: str,
                         before: overrides.Override | None, asked: str) -> str:
        """The caller's name (the trail's "who"), or the refusal, recorded."""
        remote = request.remote or ""
        if self.authenticator is None:
            raise web.HTTPForbidden(text="the write API is off: start aliasd with "
                                    "--api-token-file, or in a cluster")
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        try:
            if scheme.lower() != "bearer" or not given.strip():
                raise Refused(401, "missing bearer token (Authorization: Bearer <token>)")
            return await self.authenticator.authorize(given.strip(), verb=verb,
                                                      name=name.rstrip("."), remote=remote)
        except Refused as e:
            who = e.who or f"an unauthenticated caller at {remote}"
            self.trail.record(Write(who, verb, name, describe(before), asked, refused=e))
            headers = ({"WWW-Authenticate": 'Bearer realm="aliasd"'} if e.status == 401
                       else {"Retry-After": "1"} if e.status == 429 else {})
            raise _REFUSALS[e.status](text=e.text, headers=headers) from None

    async def list(self, _: web.Request) -> web.Response:
        items = self.app.overrides.items.values() if self.app.overrides else []
        return web.json_response(
            {"overrides": [o.document() for o in sorted(items, key=lambda o: o.name)]})

    async def get(self, request: web.Request) -> web.Response:
        name = self._name(request)
        found = self._source().get(name)
        if found is None:
            raise web.HTTPNotFound(text=f"no override for {name}")
        return web.json_response(found.document())

    async def put(self, request: web.Request) -> web.Response:
        name = self._name(request)
        raw = await request.read()
        before = self.app.overrides.get(name) if self.app.overrides else None
        who = await self._authorize(request, verb="update", name=name, before=before,
                                    asked=_asked(raw))
        source = self._source()
        try:
            body = json.loads(raw)
        except ValueError as e:
            raise web.HTTPBadRequest(text=f"the body is not valid JSON: {e}") from None
        now = utc_timestamp(self.app.now())
        try:
            if isinstance(body, dict) and ({"updated", "by", "name"} & set(body)):
                raise ValueError("name, updated and by are set by aliasd, not the caller")
            o = overrides.parse(request.match_info["name"], body, zones=self.app.zones,
                                updated=now, by=who)
        except ValueError as e:
            raise web.HTTPBadRequest(text=str(e)) from None
        await self._store(source.put(o))
        self.trail.record(Write(who, "update", o.name, describe(before), describe(o)))
        self.app.rebuild()  # answer with it before replying
        return web.json_response(o.document(), status=201 if before is None else 200)

    async def delete(self, request: web.Request) -> web.Response:
        name = self._name(request)
        found = self.app.overrides.get(name) if self.app.overrides else None
        who = await self._authorize(request, verb="delete", name=name, before=found,
                                    asked="none")
        source = self._source()
        if found is None:
            raise web.HTTPNotFound(text=f"no override for {name}")
        await self._store(source.delete(found))
        self.trail.record(Write(who, "delete", name, describe(found), "none"))
        self.app.rebuild()
        return web.json_response(found.document())

    @staticmethod
    async def _store(write: Awaitable[None]) -> None:
        try:
            await write
        except (ApplyError, *TRANSIENT) as e:
            log.error("storing an override failed: %s", str(e).splitlines()[0])
            raise web.HTTPServiceUnavailable(
                text=f"could not store the override: {str(e).splitlines()[0][:300]}") from None


async def start_http(app: Status, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(make_app(app), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise ConfigError(f"cannot listen on {host}:{port} for HTTP: "
                          f"{e.strerror or e}") from None
    bound = int(runner.addresses[0][1])
    log.info("HTTP listening on %s:%d", host, bound)  # the bound port, also for :0
    return runner
