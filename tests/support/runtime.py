"""Real engines and snapshots, fake clocks, sources and DNS servers."""

from __future__ import annotations

from dataclasses import dataclass, field

from aliasd import resolver
from aliasd.engine import Engine
from aliasd.model import AliasClaim, Owner
from aliasd.runtime.inbox import Inbox
from aliasd.zone import Snapshot
from aliasd.zoneconfig import ZoneConfig

ZONES = ZoneConfig.from_names(["internal"])
START = 1_800_000_000.0


def claim(name: str, *addresses: str, owner: str = "web") -> AliasClaim:
    return AliasClaim(name, Owner(1.0, "shop", owner, "Service", f"uid-{owner}"),
                      addresses=addresses)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@dataclass
class WholeSource:
    """A source that hands over its whole state (like the aliases file)."""

    name: str = "file"
    claims: list[AliasClaim] = field(default_factory=list)
    synced: bool = False
    error: str | None = None

    async def run(self) -> None:
        raise NotImplementedError


@dataclass
class Dns:
    """Records what the committer swaps in."""

    swapped: list[tuple[Snapshot, frozenset[str] | None]] = field(default_factory=list)

    def swap(self, snapshot: Snapshot, changed: frozenset[str] | None = None) -> None:
        self.swapped.append((snapshot, changed))


def new_inbox(*, track_changes: bool = False) -> Inbox:
    return Inbox(Engine(ZONES, serial=resolver.next_serial(0, START),
                        track_changes=track_changes))
