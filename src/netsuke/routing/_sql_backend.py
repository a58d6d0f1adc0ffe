"""The embedded task backend: the SQL store (SQLite file or PostgreSQL), durable across restarts.

Submits and settles from concurrent callers share transactions (group commit, the store's
``GroupCommitter``): each caller still returns only after its own change is committed, and an
idle queue adds no delay. On PostgreSQL, ``take`` uses ``FOR UPDATE SKIP LOCKED`` so many nodes
can consume one table; on SQLite writers queue on the file lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from netsuke.store import (
    GroupCommitter,
    NotFoundError,
    Page,
    Store,
    TaskDraft,
    TaskRecord,
    TaskStatus,
    ValidationError,
)

from ._backend import Settle
from ._errors import TaskNotFoundError, TaskValidationError
from ._observe import log

__all__ = ["SqlTaskBackend"]


class SqlTaskBackend:
    """``TaskBackend`` over ``store.tasks``. ``clock`` gives epoch seconds [``time.time``]:
    pass a virtual one in tests. Does not own the store: ``close`` flushes, not closes it."""

    commits_audit = True
    settles_behind = 0  # acks and the next leases share one transaction

    def __init__(
        self, store: Store, *, clock: Callable[[], float] = time.time, max_batch: int = 256
    ) -> None:
        self.store = store
        self.repo = store.tasks
        self.clock = clock
        self._submits: GroupCommitter[TaskDraft, tuple[TaskRecord, bool]] = GroupCommitter(
            self._insert, max_batch=max_batch
        )
        self._settles: GroupCommitter[Settle, bool] = GroupCommitter(
            self._settle, max_batch=max_batch
        )
        self.settle_batches = 0
        """Commits that carried settles made with ``settle_and_take`` (the worker's acks)."""
        # SQLite has one writer at a time; a writer that finds the file locked sleeps in the
        # busy handler (1, 2, 5, 10 ms ...). The hot path (inserts without idempotency keys,
        # take, settle) runs on the store's one task-writer thread, which queues those
        # transactions itself: no lock, so the next one is encoded while one commits. The
        # other writes (through the pool's connections) queue here instead.
        self._sqlite = store.dialect == "sqlite"
        self._write_lock: asyncio.Lock | contextlib.nullcontext[None] = (
            asyncio.Lock() if self._sqlite else contextlib.nullcontext()
        )

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    async def _insert(
        self, drafts: Sequence[TaskDraft]
    ) -> Sequence[tuple[TaskRecord, bool] | BaseException]:
        if self._sqlite and all(d.idempotency_key is None for d in drafts):
            return await self.repo.insert(drafts, now=self.now())
        async with self._write_lock:
            return await self.repo.insert(drafts, now=self.now())

    async def _settle(self, changes: Sequence[Settle]) -> Sequence[bool | BaseException]:
        if self._sqlite:
            return await self.repo.settle(changes, now=self.now())
        async with self._write_lock:
            return await self.repo.settle(changes, now=self.now())

    async def submit(self, draft: TaskDraft) -> tuple[TaskRecord, bool]:
        return await self._submits.submit(draft)

    async def take(
        self,
        consumer: str,
        *,
        capabilities: frozenset[str] | None,
        limit: int,
        lease: float,
        kinds: Sequence[str] | None = None,
    ) -> list[TaskRecord]:
        return await self.repo.take(
            consumer,
            capabilities=capabilities,
            limit=limit,
            lease=lease,
            now=self.now(),
            kinds=kinds,
        )

    async def settle(self, change: Settle) -> bool:
        self.repo.check_values(change[2])  # refused alone, before it joins a shared commit
        return await self._settles.submit(change)

    async def settle_and_take(
        self,
        changes: Sequence[Settle],
        consumer: str,
        *,
        capabilities: frozenset[str] | None,
        limit: int,
        lease: float,
        kinds: Sequence[str] | None = None,
    ) -> tuple[list[bool], list[TaskRecord]]:
        """On SQLite one transaction. On PostgreSQL the settles commit first; a take failing
        after them is logged and returns no tasks (the settles stand; the worker polls)."""
        if changes:  # (the repository refuses unknown columns before writing anything)
            self.settle_batches += 1
        if not self._sqlite:
            applied = await self.repo.settle(changes, now=self.now())
            if limit <= 0:
                return applied, []
            try:
                got = await self.take(
                    consumer, capabilities=capabilities, limit=limit, lease=lease, kinds=kinds
                )
            except Exception as exc:
                log.warning("worker.take_failed", worker=consumer, error=repr(exc))
                got = []
            return applied, got
        return await self.repo.settle_and_take(  # queued by the task-writer thread
            changes,
            consumer,
            capabilities=capabilities,
            limit=limit,
            lease=lease,
            now=self.now(),
            kinds=kinds,
        )

    async def extend(self, consumer: str, task_ids: Sequence[str], *, lease: float) -> int:
        async with self._write_lock:
            return await self.repo.extend(consumer, task_ids, lease=lease, now=self.now())

    async def get(self, task_id: str) -> TaskRecord:
        try:
            return await self.repo.get(task_id)
        except NotFoundError:
            raise TaskNotFoundError(task_id) from None

    async def list(
        self,
        *,
        status: TaskStatus | None = None,
        kind: str | None = None,
        limit: int = 50,
        offset: int = 0,
        id_prefix: str | None = None,
    ) -> Page[TaskRecord]:
        try:
            return await self.repo.list(
                status=status, kind=kind, limit=limit, offset=offset, id_prefix=id_prefix
            )
        except ValidationError as exc:
            raise TaskValidationError(exc.field, exc.reason) from None

    async def count(self, status: TaskStatus | None = None) -> int:
        return await self.repo.count(status)

    async def requeue(self, task_id: str) -> TaskRecord:
        try:
            return await self.repo.requeue(task_id, now=self.now())
        except NotFoundError:
            raise TaskNotFoundError(task_id, "dead") from None

    async def purge(self, status: TaskStatus, *, ids: Sequence[str] | None = None) -> int:
        try:
            return await self.repo.purge(status, ids=ids)
        except ValidationError as exc:
            raise TaskValidationError(exc.field, exc.reason) from None

    async def next_due(self) -> datetime | None:
        return await self.repo.next_due(now=self.now())

    async def close(self) -> None:
        await self._submits.close()
        await self._settles.close()
