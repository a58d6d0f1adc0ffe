"""The ``Store`` facade: one database, its repositories, and its lifecycle.

::

    async with Store.open() as store:           # or: store = await Store.open(url)
        await store.agents.create({"name": "search", "model": "openai:gpt-4o"})

Opening checks the schema revision: a database newer than the code raises
``SchemaTooNewError`` and is not touched. An embedded SQLite database is migrated to the
newest revision automatically; another database (PostgreSQL) must be migrated with
``netsuke db upgrade`` first, else ``SchemaOutdatedError`` (pass ``migrate=True`` to upgrade
on open instead).
"""

from __future__ import annotations

from collections.abc import Generator
from types import TracebackType
from typing import Any

from ._agents import AgentRepository
from ._api_keys import ApiKeyRepository
from ._audit import AuditRepository
from ._conversations import ConversationRepository
from ._engine import Database, Synchronous
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

    async def close(self) -> None:
        """Commit queued turns, then release every connection. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            await self.conversations.close()
            await self.tasks.close()
        finally:
            await self.database.dispose()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


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
