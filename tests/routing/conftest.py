"""Routing tests on SQLite and a real PostgreSQL (fixtures in ``tests/conftest.py``)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    """Collect after each test so a leaked connection is reported by the test that leaked it."""
    yield
    gc.collect()
