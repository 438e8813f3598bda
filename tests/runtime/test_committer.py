"""The committer, built directly: a real engine, a fake clock, a fake DNS server."""

from __future__ import annotations

import asyncio

from aliasd.engine import KEY_SEP
from aliasd.resolver import Result
from aliasd.runtime.committer import Committer
from aliasd.state import State
from aliasd.status import aliases_document
from tests.support.runtime import ZONES, Clock, Dns, WholeSource, claim, new_inbox


def addresses(result: Result, name: str) -> list[str]:
    """What /v1/aliases says ``name`` answers with."""
    return sorted(a for alias in aliases_document(result)["aliases"] if alias["name"] == name
                  for a in alias["addresses"])


def test_whole_state_source_is_read_at_the_first_commit(clock: Clock) -> None:
    inbox = new_inbox()
    source = WholeSource(claims=[claim("a.internal", "10.0.0.1")], synced=True)
    reports: list[bool] = []
    synced: list[bool] = []
    dns = Dns()
    committer = Committer(inbox, zones=ZONES, dns=dns, sources=[source],
                          reporters=[lambda result, changed: reports.append(changed)],
                          clock=clock, debounce=0.0, on_synced=lambda: synced.append(True))
    assert committer.commit()
    assert committer.ready and committer.result.snapshot.ready
    assert addresses(committer.result, "a.internal.") == ["10.0.0.1"]
    assert dns.swapped[-1][0] is committer.result.snapshot
    assert (reports, synced, committer.engine_runs, committer.snapshots) == ([True], [True], 1, 1)
    assert not committer.commit()  # nothing changed: no snapshot, no report
    assert (reports, synced, committer.snapshots) == ([True], [True], 1)


def test_claims_commit_only_the_changed_names(clock: Clock) -> None:
    inbox = new_inbox()
    source = WholeSource(synced=True)
    dns = Dns()
    committer = Committer(inbox, zones=ZONES, dns=dns, sources=[source], reporters=[],
                          clock=clock, debounce=0.0)
    committer.commit()
    inbox.update_claims(f"kubernetes{KEY_SEP}svc/shop/web", [claim("web.internal", "10.0.0.2")])
    assert inbox.waiting
    assert [m.samples[0].value for m in inbox.collect()] == [1, 0, 0]  # claims, policies, health
    assert committer.commit()
    assert not inbox.waiting
    assert dns.swapped[-1][1] is not None and "web.internal." in dns.swapped[-1][1]
    assert addresses(committer.result, "web.internal.") == ["10.0.0.2"]


def test_stale_state_is_served_until_the_sources_sync(clock: Clock) -> None:
    inbox = new_inbox()
    source = WholeSource(claims=[claim("a.internal", "10.0.0.9")])
    stale = State((claim("a.internal", "10.0.0.1"),), (), written=clock.now - 60)
    committer = Committer(inbox, zones=ZONES, dns=Dns(), sources=[source], reporters=[],
                          clock=clock, debounce=0.0, stale=stale)
    committer.commit()
    assert committer.degraded and not committer.settled
    assert addresses(committer.result, "a.internal.") == ["10.0.0.1"]
    serial = committer.result.snapshot.serial
    source.synced = True
    inbox.notifier("file")()
    clock.now += 1
    committer.commit()
    assert not committer.degraded and committer.settled
    assert addresses(committer.result, "a.internal.") == ["10.0.0.9"]
    assert committer.result.snapshot.serial > serial


def test_committed_returns_once_the_change_is_served(clock: Clock) -> None:
    inbox = new_inbox()
    source = WholeSource(synced=True)
    committer = Committer(inbox, zones=ZONES, dns=Dns(), sources=[source], reporters=[],
                          clock=clock, debounce=0.005)

    async def main() -> list[str]:
        runner = asyncio.ensure_future(committer.run())
        try:
            source.claims = [claim("b.internal", "10.0.0.3")]
            inbox.notifier("file")()
            await asyncio.wait_for(committer.committed(), 5)
            return addresses(committer.result, "b.internal.")
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)

    assert asyncio.run(main()) == ["10.0.0.3"]


def test_a_failing_reporter_does_not_stop_the_others(clock: Clock) -> None:
    inbox = new_inbox()
    seen: list[int] = []

    def broken(result: Result, changed: bool) -> None:
        raise RuntimeError("boom")

    committer = Committer(inbox, zones=ZONES, dns=Dns(), sources=[WholeSource(synced=True)],
                          reporters=[broken, lambda r, c: seen.append(r.snapshot.serial)],
                          clock=clock, debounce=0.0)
    committer.commit()
    assert seen == [committer.result.snapshot.serial]
