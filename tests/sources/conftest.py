"""aliasd watching the session's API server, for the source tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from aliasd_dev import LocalCluster
from tests.helpers import AliasdProcess, run_aliasd


@pytest.fixture
def aliasd(cluster: LocalCluster, tmp_path: Path) -> Iterator[AliasdProcess]:
    with run_aliasd(["--kubeconfig", str(cluster.kubeconfig), "--zone", "internal"],
                    tmp=tmp_path) as p:
        yield p
