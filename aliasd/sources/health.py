"""A target's health from its probe results, with hysteresis. Pure: no I/O,
no clock (``now`` is an argument).

A target starts healthy (a restart must not empty every answer while the
first probes run), turns unhealthy after ``Check.unhealthy`` failed probes in
a row and healthy again after ``Check.healthy`` passing ones, as Kubernetes'
probes (``failureThreshold``/``successThreshold``) and Route 53's health
checks (``FailureThreshold``) count. One failure in three never reaches a
threshold of two or more in a row, so it never flaps the answer.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from aliasd.model import Check


@dataclass(frozen=True)
class TargetHealth:
    """One target's verdict and the streak that leads to the next one.
    ``since``: when it last changed health (None: never, it started healthy);
    ``error``: why the probe that made it unhealthy failed (kept until it is
    healthy again, so a status is not rewritten on every failed probe)."""

    healthy: bool = True
    since: float | None = None
    error: str | None = None
    streak: int = 0  # probes in a row that disagree with ``healthy``


STARTING = TargetHealth()


def observe(check: Check, state: TargetHealth, *, ok: bool, error: str | None,
            now: float) -> TargetHealth:
    """``state`` after one probe of ``check`` (``ok``: it passed)."""
    if ok == state.healthy:
        return state if state.streak == 0 else replace(state, streak=0)
    streak = state.streak + 1
    if streak < (check.healthy if ok else check.unhealthy):
        return replace(state, streak=streak)
    return TargetHealth(healthy=ok, since=now, error=None if ok else error)
