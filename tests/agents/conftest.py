"""Fixtures: a node, a SQLite store in a tmp dir, and the agent system; real model requests are
forbidden (pydantic-ai's ``ALLOW_MODEL_REQUESTS``) except where a test opts in for the fake
OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from pydantic_ai import models

from netsuke import Runtime
from netsuke.agents import Agents
from netsuke.store import Store

# The PostgreSQL fixtures (postgres_server, backend, db_url, migrated_url) live in
# tests/conftest.py, shared with the store and routing tests.


@pytest.fixture(autouse=True)
def _no_model_requests() -> Iterator[None]:
    with models.override_allow_model_requests(False):
        yield


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with Store.open(f"sqlite+aiosqlite:///{tmp_path / 'agents.db'}") as s:
        yield s


@pytest.fixture
async def rt() -> AsyncIterator[Runtime]:
    async with Runtime(shutdown_timeout=5.0) as node:
        yield node


@pytest.fixture
async def agents(rt: Runtime, store: Store) -> Agents:
    return await Agents.start(rt, store)
