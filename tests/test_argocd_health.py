"""The Argo CD health check of docs/reference/argocd-health.lua, run by a real
Lua interpreter against Alias status fixtures, as Argo CD runs it: the
object as the global ``obj``, the chunk returning ``{status, message}``."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT

SCRIPT = ROOT / "docs" / "reference" / "argocd-health.lua"
LUA = shutil.which("lua5.4") or shutil.which("lua5.3") or shutil.which("lua")


def lua_literal(value: Any) -> str:
    """A Lua table constructor for JSON-shaped ``value``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, list):
        return "{" + ", ".join(lua_literal(v) for v in value) + "}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{lua_literal(k)}] = {lua_literal(v)}"
                               for k, v in value.items() if v is not None) + "}"
    raise TypeError(type(value))


def health(obj: dict[str, Any], tmp_path: Path) -> tuple[str, str]:
    assert LUA is not None, "no Lua interpreter: hack/setup.sh installs lua5.4"
    harness = tmp_path / "harness.lua"
    harness.write_text(f"obj = {lua_literal(obj)}\n"
                       f"local hs = assert(loadfile({lua_literal(str(SCRIPT))}))()\n"
                       'io.write(hs.status, "\\n", hs.message or "")\n')
    out = subprocess.run([LUA, str(harness)], capture_output=True, text=True, timeout=10,
                         check=True)
    status, _, message = out.stdout.partition("\n")
    return status, message


def alias(generation: int, status: dict[str, Any] | None) -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": "aliasd.io/v1alpha1", "kind": "Alias",
                           "metadata": {"name": "fruits", "namespace": "shop",
                                        "generation": generation},
                           "spec": {"hostnames": ["my-fruits.internal"],
                                    "serviceRef": {"name": "fruits"}}}
    if status is not None:
        obj["status"] = status
    return obj


def conditions(generation: int, *items: tuple[str, str, str]) -> dict[str, Any]:
    return {"observedGeneration": generation, "conditions": [
        {"type": t, "status": s, "reason": r, "message": f"{t} {r}",
         "observedGeneration": generation, "lastTransitionTime": "2024-01-01T00:00:00Z"}
        for t, s, r in items]}


READY = (("Accepted", "True", "Accepted"), ("ResolvedRefs", "True", "ResolvedRefs"),
         ("Ready", "True", "Ready"))


@pytest.mark.parametrize(("obj", "want"), [
    (alias(1, None), ("Progressing", "Waiting for aliasd to report the status")),
    (alias(2, conditions(1, *READY)), ("Progressing",
                                       "Waiting for aliasd to observe generation 2")),
    (alias(3, conditions(3, *READY)), ("Healthy", "Ready Ready")),
    (alias(1, conditions(1, ("Accepted", "False", "Conflicted"),
                         ("ResolvedRefs", "True", "ResolvedRefs"),
                         ("Ready", "False", "Conflicted"))),
     ("Degraded", "Conflicted: Accepted Conflicted")),
    (alias(1, conditions(1, ("Accepted", "False", "NotAllowedByPolicy"),
                         ("Ready", "False", "NotAllowedByPolicy"))),
     ("Degraded", "NotAllowedByPolicy: Accepted NotAllowedByPolicy")),
    (alias(1, conditions(1, ("Accepted", "True", "Accepted"),
                         ("ResolvedRefs", "False", "NoReadyEndpoints"),
                         ("Ready", "False", "NoReadyEndpoints"))),
     ("Progressing", "NoReadyEndpoints: Ready NoReadyEndpoints")),
    (alias(1, conditions(1, ("Accepted", "True", "Accepted"))),
     ("Progressing", "Waiting for the Ready condition")),
    (alias(1, conditions(1, *READY, ("Healthy", "True", "Healthy"))), ("Healthy", "Ready Ready")),
    (alias(1, conditions(1, *READY, ("Healthy", "False", "Degraded"))),
     ("Degraded", "Degraded: Healthy Degraded")),
    (alias(1, conditions(1, *READY, ("Healthy", "False", "AllTargetsUnhealthy"))),
     ("Degraded", "AllTargetsUnhealthy: Healthy AllTargetsUnhealthy")),
], ids=["no-status", "old-generation", "ready", "conflicted", "policy", "no-endpoints",
        "no-ready-condition", "healthy", "some-targets-down", "all-targets-down"])
def test_argocd_health(obj: dict[str, Any], want: tuple[str, str], tmp_path: Path) -> None:
    assert health(obj, tmp_path) == want
