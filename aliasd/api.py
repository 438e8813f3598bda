"""Read-only HTTP endpoints: /healthz, /readyz, /metrics, /v1/aliases."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from aliasd.metrics import build_registry
from aliasd.model import ConfigError
from aliasd.registry import Result

if TYPE_CHECKING:
    from aliasd.app import App


def aliases_document(result: Result) -> dict[str, Any]:
    """The JSON of /v1/aliases (also what ``aliasd list`` prints)."""
    losers: dict[str, list[str]] = {}
    for c in result.conflicts:
        losers.setdefault(c.name, []).append(c.loser.ref)
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


def make_app(app: App) -> web.Application:
    registry = build_registry(app)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        sources = {s.name: {"synced": s.synced, "error": s.error} for s in app.sources}
        ready = app.ready and app.result.snapshot.ready
        not_ready = [n for n, s in sources.items() if not s["synced"]]
        body: dict[str, Any] = {"ready": ready, "sources": sources, "not_synced": not_ready}
        # Components (CoreDNS wiring) are detail, not readiness: DNS answers either way.
        body.update({c.name: c.status() for c in app.components})
        return web.json_response(body, status=200 if ready else 503)

    async def metrics(_: web.Request) -> web.Response:
        resp = web.Response(body=generate_latest(registry))
        resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        resp.charset = "utf-8"
        return resp

    async def aliases(_: web.Request) -> web.Response:
        return web.json_response(aliases_document(app.result))

    web_app = web.Application()
    web_app.router.add_get("/healthz", healthz)
    web_app.router.add_get("/readyz", readyz)
    web_app.router.add_get("/metrics", metrics)
    web_app.router.add_get("/v1/aliases", aliases)
    return web_app


async def start_http(app: App, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(make_app(app), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise ConfigError(f"cannot listen on {host}:{port} for HTTP: "
                          f"{e.strerror or e}") from None
    app.http_port = int(runner.addresses[0][1])
    return runner
