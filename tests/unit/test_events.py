"""One Event recorder for the process: reporters do not clear each other."""

from __future__ import annotations

import asyncio

from aliasd.model import Owner
from aliasd.sources.kube import EventRecorder
from aliasd.sources.mapping import Problem


class Recorder(EventRecorder):
    def __init__(self) -> None:  # no API client: Events are collected, not sent
        self.active = {}
        self.tasks = set()
        self.sent: list[str] = []

    async def _emit(self, p: Problem) -> None:
        self.sent.append(f"{p.owner.ref} {p.reason}")


def test_each_reporter_syncs_its_own_set() -> None:
    svc = Problem(Owner(1.0, "shop", "web", "Service", "u1"), "AliasConflict", "taken")
    cm = Problem(Owner(0.0, "kube-system", "coredns", "ConfigMap", "u2"),
                 "CorefileConflict", "zone corp")

    async def run() -> list[str]:
        r = Recorder()
        corefile = r.reporter("corefile")
        r.sync([svc])
        corefile([cm])
        r.sync([svc])  # the registry's set does not clear the patcher's problem...
        corefile([cm])  # ...so neither is sent again while it persists
        corefile([])
        corefile([cm])  # gone and back: a new Event
        await asyncio.gather(*r.tasks)
        return r.sent

    assert asyncio.run(run()) == ["Service shop/web AliasConflict",
                                  "ConfigMap kube-system/coredns CorefileConflict",
                                  "ConfigMap kube-system/coredns CorefileConflict"]
