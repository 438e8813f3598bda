"""The Alias status writer with a fake API server that echoes each write
back the way the watch does. Alone, the writing replica serves every answer
it writes: each Alias is written once (Ready and Programmed together). With
another live replica, twice (Ready with Programmed pending, then Programmed
once that replica's watermark reaches the serial). Then nothing more,
whatever the echoes do to the replica's own watermark; several writes are
in flight at once, never two for one Alias."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from aliasd import resolver
from aliasd.engine import KEY_SEP, Engine
from aliasd.model import AliasClaim, Owner
from aliasd.runtime import aliasstatus, statuswriter
from aliasd.runtime.aliasstatus import engine_key
from aliasd.runtime.statuswriter import AliasStatusWriter
from aliasd.sources.aliases import AliasInfo
from tests.unit.test_aliases import ZONES, info


def started(patch: statuswriter.Patch, infos: dict[str, AliasInfo], result: resolver.Result, *,
            others: dict[str, int], results: Counter[str]
            ) -> tuple[AliasStatusWriter, asyncio.Task[None]]:
    """A leading writer (the replica "me", no rate limit) told of ``infos``
    without a status, of the other replicas' watermarks and of ``result``,
    and its task running."""
    writer = AliasStatusWriter(source="kubernetes", patch=patch, zones=ZONES,
                               leading=lambda: True, send=lambda event: None,
                               clock=lambda: 0.0, results=results, identity="me", rate=1e6)
    for k, i in infos.items():
        writer.update(k, (i, {}))
    writer.replicas(others)
    writer.report(result, True)
    return writer, asyncio.create_task(writer.run())


@pytest.mark.parametrize(("others", "writes"), [({}, 1), ({"b": 0}, 2)])
async def test_each_alias_is_written_once_per_change_then_left_alone(
        others: dict[str, int], writes: int) -> None:
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
    flying: set[str] = set()
    most = 0

    async def patch(namespace: str, name: str, body: dict[str, Any]
                    ) -> tuple[int, dict[str, Any]]:
        nonlocal most
        assert name not in flying  # one write per Alias at a time
        flying.add(name)
        most = max(most, len(flying))
        await asyncio.sleep(0.002)  # the API server's round trip
        flying.discard(name)
        written[name] += 1
        key = f"{namespace}/{name}"
        # A merge patch: the status as the API server then holds it.
        before = next((s for k, s in reversed(echoes) if k == key), statuses.get(key, {}))
        statuses[key] = {**before, **body["status"]}
        echoes.append((key, statuses[key]))
        return 200, {}

    statuses: dict[str, dict[str, Any]] = {}
    results: Counter[str] = Counter()
    writer, task = started(patch, infos, result, others=others, results=results)
    try:
        published: list[int | None] = []
        for _ in range(200):  # the watch's echoes, the next commit, the replicas' Leases
            await asyncio.sleep(0.01)
            while echoes:
                key, status = echoes.pop(0)
                writer.update(key, (infos[key], status))
            writer.report(result, False)
            if writer.watermark is not None and writer.watermark != (published or [None])[-1]:
                published.append(writer.watermark)
                # The other replica (if any) has caught up as well.
                writer.replicas({"me": writer.watermark,
                                 **{r: writer.watermark for r in others}})
        assert dict(written) == {f"a{i}": writes for i in range(n)}
        assert results["written"] == writes * n
        assert writer.watermark == 100
        assert most > 1
        assert all(s["conditions"][2]["type"] == "Programmed"
                   and s["conditions"][2]["status"] == "True" for s in statuses.values())
    finally:
        task.cancel()


async def test_a_write_that_fails_however_it_fails_is_tried_again() -> None:
    """A write that raises something the HTTP client does not document, and one
    that does not reach the API server (status 0), are failed writes, tried
    again: the writer keeps running (its crash would stop the DNS server) and
    each status lands once."""
    infos: dict[str, AliasInfo] = {
        f"shop/{name}": info({"hostnames": [f"{name}.internal"],
                              "targets": [{"address": f"10.0.1.{i + 1}"}]}, name=name)
        for i, name in enumerate(("odd", "lost", "fine"))}
    result = resolver.build_keyed(
        {engine_key("kubernetes", k): i.claims for k, i in infos.items()}, config=ZONES,
        serial=100)
    failures = {"odd": AttributeError("'NoneType' object has no attribute 'getall'"),
                "lost": None}
    attempts: Counter[str] = Counter()
    landed: dict[str, dict[str, Any]] = {}

    async def patch(namespace: str, name: str, body: dict[str, Any]
                    ) -> tuple[int, dict[str, Any]]:
        attempts[name] += 1
        if name in failures:
            failure = failures.pop(name)
            if failure is not None:
                raise failure
            return 0, {"message": "Cannot connect to host"}
        landed[name] = body["status"]
        return 200, {}

    results: Counter[str] = Counter()
    _, task = started(patch, infos, result, others={}, results=results)
    try:
        for _ in range(300):  # the retry waits for the writer's next wake-up (1 s at most)
            if len(landed) == 3 or task.done():
                break
            await asyncio.sleep(0.01)
        assert not task.done()
        assert sorted(landed) == ["fine", "lost", "odd"]
        assert dict(attempts) == {"odd": 2, "lost": 2, "fine": 1}
        assert (results["written"], results["refused"]) == (3, 2)
        assert {name: s["addresses"] for name, s in landed.items()} == {
            "odd": ["10.0.1.1"], "lost": ["10.0.1.2"], "fine": ["10.0.1.3"]}
    finally:
        task.cancel()


async def test_a_change_looks_at_the_aliases_it_touches_and_no_other(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Once every status is written, a change elsewhere (an older annotated
    Service claiming one Alias's name) re-resolves one name: the writer looks
    at the one Alias naming it, not at all of them, and rewrites its status
    (Conflicted, the winner named)."""
    n = 50
    infos: dict[str, AliasInfo] = {
        f"shop/a{i}": info({"hostnames": [f"a{i}.internal"],
                            "targets": [{"address": f"10.0.2.{i + 1}"}]}, name=f"a{i}")
        for i in range(n)}
    engine = Engine(ZONES, serial=100, ready=True)
    for k, i in infos.items():
        engine.set(engine_key("kubernetes", k), i.claims)
    engine.commit(now=0.0, ready=True)
    looked: Counter[str] = Counter()

    def counting_inputs(alias: AliasInfo, *args: Any, **kw: Any) -> tuple[object, ...]:
        looked[alias.owner.name] += 1
        return aliasstatus.inputs(alias, *args, **kw)

    monkeypatch.setattr(statuswriter, "inputs", counting_inputs)
    statuses: dict[str, dict[str, Any]] = {}
    echoes: list[str] = []

    async def patch(namespace: str, name: str, body: dict[str, Any]
                    ) -> tuple[int, dict[str, Any]]:
        statuses[name] = {**statuses.get(name, {}), **body["status"]}
        echoes.append(name)
        return 200, {}

    writer, task = started(patch, infos, engine.result, others={}, results=Counter())

    async def settle() -> None:
        """Until every write is echoed back and compared once more."""
        for _ in range(300):
            await asyncio.sleep(0.01)
            while echoes:
                name = echoes.pop(0)
                writer.update(f"shop/{name}", (infos[f"shop/{name}"], statuses[name]))
            writer.report(engine.result, False)
            if not echoes and writer.status()["pending"] == 0 and len(statuses) == n:
                return

    try:
        await settle()
        assert len(statuses) == n
        looked.clear()
        older = Owner(created=0.0, namespace="shop", name="legacy", kind="Service", uid="u-l")
        engine.set(f"kubernetes{KEY_SEP}svc/shop/legacy",
                   [AliasClaim("a7.internal", older, addresses=("10.0.9.9",))])
        commit = engine.commit(now=1.0, ready=True)
        assert commit is not None and commit.result.delta is not None
        assert commit.result.delta.names == {"a7.internal."}
        writer.report(engine.result, True)
        for _ in range(300):
            await asyncio.sleep(0.01)
            accepted = {c["type"]: c for c in statuses["a7"]["conditions"]}["Accepted"]
            if accepted["reason"] == "Conflicted":
                break
        assert accepted["status"] == "False"
        assert "Service shop/legacy" in accepted["message"]
        assert set(looked) == {"a7"}
    finally:
        task.cancel()
