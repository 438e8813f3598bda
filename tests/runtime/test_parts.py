"""The state writer, the relist checker, the lame duck and process tuning,
built directly."""

from __future__ import annotations

import asyncio
import gc
import json
import time
from collections.abc import Callable
from pathlib import Path

from aliasd.engine import KEY_SEP
from aliasd.runtime.checker import RelistChecker
from aliasd.runtime.committer import Committer
from aliasd.runtime.process import LameDuck, ProcessTuning
from aliasd.runtime.statewriter import StateWriter
from aliasd.state import StateFile
from aliasd.status import aliases_document
from tests.support.runtime import ZONES, Clock, Dns, WholeSource, claim, new_inbox


async def until(check: Callable[[], object]) -> None:
    deadline = time.monotonic() + 5.0
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def test_state_writer_writes_the_changed_objects(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "state.json"
    inbox = new_inbox(track_changes=True)
    writer = StateWriter(StateFile(path), clock=clock, interval=0.0)
    assert writer.load() is None
    committer = Committer(inbox, zones=ZONES, dns=Dns(), sources=[WholeSource(synced=True)],
                          reporters=[], clock=clock, debounce=0.0, state=writer)
    inbox.update_claims(f"kubernetes{KEY_SEP}svc/shop/web", [claim("web.internal", "10.0.0.2")])
    committer.commit()

    async def main() -> None:
        task = asyncio.ensure_future(writer.run())
        try:
            await until(path.exists)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    doc = json.loads(path.read_text())
    assert [c["name"] for c in doc["claims"]] == ["web.internal"]
    assert not inbox.engine.changed_keys
    state = StateWriter(StateFile(path), clock=clock, interval=0.0).load()
    assert state is not None and [c.addresses for c in state.claims] == [("10.0.0.2",)]


def test_state_writer_flushes_the_last_change_at_exit(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "state.json"
    inbox = new_inbox(track_changes=True)
    writer = StateWriter(StateFile(path), clock=clock, interval=0.0)
    committer = Committer(inbox, zones=ZONES, dns=Dns(), sources=[WholeSource(synced=True)],
                          reporters=[], clock=clock, debounce=0.0, state=writer)
    inbox.update_claims(f"kubernetes{KEY_SEP}svc/shop/web", [claim("web.internal", "10.0.0.2")])
    committer.commit()
    writer.flush()  # the loop never ran
    assert [c["name"] for c in json.loads(path.read_text())["claims"]] == ["web.internal"]


def test_a_malformed_state_file_is_ignored(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "state.json"
    path.write_text("{not json")
    assert StateWriter(StateFile(path), clock=clock, interval=0.0).load() is None


def test_relist_checker_finds_nothing_on_a_consistent_engine(clock: Clock) -> None:
    inbox = new_inbox()
    committer = Committer(inbox, zones=ZONES, dns=Dns(), sources=[WholeSource(synced=True)],
                          reporters=[], clock=clock, debounce=0.0)
    inbox.update_claims(f"kubernetes{KEY_SEP}svc/shop/web", [claim("web.internal", "10.0.0.2")])
    committer.commit()
    checker = RelistChecker(inbox, committer, zones=ZONES, settle=0.0)
    assert not asyncio.run(checker.check())
    assert checker.failures == 0


def test_relist_checker_resets_an_engine_that_drifted(clock: Clock) -> None:
    inbox = new_inbox()
    dns = Dns()
    committer = Committer(inbox, zones=ZONES, dns=dns, sources=[WholeSource(synced=True)],
                          reporters=[], clock=clock, debounce=0.0)
    inbox.update_claims(f"kubernetes{KEY_SEP}svc/shop/web", [claim("web.internal", "10.0.0.2")])
    committer.commit()
    drifted = inbox.engine
    # A bug's effect: the engine's claims change behind the index's back.
    drifted.claims = drifted.claims.set(f"kubernetes{KEY_SEP}svc/shop/db",
                                        (claim("db.internal", "10.0.0.5", owner="db"),))
    checker = RelistChecker(inbox, committer, zones=ZONES, settle=0.0)
    assert asyncio.run(checker.check())
    assert checker.failures == 1 and inbox.engine is not drifted
    assert [a["name"] for a in aliases_document(committer.result)["aliases"]] == [
        "db.internal.", "web.internal."]


def test_relist_checker_waits_for_a_relist(clock: Clock) -> None:
    inbox = new_inbox()
    committer = Committer(inbox, zones=ZONES, dns=Dns(), sources=[WholeSource(synced=True)],
                          reporters=[], clock=clock, debounce=0.0)
    committer.commit()
    checks: list[bool] = []

    class Counting(RelistChecker):
        async def check(self) -> bool:
            checks.append(True)
            return await super().check()

    checker = Counting(inbox, committer, zones=ZONES, settle=0.0)

    async def main() -> None:
        task = asyncio.ensure_future(checker.run())
        try:
            for _ in range(3):
                await asyncio.sleep(0)
            assert checks == []
            inbox.relisted()
            await until(lambda: checks == [True])
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())


def test_lame_duck_drains_after_the_stop() -> None:
    duck = LameDuck(0.05)

    async def main() -> list[bool]:
        stop = asyncio.Event()
        task = asyncio.ensure_future(duck.until(stop))
        seen = [duck.draining]
        stop.set()
        await until(lambda: duck.draining)
        seen.append(duck.draining)
        await task
        return seen

    assert asyncio.run(main()) == [False, True]


def test_no_lame_duck_stops_at_once() -> None:
    duck = LameDuck(0.0)

    async def main() -> None:
        stop = asyncio.Event()
        stop.set()
        await duck.until(stop)

    asyncio.run(main())
    assert not duck.draining


def test_process_tuning_turns_the_collector_off_until_the_sync() -> None:
    assert gc.isenabled()
    tuning = ProcessTuning(gc_sync_limit=60.0)

    async def main() -> list[bool]:
        tuning.start()
        seen = [gc.isenabled()]
        tuning.synced()
        seen.append(gc.isenabled())
        tuning.stop()
        return seen

    try:
        assert asyncio.run(main()) == [False, True]
    finally:
        gc.unfreeze()
        gc.enable()
