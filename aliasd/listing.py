"""``aliasd list``: the aliases document (the JSON of /v1/aliases), fetched from
a running aliasd or computed from the cluster, rendered for a terminal."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import yaml

from aliasd.model import ConfigError


async def from_server(url: str, token: str | None = None) -> dict[str, Any]:
    """The /v1/aliases document of the aliasd at ``url`` (with ``token`` as
    the bearer token, when given)."""
    target = url.rstrip("/") + "/v1/aliases"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s, \
                s.get(target, headers=headers) as resp:
            if resp.status != 200:
                raise ConfigError(f"{target}: HTTP {resp.status}{await _why(resp)}")
            doc: dict[str, Any] = await resp.json()
            return doc
    except (aiohttp.ClientError, TimeoutError, ValueError) as e:
        raise ConfigError(f"cannot read {target}: {e or type(e).__name__}") from None


async def _why(resp: aiohttp.ClientResponse) -> str:
    """": " and the error aliasd's API gives in its JSON body, if it gives one."""
    try:
        body = await resp.json()
    except (aiohttp.ContentTypeError, ValueError):
        return ""
    error = body.get("error") if isinstance(body, dict) else None
    return f": {error}" if isinstance(error, str) else ""


def _targets(a: dict[str, Any]) -> str:
    return f"CNAME {a['cname']}" if a.get("cname") else ",".join(a["addresses"]) or "<none>"


def render(doc: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(doc, indent=2) + "\n"
    if fmt == "yaml":
        return str(yaml.safe_dump(doc, sort_keys=False))
    header = ["NAME", "TARGETS", "OWNER", "TTL", "CONFLICTS"]
    if fmt == "wide":
        header.append("PORTS")
    rows = [header]
    for a in doc["aliases"]:
        row = [a["name"], _targets(a), a["owner"], str(a["ttl"]),
               ",".join(a["conflicts"]) or "-"]
        if fmt == "wide":
            row.append(",".join(f"{p['name']}/{p['protocol']}:{p['port']}"
                                for p in a["ports"]) or "-")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in rows]
    for inv in doc.get("invalid", []):
        lines.append(f"# invalid: {inv['name']} ({inv['owner']}): {inv['reason']}")
    return "\n".join(lines) + "\n"
