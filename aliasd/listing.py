"""``aliasd list``: the aliases document (the JSON of /v1/aliases), fetched from
a running aliasd or computed from the cluster, rendered for a terminal."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from typing import Any

import aiohttp
import yaml

from aliasd import registry
from aliasd.api import aliases_document
from aliasd.kubeapi import make_client
from aliasd.model import ConfigError
from aliasd.registry import ZoneConfig

SYNC_TIMEOUT = 30.0


async def from_server(url: str) -> dict[str, Any]:
    target = url.rstrip("/") + "/v1/aliases"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s, \
                s.get(target) as resp:
            if resp.status != 200:
                raise ConfigError(f"{target}: HTTP {resp.status}")
            doc: dict[str, Any] = await resp.json()
            return doc
    except (aiohttp.ClientError, TimeoutError, ValueError) as e:
        raise ConfigError(f"cannot read {target}: {e or type(e).__name__}") from None


async def from_cluster(kubeconfig: str | None, *, zones: ZoneConfig, namespaces: list[str],
                       overrides: str) -> dict[str, Any]:
    """List (and watch until synced) like ``aliasd run`` does, then build once."""
    from aliasd.kubeapi import split_ref
    from aliasd.sources.kube import KubeSource
    from aliasd.sources.overrides import ConfigMapOverrides

    cm_ns, cm_name = split_ref(overrides, flag="--overrides-configmap")
    api = await make_client(kubeconfig)
    try:
        restarts: Counter[str] = Counter()
        kube = KubeSource(api, zones=zones, namespaces=namespaces,
                          on_claims=lambda key, claims: None, on_change=lambda: None,
                          restarts=restarts)
        switch = ConfigMapOverrides(api, zones, lambda: None, namespace=cm_ns, name=cm_name,
                                    restarts=restarts)
        tasks = [asyncio.create_task(kube.run()), asyncio.create_task(switch.run())]
        deadline = time.monotonic() + SYNC_TIMEOUT
        try:
            while not (kube.synced and switch.synced):
                for task in tasks:
                    if task.done():
                        task.result()
                if time.monotonic() > deadline:
                    raise ConfigError(f"could not read the cluster within {SYNC_TIMEOUT:.0f}s: "
                                      f"{kube.error or switch.error or 'not synced'}")
                await asyncio.sleep(0.05)
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        result = registry.build([*kube.claims, *switch.claims], config=zones,
                                serial=registry.next_serial(0, time.time()), ready=True)
        return aliases_document(result)
    finally:
        await api.close()


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
