"""The Alias status writer with a fake API server that echoes each write
back the way the watch does: every Alias is written twice (Ready with
Programmed pending, then Programmed) and then nothing more, whatever the
echoes do to the replica's own watermark."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from aliasd import resolver
from aliasd.runtime.aliasstatus import engine_key
from aliasd.runtime.statuswriter import AliasStatusWriter
from aliasd.sources.aliases import AliasInfo
from tests.unit.test_aliases import ZONES, info


async def test_each_alias_is_written_twice_then_left_alone() -> None:
    n = 40
    infos: dict[str, AliasInfo] = {
        f"shop/a{i}": info({"hostnames": [f"a{i}.internal"],
                            "targets": [{"address": f"10.0.0.{i + 1}"}]}, name=f"a{i}")
        for i in range(n)}
    result = resolver.build_keyed(
        {engine_key("kubernetes", k): i.claims for k, i in infos.items()}, config=ZONES,
        serial=100)
    written: Counter[str] = Counter()
    echoes: list[tuple[str, dict[str, Any]]] = []

    async def patch(namespace: str, name: str, body: dict[str, Any]
                    ) -> tuple[int, dict[str, Any]]:
        written[name] += 1
        echoes.append((f"{namespace}/{name}", body["status"]))
        return 200, {}

    results: Counter[str] = Counter()
    writer = AliasStatusWriter(source="kubernetes", patch=patch, zones=ZONES,
                               leading=lambda: True, send=lambda event: None,
                               clock=lambda: 0.0, results=results, rate=1e6)
    for k, i in infos.items():
        writer.update(k, (i, {}))
    writer.report(result, True)
    task = asyncio.create_task(writer.run())
    try:
        published: list[int | None] = []
        for _ in range(200):  # the watch's echoes, the next commit, the replica's Lease
            await asyncio.sleep(0.01)
            while echoes:
                key, status = echoes.pop(0)
                writer.update(key, (infos[key], status))
            writer.report(result, False)
            if writer.watermark is not None and writer.watermark != (published or [None])[-1]:
                published.append(writer.watermark)
                writer.replicas({"me": writer.watermark})
        assert dict(written) == {f"a{i}": 2 for i in range(n)}
        assert results["written"] == 2 * n
        assert writer.watermark == 100
    finally:
        task.cancel()
