"""The typed configuration of ``aliasd run``'s serving parts (the CLI builds
it from the flags; ``aliasd.root`` builds the parts from it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from aliasd.dns.server import ServerConfig
from aliasd.zoneconfig import ZoneConfig


@dataclass(frozen=True)
class AppConfig:
    zones: ZoneConfig
    dns: ServerConfig = field(default_factory=ServerConfig)
    http_host: str = "0.0.0.0"
    http_port: int = 8080
    aliases_file: Path | None = None
    debounce: float = 0.005  # commits cost what changed: coalesce bursts, not more
    state_file: Path | None = None
    api_token: str | None = None  # bearer token for the write API; None = writes off
    state_interval: float = 1.0  # at most one state file write per this many seconds
    # Seconds between the stop signal and closing the sockets: /readyz fails, DNS
    # keeps answering while Services and kube-proxy stop sending queries here.
    lame_duck: float = 0.0
    probe_limit: int = 64  # health probes in flight at once
    # /metrics on its own listener (None: on the HTTP one).
    metrics_listen: tuple[str, int] | None = None
    # /v1/aliases and the /v1/overrides reads need a token allowed to read.
    reads_need_token: bool = False
