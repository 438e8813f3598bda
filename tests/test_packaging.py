"""The wheel carries only what runs in a cluster: the local control plane and
the demo are repository tools (hack/devtools/aliasd_dev), never shipped."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.support import ROOT

# What a build reads; caches, the venv and build output stay out of the copy.
NOT_SOURCES = shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__",
                                     ".mypy_cache", ".ruff_cache", ".pytest_cache",
                                     ".hypothesis")


def test_wheel_ships_only_the_product(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=NOT_SOURCES)  # setuptools writes build/ in the tree
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "-q", "-w", str(tmp_path / "dist"), str(src)],
        capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    (wheel,) = (tmp_path / "dist").glob("aliasd-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        code = {n: z.read(n).decode() for n in names if n.endswith(".py")}
    tops = {n.split("/")[0] for n in names}
    assert tops == {"aliasd", next(t for t in tops if t.endswith(".dist-info"))}, tops
    assert {"aliasd/cli.py", "aliasd/dns/server.py", "aliasd/openapi.yaml",
            "aliasd/py.typed"} <= set(names)
    dev = [n for n in names if any(w in n for w in ("devcluster", "demo", "aliasd_dev",
                                                     "serviceentry-crd", "tests/", "hack/"))]
    assert dev == []
    assert [n for n, text in code.items() if "aliasd_dev" in text or "devcluster" in text] == []


def test_cli_has_no_demo_command() -> None:
    out = subprocess.run([sys.executable, "-m", "aliasd", "--help"], capture_output=True,
                         text=True, timeout=30, cwd=ROOT, check=False)
    assert out.returncode == 0
    commands = [line.split()[0] for line in out.stdout.split("COMMAND\n")[1].splitlines()
                if line.startswith("    ") and not line.startswith("     ")]
    assert commands == ["run", "coredns", "list"]
