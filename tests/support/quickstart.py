"""The README's kind quickstart as the e2e suite runs it, as written: the
``kustomize`` block sets up the suite's cluster (tests/e2e/conftest.py), the
``helm`` block installs the chart after the kustomize install is gone
(tests/e2e/test_helm.py), and the ``then`` block is asked after each. A block
is the ``sh`` code block after a ``<!-- quickstart: NAME -->`` line."""

from __future__ import annotations

import re
import subprocess

from tests.support import ROOT

README = ROOT / "README.md"


def block(name: str) -> str:
    """The README's ``quickstart: NAME`` block."""
    found = re.findall(rf"<!-- quickstart: {name} -->\n```sh\n(.*?)\n```", README.read_text(),
                       re.S)
    assert len(found) == 1, f"README.md: {len(found)} quickstart: {name} blocks"
    return str(found[0])


def command(name: str) -> list[str]:
    """The block as a command line for bash, stopping at the first failure."""
    return ["bash", "-euo", "pipefail", "-c", block(name)]


def run(name: str, *, env: dict[str, str], timeout: float = 900
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command(name), cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def dig_image() -> str:
    """The image the ``then`` block's pod runs."""
    image = re.search(r"--image=(\S+)", block("then"))
    assert image, block("then")
    return image.group(1)


def listed(stdout: str, name: str) -> list[list[str]]:
    """The rows of ``aliasd list`` output (whitespace-separated fields) for ``name``."""
    return [fields for line in stdout.splitlines() if (fields := line.split())
            and fields[0] == name]


def ask(env: dict[str, str]) -> list[str]:
    """Run the ``then`` block (its dig pod's image is the kind build's
    stand-in, tagged with the README's name and loaded into the nodes):
    the lines it printed."""
    image = dig_image()
    for cmd in (["docker", "tag", env["DIG_IMAGE"], image],
                ["kind", "load", "docker-image", image, "--name", env["KIND_CLUSTER_NAME"]]):
        subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=300)
    done = run("then", env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()
