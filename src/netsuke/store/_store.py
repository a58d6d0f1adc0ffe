"""The ``Store`` facade: one database, its repositories, and its lifecycle.

::

    async with Store.open() as store:           # or: store = await Store.open(url)
        await store.agents.create({"name": "search", "model": "openai:gpt-4o"})

Opening checks the schema revision: a database newer than the code raises
``SchemaTooNewError`` and is not touched. An embedded SQLite database is migrated to the
newest revision automatically; another database (PostgreSQL) must be migrated with
``netsuke db upgrade`` first, else ``SchemaOutdatedError`` (pass ``migrate=True`` to upgrade
on open instead).

A database that cannot be opened (corrupt, locked past the busy timeout, unreadable) raises
``StoreUnavailableError`` naming the URL (password hidden) and the driver's one-line reason;
``check_writable()`` raises it for a store that opens but cannot be written (a read-only data
directory or file, a read-only PostgreSQL transaction mode).
"""

from __future__ import annotations

import os
from collections.abc import Generator
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from ._agents import AgentRepository
from ._api_keys import ApiKeyRepository
from ._audit import AuditRepository
from ._conversations import ConversationRepository
from ._engine import Database, Synchronous
from ._errors import StoreUnavailableError
from ._executions import ExecutionRepository
from ._factory import AgentFactory
from ._functions import FunctionRepository
from ._migrate import check_revision, current_revision, upgrade
from ._observe import log
from ._tasks import TaskRepository
from ._webhooks import WebhookRepository
from ._workflows import WorkflowRepository

__all__ = ["Store"]


class Store:
    """Repositories over one database. Build with ``Store.open``; close with ``close()`` or
    ``async with``. Safe for many concurrent tasks on one event loop."""

    agents: AgentRepository
    functions: FunctionRepository
    conversations: ConversationRepository
    executions: ExecutionRepository
    audit: AuditRepository
    api_keys: ApiKeyRepository
    tasks: TaskRepository
    workflows: WorkflowRepository
    webhooks: WebhookRepository
    factory: AgentFactory

    def __init__(
        self,
        database: Database,
        *,
        group_commit: bool,
        max_batch: int = 256,
        inline_commit_ms: float = 2.0,
    ) -> None:
        self.database = database
        self.agents = AgentRepository(database)
        self.functions = FunctionRepository(database)
        self.conversations = ConversationRepository(
            database,
            group_commit=group_commit,
            max_batch=max_batch,
            inline_commit_ms=inline_commit_ms,
        )
        self.executions = ExecutionRepository(database)
        self.audit = AuditRepository(database, self.conversations.writer)
        self.api_keys = ApiKeyRepository(database)
        self.tasks = TaskRepository(database)
        self.workflows = WorkflowRepository(database)
        self.webhooks = WebhookRepository(database)
        self.factory = AgentFactory(self.agents, self.functions)
        self._closed = False

    @property
    def url(self) -> str:
        return self.database.url

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.database.dialect

    @staticmethod
    def open(
        url: str | None = None,
        *,
        migrate: bool | None = None,
        group_commit: bool | None = None,
        max_batch: int = 256,
        inline_commit_ms: float = 2.0,
        sqlite_synchronous: Synchronous = "FULL",
        pool_size: int = 10,
        echo: bool = False,
    ) -> _Opening:
        """Open the store at ``url`` (default ``$NETSUKE_DATABASE_URL``, else
        ``sqlite+aiosqlite:///./.netsuke/netsuke.db``). Await it, or use it with ``async with``.

        ``migrate``: upgrade the schema on open; default yes for SQLite, no otherwise.
        ``group_commit``: batch concurrent ``append_turn`` commits into one transaction
        (default yes: each caller still returns only after its own turn is committed).
        ``inline_commit_ms``: on SQLite, a lone turn (the only one in flight) is committed on
        the event loop instead of the writer thread while commits average at most this many
        milliseconds; ``0`` never blocks the loop on a commit.
        ``sqlite_synchronous``: ``FULL`` (default) makes a commit survive power loss;
        ``NORMAL`` survives a crash of the process but not of the machine."""
        return _Opening(
            url,
            migrate=migrate,
            group_commit=group_commit,
            max_batch=max_batch,
            inline_commit_ms=inline_commit_ms,
            sqlite_synchronous=sqlite_synchronous,
            pool_size=pool_size,
            echo=echo,
        )

    async def check_writable(self) -> None:
        """Refuse (``StoreUnavailableError``) a store that cannot be written: on SQLite a
        data directory or file that is not writable, on any backend a write transaction
        that fails. Writes nothing (the probe deletes no row)."""
        db = self.database
        if db.is_sqlite:
            read_only = _read_only_path(make_url(db.url).database or "")
            if read_only is not None:
                raise StoreUnavailableError(_safe_url(db.url), f"{read_only} is read-only")
        try:
            async with db.write() as conn:
                await conn.execute(text("DELETE FROM alembic_version WHERE 1 = 0"))
        except DBAPIError as exc:
            raise unavailable(db.url, exc) from None

    async def close(self) -> None:
        """Commit queued turns, checkpoint SQLite's write-ahead log, then release every
        connection. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            await self.conversations.close()
            await self.tasks.close()
        finally:
            await self.database.dispose(checkpoint=True)

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def _read_only_path(database: str) -> str | None:
    """The data directory or database file when it exists and may not be written."""
    path = Path(database).expanduser()
    for target in (path.parent, path):
        if target.exists() and not os.access(target, os.W_OK):
            return str(target)
    return None


def _safe_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def unavailable(url: str, exc: DBAPIError | OSError) -> StoreUnavailableError:
    """``StoreUnavailableError`` for a driver failure: its first line only (no SQL, no
    parameters, no "background on this error" link)."""
    original = exc.orig if isinstance(exc, DBAPIError) else exc
    reason = (str(original).strip().splitlines() or [type(original).__name__])[0][:300]
    return StoreUnavailableError(_safe_url(url), reason)


class _Opening:
    """``Store.open(...)``: awaitable, and an async context manager that closes the store."""

    def __init__(self, url: str | None, **options: Any) -> None:
        self._url = url
        self._options = options
        self._store: Store | None = None

    async def _open(self) -> Store:
        options = dict(self._options)
        migrate = options.pop("migrate")
        group_commit = options.pop("group_commit")
        max_batch = options.pop("max_batch")
        inline_commit_ms = options.pop("inline_commit_ms")
        database = Database(self._url, **options)
        try:
            return await self._open_on(database, migrate, group_commit, max_batch, inline_commit_ms)
        except DBAPIError as exc:
            raise unavailable(database.url, exc) from None

    async def _open_on(
        self,
        database: Database,
        migrate: bool | None,
        group_commit: bool | None,
        max_batch: int,
        inline_commit_ms: float,
    ) -> Store:
        try:
            revision = await current_revision(database=database)
            check_revision(revision)  # refuses a database newer than the code
            if migrate if migrate is not None else database.is_sqlite:
                revision = await upgrade(database=database)
            check_revision(revision, allow_outdated=False)
            store = Store(
                database,
                group_commit=True if group_commit is None else group_commit,
                max_batch=max_batch,
                inline_commit_ms=inline_commit_ms,
            )
        except BaseException:
            await database.dispose()
            raise
        log.debug("store.opened", dialect=database.dialect, revision=revision)
        return store

    def __await__(self) -> Generator[Any, None, Store]:
        return self._open().__await__()

    async def __aenter__(self) -> Store:
        self._store = await self._open()
        return self._store

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._store is not None:
            await self._store.close()
