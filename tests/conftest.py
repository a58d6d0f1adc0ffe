"""Fixtures shared by the store and routing tests: SQLite and a real PostgreSQL.

The PostgreSQL server is a throwaway cluster (``netsuke.store.testing.TemporaryPostgres``)
started once per session from Debian's binaries; each test gets its own empty database.
Without the binaries the PostgreSQL half is skipped, except under ``CI=true`` where it fails.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from netsuke.observability import configure_logging
from netsuke.store import Store, upgrade
from netsuke.store.testing import PostgresUnavailableError, TemporaryPostgres, find_bindir

# Tests read every level with structlog's capture_logs; the library's default is quieter
# (warnings on stderr, tests/observability/test_logging.py).
configure_logging("debug")

BACKENDS = ["sqlite", "postgres"]
MIGRATED_TEMPLATE = "netsuke_migrated_template"


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
        asyncio.run(upgrade(server.create_database(MIGRATED_TEMPLATE)))
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
        return f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    server: TemporaryPostgres = request.getfixturevalue("postgres_server")
    return server.create_database()


@pytest.fixture
def migrated_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """The URL of a fresh database of the ``backend`` under test, already migrated (on
    PostgreSQL a copy of a template migrated once per session)."""
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'netsuke.db'}"
    server: TemporaryPostgres = request.getfixturevalue("postgres_server")
    return server.create_database(template=MIGRATED_TEMPLATE)


@pytest.fixture
async def store(migrated_url: str) -> AsyncIterator[Store]:
    async with Store.open(migrated_url, migrate=True) as opened:
        yield opened
