"""Engines and transactions: SQLite (embedded default) and PostgreSQL, chosen by URL.

SQLite connections get, on connect: ``journal_mode=WAL`` (readers never block the writer),
``busy_timeout`` (a writer waits for the lock instead of failing), ``foreign_keys=ON`` and
``synchronous`` (``FULL`` by default: a commit is on disk, power loss included, before it
returns). Transactions are begun explicitly: ``BEGIN IMMEDIATE`` for writes, so two writers
queue on the lock instead of deadlocking on a read-to-write upgrade, and ``BEGIN`` for reads.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from ._errors import StoreClosedError, ValidationError
from ._observe import log

__all__ = ["DEFAULT_URL", "ENV_URL", "Database", "resolve_url"]

DEFAULT_URL = "sqlite+aiosqlite:///./.netsuke/netsuke.db"
ENV_URL = "NETSUKE_DATABASE_URL"
Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]
_WRITE = "netsuke_write"


def resolve_url(url: str | None = None) -> str:
    """The database URL to use: ``url``, else ``$NETSUKE_DATABASE_URL``, else the SQLite default.

    ``sqlite://`` and ``postgresql://`` are given their async drivers (aiosqlite, asyncpg);
    any other scheme is refused with ``ValidationError(field="url")``."""
    raw = url or os.environ.get(ENV_URL) or DEFAULT_URL
    try:
        parsed = make_url(raw)
    except ArgumentError as exc:
        raise ValidationError("url", f"not a database URL: {exc}") from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "sqlite" and driver in ("", "pysqlite", "aiosqlite"):
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    elif backend in ("postgresql", "postgres") and driver in ("", "psycopg", "psycopg2", "asyncpg"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    else:
        raise ValidationError(
            "url", f"unsupported database {parsed.drivername!r}: use sqlite:// or postgresql://"
        )
    return parsed.render_as_string(hide_password=False)


class Database:
    """One engine plus the two kinds of transaction the repositories use.

    ``read()`` and ``write()`` yield an ``AsyncConnection`` inside a transaction that commits
    when the block exits normally and rolls back on an exception. ``write()`` returns only
    after the commit, so whatever was written in it is durable (see ``docs/store.md``)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        sqlite_synchronous: Synchronous = "FULL",
        busy_timeout_ms: int = 10_000,
        pool_size: int = 10,
        echo: bool = False,
    ) -> None:
        self.url = resolve_url(url)
        parsed = make_url(self.url)
        self.dialect = parsed.get_backend_name()
        self.sqlite_synchronous = sqlite_synchronous
        self.busy_timeout_ms = busy_timeout_ms
        # hide_parameters: a driver error never carries row values (secrets, payloads) into logs
        kwargs: dict[str, Any] = {"echo": echo, "hide_parameters": True}
        if self.dialect == "sqlite":
            database = parsed.database or ""
            if not database or database == ":memory:" or database.startswith("file:"):
                raise ValidationError("url", "the store needs a SQLite file path")
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        else:
            kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=False)
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        if self.dialect == "sqlite":
            _install_sqlite_hooks(self.engine, sqlite_synchronous, busy_timeout_ms)
        self._write_engine = self.engine.execution_options(**{_WRITE: True})
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self._tracked(self.engine.begin) as conn:
            yield conn

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        async with self._tracked(self._write_engine.begin) as conn:
            yield conn

    @asynccontextmanager
    async def driver(self) -> AsyncIterator[Any]:
        """The driver's own connection (asyncpg's), checked out of the pool, no transaction
        begun. For hot paths that issue fixed SQL; the caller manages the transaction."""
        async with self._tracked(self.engine.connect) as conn:
            raw = await conn.get_raw_connection()
            yield raw.driver_connection

    @asynccontextmanager
    async def _tracked(
        self, opener: Callable[[], AbstractAsyncContextManager[AsyncConnection]]
    ) -> AsyncIterator[AsyncConnection]:
        """Count the connection as in flight so ``dispose`` can wait for it."""
        if self._closing:
            raise StoreClosedError("the store is closed")
        self._active += 1
        self._idle.clear()
        try:
            async with opener() as conn:
                yield conn
        finally:
            self._active -= 1
            if self._active == 0:
                self._idle.set()

    async def dispose(self, *, checkpoint: bool = False) -> None:
        """Refuse new transactions, wait for those in flight to end, close every connection.
        With ``checkpoint`` (``Store.close`` passes it), SQLite's write-ahead log is first
        copied into the database file (``wal_checkpoint(TRUNCATE)``), so the ``.db`` file
        alone holds every commit."""
        self._closing = True
        await self._idle.wait()
        if checkpoint and self.is_sqlite:
            try:
                async with self.engine.connect() as conn:
                    await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            except Exception as exc:  # a read-only or broken file: closing still goes on
                log.warning("store.checkpoint_failed", error=type(exc).__name__)
        await self.engine.dispose()


def _install_sqlite_hooks(engine: AsyncEngine, synchronous: Synchronous, busy_ms: int) -> None:
    if synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
        raise ValidationError("sqlite_synchronous", f"unknown mode {synchronous!r}")

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" hook below emit BEGIN itself (pysqlite's own is lazy).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(_WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
