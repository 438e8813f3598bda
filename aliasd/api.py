"""HTTP endpoints: /healthz, /readyz, /metrics (or on a listener of its
own), /v1/aliases, and the overrides API (/v1/overrides), described in
``openapi.yaml``. HTTP reads a
read model (``aliasd.status.ReadModel``) and writes only through the
overrides service (``aliasd.runtime.overrides``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Iterator
from importlib import resources

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from aliasd.access import Refused
from aliasd.model import ConfigError
from aliasd.resolver import Result
from aliasd.runtime.overrides import OverrideError, OverridesService
from aliasd.status import AliasesRenderer, ReadModel
from aliasd.zoneconfig import ZoneConfig

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


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def _metrics(registry: CollectorRegistry) -> Handler:
    async def metrics(_: web.Request) -> web.Response:
        resp = web.Response(body=generate_latest(registry))
        resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        resp.charset = "utf-8"
        return resp
    return metrics


def make_metrics_app(registry: CollectorRegistry) -> web.Application:
    """``--metrics-listen``: /metrics (and /healthz) on a listener of their own,
    which a NetworkPolicy can open to Prometheus alone (as CoreDNS keeps its
    metrics on their own port)."""
    web_app = web.Application(middlewares=[json_errors])
    web_app.router.add_get("/healthz", healthz)
    web_app.router.add_get("/metrics", _metrics(registry))
    return web_app


def make_app(read: ReadModel, service: OverridesService, *, zones: ZoneConfig,
             registry: CollectorRegistry | None, reads_need_token: bool = False
             ) -> web.Application:
    """The HTTP API; ``registry`` None: /metrics is served elsewhere
    (``make_metrics_app``); ``reads_need_token``: /v1/aliases and the
    /v1/overrides reads need a bearer token allowed to read (``--read-access``)."""
    async def readyz(_: web.Request) -> web.Response:
        ready, body = read.readiness()
        return web.json_response(body, status=200 if ready else 503)

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
        if reads_need_token:
            await _may_read(service, request)
        result = read.result
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
        "@NAME_PATTERN@", name_pattern(zones.zones))

    async def openapi(_: web.Request) -> web.Response:
        return web.Response(text=openapi_text, content_type="application/yaml")

    web_app = web.Application(client_max_size=MAX_BODY, middlewares=[json_errors])
    web_app.router.add_get("/healthz", healthz)
    web_app.router.add_get("/readyz", readyz)
    if registry is not None:
        web_app.router.add_get("/metrics", _metrics(registry))
    web_app.router.add_get("/v1/aliases", aliases)
    web_app.router.add_get("/openapi.yaml", openapi)
    OverridesApi(service, reads_need_token=reads_need_token).add_routes(web_app)
    return web_app


async def _may_read(service: OverridesService, request: web.Request) -> None:
    with _answers():
        await service.authorize_read(_token(request), remote=request.remote or "")


_REFUSALS: dict[int, type[web.HTTPException]] = {
    400: web.HTTPBadRequest, 401: web.HTTPUnauthorized, 403: web.HTTPForbidden,
    404: web.HTTPNotFound, 429: web.HTTPTooManyRequests, 503: web.HTTPServiceUnavailable}


def _token(request: web.Request) -> str | None:
    """The bearer token of ``Authorization: Bearer <token>``, if any."""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return given.strip() if scheme.lower() == "bearer" and given.strip() else None


class OverridesApi:
    """``/v1/overrides``: the overrides service over HTTP."""

    def __init__(self, service: OverridesService, *, reads_need_token: bool = False) -> None:
        self.service = service
        self.reads_need_token = reads_need_token

    def add_routes(self, web_app: web.Application) -> None:
        web_app.router.add_get("/v1/overrides", self.list)
        web_app.router.add_get("/v1/overrides/{name}", self.get)
        web_app.router.add_put("/v1/overrides/{name}", self.put)
        web_app.router.add_delete("/v1/overrides/{name}", self.delete)

    async def list(self, request: web.Request) -> web.Response:
        if self.reads_need_token:
            await _may_read(self.service, request)
        return web.json_response({"overrides": [o.document() for o in self.service.list()]})

    async def get(self, request: web.Request) -> web.Response:
        if self.reads_need_token:
            await _may_read(self.service, request)
        with _answers():
            name = self.service.name(request.match_info["name"])
            found = self.service.get(name)
            if found is None:
                raise OverrideError(404, f"no override for {name}")
        return web.json_response(found.document())

    async def put(self, request: web.Request) -> web.Response:
        with _answers():
            self.service.name(request.match_info["name"])  # a bad name: 400 before the body
            raw = await request.read()
            o, created = await self.service.put(request.match_info["name"], raw,
                                                token=_token(request),
                                                remote=request.remote or "")
        return web.json_response(o.document(), status=201 if created else 200)

    async def delete(self, request: web.Request) -> web.Response:
        with _answers():
            found = await self.service.delete(request.match_info["name"],
                                              token=_token(request),
                                              remote=request.remote or "")
        return web.json_response(found.document())


@contextlib.contextmanager
def _answers() -> Iterator[None]:
    """The service's refusals and errors as HTTP errors."""
    try:
        yield
    except Refused as e:
        headers = ({"WWW-Authenticate": 'Bearer realm="aliasd"'} if e.status == 401
                   else {"Retry-After": "1"} if e.status == 429 else {})
        raise _REFUSALS[e.status](text=e.text, headers=headers) from None
    except OverrideError as e:
        raise _REFUSALS[e.status](text=e.text) from None


async def start_http(app: web.Application, host: str, port: int, *,
                     what: str = "HTTP") -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise ConfigError(f"cannot listen on {host}:{port} for {what}: "
                          f"{e.strerror or e}") from None
    bound = int(runner.addresses[0][1])
    log.info("%s listening on %s:%d", what, host, bound)  # the bound port, also for :0
    return runner
