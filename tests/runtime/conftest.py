"""The runtime tests' fixtures; their fakes are in tests/support/runtime.py."""

from __future__ import annotations

import pytest

from tests.support.runtime import Clock


@pytest.fixture
def clock() -> Clock:
    return Clock()


