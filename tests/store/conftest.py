"""Fixtures: every store test runs against SQLite and a real PostgreSQL.

The PostgreSQL server is a throwaway cluster (``netsuke.store.testing.TemporaryPostgres``)
started once per session from Debian's binaries; each test gets its own empty database.
Without the binaries the PostgreSQL half is skipped, except under ``CI=true`` where it fails.
"""

from __future__ import annotations

import gc
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from netsuke.store import Store
from netsuke.store.testing import PostgresUnavailableError, TemporaryPostgres, find_bindir

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[TemporaryPostgres]:
    if find_bindir() is None:
        reason = (
            "PostgreSQL binaries not found under /usr/lib/postgresql/*/bin; "
            "run `make install` as root (it apt-get installs postgresql) or set NETSUKE_PG_BINDIR"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true requires PostgreSQL: {reason}")
        pytest.skip(reason)
    try:
        server = TemporaryPostgres().start()
    except PostgresUnavailableError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true requires PostgreSQL: {exc}")
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """The URL of a fresh, empty database of the ``backend`` under test."""
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'netsuke.db'}"
    server: TemporaryPostgres = request.getfixturevalue("postgres_server")
    return server.create_database()


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    async with Store.open(db_url, migrate=True) as opened:
        yield opened


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    """Collect after each test so a leaked connection is reported by the test that leaked it."""
    yield
    gc.collect()
