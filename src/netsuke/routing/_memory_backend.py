"""An in-memory ``TaskBackend``: the test double that ships with the library.

Same semantics as the SQL backend (leases, redelivery, idempotency, dead letters) but nothing
survives the process. Use it for unit tests, on the virtual clock (pass ``clock=loop.time``),
where it does no I/O so timing is exact.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from netsuke.store import CAPABLE_ONLY, Page, TaskDraft, TaskRecord, TaskStatus, new_id

from ._backend import Settle
from ._errors import TaskNotFoundError, TaskValidationError, check_page

__all__ = ["MemoryTaskBackend"]


class MemoryTaskBackend:
    commits_audit = False  # no store: the caller writes a task's audit rows after it
    settles_behind = 0  # (a settle is a dict write)

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._tasks: dict[str, TaskRecord] = {}
        self._keys: dict[str, str] = {}

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    async def submit(self, draft: TaskDraft) -> tuple[TaskRecord, bool]:
        if draft.idempotency_key is not None and draft.idempotency_key in self._keys:
            return self._tasks[self._keys[draft.idempotency_key]], False
        now = self.now()
        task = TaskRecord(
            id=new_id(),
            kind=draft.kind,
            payload=draft.payload,
            capabilities=list(draft.capabilities),
            priority=draft.priority,
            status="queued",
            attempts=0,
            max_attempts=draft.max_attempts,
            backoff_base=draft.backoff_base,
            backoff_cap=draft.backoff_cap,
            timeout=draft.timeout,
            run_at=draft.run_at,
            lease_owner=None,
            lease_expires_at=None,
            idempotency_key=draft.idempotency_key,
            result=None,
            last_error=None,
            created_at=now,
            updated_at=now,
            finished_at=None,
        )
        self._tasks[task.id] = task
        if draft.idempotency_key is not None:
            self._keys[draft.idempotency_key] = task.id
        return task, True

    def _ready(self, t: TaskRecord, now: datetime) -> bool:
        if t.status == "queued":
            return t.run_at <= now
        return t.status == "leased" and t.lease_expires_at is not None and t.lease_expires_at <= now

    async def take(
        self,
        consumer: str,
        *,
        capabilities: frozenset[str] | None,
        limit: int,
        lease: float,
        kinds: Sequence[str] | None = None,
    ) -> list[TaskRecord]:
        now = self.now()
        ready = [
            t
            for t in self._tasks.values()
            if self._ready(t, now)
            and (kinds is None or t.kind in kinds)
            and (
                capabilities is None
                or (
                    all(c in capabilities for c in t.capabilities)
                    and (bool(t.capabilities) or CAPABLE_ONLY not in capabilities)
                )
            )
        ]
        ready.sort(key=lambda t: (-t.priority, t.run_at, t.created_at))
        out = []
        for t in ready[:limit]:
            leased = t.model_copy(
                update={
                    "status": "leased",
                    "lease_owner": consumer,
                    "lease_expires_at": now + timedelta(seconds=lease),
                    "attempts": t.attempts + 1,
                    "updated_at": now,
                }
            )
            self._tasks[t.id] = leased
            out.append(leased)
        return out

    def _holds(self, consumer: str, task_id: str, now: datetime) -> TaskRecord | None:
        t = self._tasks.get(task_id)
        if (
            t is None
            or t.status != "leased"
            or t.lease_owner != consumer
            or t.lease_expires_at is None
            or t.lease_expires_at <= now
        ):
            return None
        return t

    async def settle(self, change: Settle) -> bool:
        consumer, task_id, values = change
        now = self.now()
        t = self._holds(consumer, task_id, now)
        if t is None:
            return False
        self._tasks[task_id] = t.model_copy(update={**values, "updated_at": now})
        return True

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
        """The settles, then the take; a take failing after them returns no tasks."""
        applied = [await self.settle(change) for change in changes]
        if limit <= 0:
            return applied, []
        try:
            got = await self.take(
                consumer, capabilities=capabilities, limit=limit, lease=lease, kinds=kinds
            )
        except Exception:
            if not changes:
                raise
            got = []
        return applied, got

    async def extend(self, consumer: str, task_ids: Sequence[str], *, lease: float) -> int:
        now = self.now()
        n = 0
        for task_id in task_ids:
            t = self._holds(consumer, task_id, now)
            if t is not None:
                expires = now + timedelta(seconds=lease)
                self._tasks[task_id] = t.model_copy(update={"lease_expires_at": expires})
                n += 1
        return n

    async def get(self, task_id: str) -> TaskRecord:
        try:
            return self._tasks[task_id]
        except KeyError:
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
        check_page(limit, offset)
        rows = [
            t
            for t in sorted(self._tasks.values(), key=lambda t: (t.created_at, t.id))
            if (status is None or t.status == status)
            and (kind is None or t.kind == kind)
            and (id_prefix is None or t.id.startswith(id_prefix))
        ]
        page = rows[offset : offset + limit]
        more = len(rows) > offset + limit
        return Page(items=page, next_cursor=str(offset + limit) if more else None)

    async def count(self, status: TaskStatus | None = None) -> int:
        return sum(1 for t in self._tasks.values() if status is None or t.status == status)

    async def requeue(self, task_id: str) -> TaskRecord:
        t = self._tasks.get(task_id)
        if t is None or t.status != "dead":
            raise TaskNotFoundError(task_id, "dead")
        now = self.now()
        values: dict[str, Any] = {
            "status": "queued",
            "attempts": 0,
            "run_at": now,
            "lease_owner": None,
            "lease_expires_at": None,
            "finished_at": None,
            "updated_at": now,
        }
        self._tasks[task_id] = t = t.model_copy(update=values)
        return t

    async def purge(self, status: TaskStatus, *, ids: Sequence[str] | None = None) -> int:
        if status not in ("dead", "succeeded"):
            raise TaskValidationError("status", "only dead or succeeded tasks can be purged")
        gone = [
            t.id
            for t in self._tasks.values()
            if t.status == status and (ids is None or t.id in ids)
        ]
        for task_id in gone:
            t = self._tasks.pop(task_id)
            if t.idempotency_key is not None:
                self._keys.pop(t.idempotency_key, None)
        return len(gone)

    async def next_due(self) -> datetime | None:
        times = [t.run_at for t in self._tasks.values() if t.status == "queued"]
        times += [
            t.lease_expires_at
            for t in self._tasks.values()
            if t.status == "leased" and t.lease_expires_at is not None
        ]
        return min(times) if times else None

    async def close(self) -> None:
        return None
