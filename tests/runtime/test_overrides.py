"""The overrides service and the read model, built directly (standalone store:
the state file; a static token; the log trail)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from aliasd.access import LogTrail, Refused, StaticToken, Write
from aliasd.runtime.overrides import OverrideError, OverridesService
from aliasd.sources.overrides import FileOverrides
from aliasd.state import StateFile
from aliasd.status import ReadModel
from tests.support.runtime import ZONES, Clock, WholeSource, new_inbox


class Trail(LogTrail):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[Write] = []

    def emit(self, write: Write, text: str) -> None:
        self.writes.append(write)


def service(tmp_path: Path, clock: Clock, *, commits: list[bool],
            trail: Trail) -> OverridesService:
    changes: list[bool] = []
    source = FileOverrides(ZONES, lambda: changes.append(True),
                           state=StateFile(tmp_path / "state.json"), clock=clock)
    source.load(())

    async def committed() -> None:
        commits.append(bool(changes))

    return OverridesService(source, zones=ZONES, authenticator=StaticToken("tok"), trail=trail,
                            clock=clock, committed=committed)


def test_put_get_delete(tmp_path: Path, clock: Clock) -> None:
    commits: list[bool] = []
    trail = Trail()
    svc = service(tmp_path, clock, commits=commits, trail=trail)
    body = json.dumps({"addresses": ["10.0.0.7"], "ttl": 5}).encode()

    async def main() -> tuple[Any, ...]:
        o, created = await svc.put("db", body, token="tok", remote="10.1.1.1")
        _, created_again = await svc.put("db", body, token="tok", remote="10.1.1.1")
        found = svc.get(svc.name("db"))
        gone = await svc.delete("db", token="tok", remote="10.1.1.1")
        return o, created, created_again, found, gone

    o, created, created_again, found, gone = asyncio.run(main())
    assert (o.name, o.addresses, o.ttl, o.by) == ("db.internal.", ("10.0.0.7",), 5, "10.1.1.1")
    assert (created, created_again) == (True, False)
    assert found == o and gone.name == "db.internal."
    assert svc.list() == []
    assert commits == [True, True, True]  # each write answered once committed
    assert [w.reason for w in trail.writes] == ["OverrideSet", "OverrideSet", "OverrideDeleted"]


@pytest.mark.parametrize(("token", "status"), [(None, 401), ("wrong", 401)])
def test_refused_writes_are_recorded(tmp_path: Path, clock: Clock, token: str | None,
                                     status: int) -> None:
    commits: list[bool] = []
    trail = Trail()
    svc = service(tmp_path, clock, commits=commits, trail=trail)
    with pytest.raises(Refused) as refused:
        asyncio.run(svc.put("db", b'{"addresses": ["10.0.0.7"]}', token=token, remote="x"))
    assert refused.value.status == status
    assert [w.reason for w in trail.writes] == ["OverrideRefused"] and commits == []


@pytest.mark.parametrize(("name", "body", "status"), [
    ("db.elsewhere", b'{"addresses": ["10.0.0.7"]}', 400),
    ("db", b"not json", 400),
    ("db", b'{"addresses": ["10.0.0.7"], "by": "me"}', 400),
])
def test_bad_writes(tmp_path: Path, clock: Clock, name: str, body: bytes, status: int) -> None:
    svc = service(tmp_path, clock, commits=[], trail=Trail())
    with pytest.raises(OverrideError) as error:
        asyncio.run(svc.put(name, body, token="tok", remote="x"))
    assert error.value.status == status


def test_overrides_off(clock: Clock) -> None:
    async def committed() -> None:
        raise AssertionError("nothing to commit")

    svc = OverridesService(None, zones=ZONES, authenticator=StaticToken("tok"), trail=Trail(),
                           clock=clock, committed=committed)
    assert svc.list() == []
    with pytest.raises(OverrideError) as error:
        svc.get("db.internal.")
    assert error.value.status == 503
    with pytest.raises(Refused) as refused:
        asyncio.run(OverridesService(
            None, zones=ZONES, authenticator=None, trail=Trail(), clock=clock,
            committed=committed).delete("db", token="tok", remote="x"))
    assert refused.value.status == 403


class Served:
    def __init__(self, ready: bool, degraded: bool) -> None:
        self.result = new_inbox().engine.result
        self.ready, self.degraded = ready, degraded


class Duck:
    draining = False


@pytest.mark.parametrize(("ready", "degraded", "draining", "expected"), [
    (True, False, False, False),  # the snapshot itself was built before the sync
    (False, True, False, True),  # degraded is still ready
    (False, True, True, False),  # draining never is
    (False, False, False, False),
])
def test_readiness(ready: bool, degraded: bool, draining: bool, expected: bool) -> None:
    duck = Duck()
    duck.draining = draining
    read = ReadModel(served=Served(ready, degraded),
                     sources=[WholeSource(synced=ready, error=None)], components=[],
                     lame_duck=duck)
    passed, body = read.readiness()
    assert passed is expected
    assert body["sources"] == {"file": {"synced": ready, "error": None}}
    assert body["not_synced"] == ([] if ready else ["file"])
