"""hack/kind-up.sh run again on the e2e cluster, as a user reruns it: an image
that cannot be pulled fails at once with one line naming it; ``--helm`` will
not lay the chart over the kustomize install, and an unknown flag is refused;
a code change rolls aliasd to the new image, no change restarts nothing."""

from __future__ import annotations

import subprocess
import time
from typing import Any

import pytest

from tests.support import ROOT
from tests.support.kind import Kind, helm, helm_env, say

pytestmark = pytest.mark.e2e
MISSING = "aliasd.local/no-such-image:0"


def kind_up(kind: Kind, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["hack/kind-up.sh"], cwd=ROOT, env={**kind.env, **env},
                          capture_output=True, text=True, timeout=900, check=False)


def deployed(kind: Kind) -> tuple[str, set[str], set[str]]:
    """(the Deployment's image-id annotation, its ReplicaSets with pods, the
    image IDs its pods run)."""
    dep: Any = kind.json("-n", "aliasd-system", "get", "deployment", "aliasd")
    pods = kind.aliasd_pods()
    return (dep["metadata"]["annotations"]["aliasd.io/image-id"],
            {o["name"] for p in pods for o in p["metadata"]["ownerReferences"]},
            {c["imageID"] for p in pods for c in p["status"]["containerStatuses"]})


def test_an_image_that_cannot_be_pulled_fails_at_once_naming_it(kind: Kind) -> None:
    kind.wait_settled()
    before = deployed(kind)
    t0 = time.monotonic()
    done = kind_up(kind, DIG_IMAGE=MISSING)
    seconds = time.monotonic() - t0
    try:
        last = done.stderr.strip().splitlines()[-1]
        say(f"e2e: kind-up with an unpullable dig image: exit {done.returncode} after "
            f"{seconds:.0f} s: {last}")
        assert done.returncode == 1, done.stderr
        assert last.startswith(f"kind-up: error: the dig pod: cannot pull image {MISSING} ("), last
        assert "ImagePull" in last or "ErrImage" in last, last
        # Nothing was rebuilt differently: no restart.
        assert "image changed" not in done.stderr
        assert deployed(kind) == before
    finally:
        kind.kubectl("delete", "pod", "kind-up-dig", "--ignore-not-found", "--wait=false")


def test_the_chart_is_not_laid_over_the_kustomize_install_nor_an_unknown_flag_taken(
        kind: Kind) -> None:
    before = deployed(kind)
    done = subprocess.run(["hack/kind-up.sh", "--helm"], cwd=ROOT, env=helm_env(kind),
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines()[-1] == (
        "kind-up: error: aliasd is installed here with kustomize; remove it first "
        "(docs/operations/uninstall.md), then rerun with --helm")
    assert helm(kind, "list", "-A", "-q").stdout == ""
    assert deployed(kind) == before
    bad = subprocess.run(["hack/kind-up.sh", "--kustomise"], cwd=ROOT, env=kind.env,
                         capture_output=True, text=True, timeout=60, check=False)
    assert (bad.returncode, bad.stderr.splitlines()) == (2, [
        "kind-up: error: unknown argument: --kustomise (usage: hack/kind-up.sh [--helm])"])


def test_rerun_after_a_code_change_rolls_aliasd_to_the_new_image(kind: Kind) -> None:
    kind.wait_settled()
    old_id, old_rs, old_images = deployed(kind)
    # A code change: one more module in the package (a new image ID, nothing else).
    marker = ROOT / "aliasd" / "_e2e_rebuild.py"
    marker.write_text(f'"""Written by {__name__}; safe to delete."""\nBUILT = {time.time()!r}\n')
    try:
        done = kind_up(kind)
    finally:
        marker.unlink()
    assert done.returncode == 0, done.stderr[-3000:]
    assert "kind-up: image changed: restarting aliasd" in done.stderr
    kind.wait_settled()
    new_id, new_rs, new_images = deployed(kind)
    say(f"e2e: kind-up after a code change: image {old_id[:19]} -> {new_id[:19]}, "
        f"ReplicaSet {sorted(old_rs)} -> {sorted(new_rs)}")
    assert new_id != old_id
    assert new_rs.isdisjoint(old_rs) and len(new_rs) == 1
    assert new_images.isdisjoint(old_images) and len(new_images) == 1
