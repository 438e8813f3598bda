"""The users' path for real: a kind cluster from kind-config.yaml,
built offline by hack/kind/build.sh and set up by the README quickstart's
kustomize block (hack/kind-up.sh) as written, with the overrides only tests
need (node image, base image, dig image). One cluster per session, deleted at the end
(ALIASD_E2E_KEEP=1 keeps it for a look)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT, quickstart
from tests.support.kind import REPORT, Kind, say

CLUSTER = os.environ.get("ALIASD_E2E_CLUSTER") or "aliasd-e2e"


@pytest.hookimpl(trylast=True)  # after pytest-randomly's shuffle
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The kind tests share one cluster and run in the order written, file by
    file (each builds on what the one before left), whatever order the rest
    runs in; then the one marked ``uninstall``, which removes the kustomize
    install; then those marked ``helm``, which install the chart on the
    cluster left without aliasd."""
    here = Path(__file__).parent

    def phase(i: pytest.Item) -> int:
        return 2 if i.get_closest_marker("helm") else 1 if i.get_closest_marker(
            "uninstall") else 0

    e2e = sorted((i for i in items if Path(str(i.path)).parent == here),
                 key=lambda i: (phase(i), str(i.path), i.location[1] or 0))
    items[:] = [i for i in items if Path(str(i.path)).parent != here] + e2e


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if REPORT:
        terminalreporter.section("e2e: measured in kind")
        for line in REPORT:
            terminalreporter.write_line(line)


def _run(cmd: list[str], *, env: dict[str, str], log: Path, what: str,
         timeout: float) -> tuple[str, float]:
    """Run a repository tool, its output into ``log``: (stdout, seconds)."""
    t0 = time.monotonic()
    with log.open("a") as err:
        p = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err,
                           text=True, timeout=timeout, check=False)
    seconds = time.monotonic() - t0
    if p.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-40:])
        raise AssertionError(f"{what} exited {p.returncode} after {seconds:.0f} s; "
                             f"log {log}:\n{tail}")
    say(f"e2e time: {what}: {seconds:.1f} s")
    return p.stdout, seconds


@pytest.fixture(scope="session")
def kind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kind]:
    tmp = tmp_path_factory.mktemp("kind")
    log = tmp / "kind.log"
    env = {**os.environ, "KUBECONFIG": str(tmp / "kubeconfig"), "KIND_CLUSTER_NAME": CLUSTER}
    times: dict[str, float] = {}
    out, times["hack/kind/build.sh"] = _run(["hack/kind/build.sh"], env=env, log=log,
                                            what="hack/kind/build.sh", timeout=3600)
    env_file = out.strip().splitlines()[-1]
    dumped = subprocess.run(["bash", "-c", f'source "{env_file}" && env -0'], env=env,
                            capture_output=True, check=True).stdout.decode()
    env = dict(line.split("=", 1) for line in dumped.split("\0") if "=" in line)
    subprocess.run(["kind", "delete", "cluster", "--name", CLUSTER], env=env,
                   capture_output=True, check=False, timeout=120)
    _, times["kind create cluster (3 nodes)"] = _run(
        ["kind", "create", "cluster", "--config", "kind-config.yaml", "--name", CLUSTER,
         "--image", env["KIND_NODE_IMAGE"]], env=env, log=log, what="kind create cluster",
        timeout=600)
    k = Kind(env=env, initial_corefile="", control_plane=f"{CLUSTER}-control-plane",
             times=times)
    k.initial_corefile = k.corefile()
    try:
        _, times["hack/kind-up.sh"] = _run(quickstart.command("kustomize"), env=env,
                                           log=log, what="hack/kind-up.sh", timeout=900)
        yield k
    finally:
        if os.environ.get("ALIASD_E2E_KEEP") != "1":
            subprocess.run(["kind", "delete", "cluster", "--name", CLUSTER], env=env,
                           capture_output=True, check=False, timeout=300)


@pytest.fixture(scope="session")
def client(kind: Kind) -> str:
    """A pod with dig and getent (the dig image kind-up uses)."""
    kind.pod("client", kind.env["DIG_IMAGE"], ["sleep", "86400"])
    return "client"


