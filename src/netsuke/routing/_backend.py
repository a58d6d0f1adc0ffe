"""The task queue's backend interface, and the embedded SQL implementation's contract.

A backend stores tasks durably and hands them out under **leases**:

* ``submit`` returns only once the task is durable (committed; for JetStream: the publish
  acknowledged). A duplicate idempotency key returns the first task, ``created=False``.
* ``take`` leases ready tasks to a consumer until ``now + lease``. A task whose lease expires
  without a settle is **redelivered** to the next ``take`` (at-least-once: a handler may run more
  than once for one task, so handlers should be idempotent). Each delivery counts an attempt.
* ``settle`` acks (``succeeded``), reschedules (``queued`` with a later ``run_at``: a retry,
  JetStream's ``nak(delay)``) or dead-letters (``dead``, JetStream's ``term`` plus a DLQ stream)
  a task the consumer still holds; a consumer that lost its lease gets ``False`` and nothing
  changes. ``extend`` renews leases of tasks still running (JetStream's ``in_progress``).
* ``settle_and_take`` settles a consumer's finished tasks, then takes its next ones: where the
  backend can (SQLite) both are one transaction, one commit per batch; otherwise the settles are
  committed first. It returns only once the settles are durable (and the new leases held).
* The dead-letter queue is ``list(status="dead")``, ``get``, ``requeue`` and ``purge``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from netsuke.store import Page, TaskDraft, TaskRecord, TaskStatus

__all__ = ["Settle", "TaskBackend"]

Settle = tuple[str, str, dict[str, Any]]
"""``(consumer, task_id, values)``: the columns to set on a task the consumer holds."""


class TaskBackend(Protocol):
    commits_audit: bool
    """Whether ``submit`` commits a draft's audit rows (``TaskDraft.with_audit``) in the task's
    own transaction (the SQL store); a broker cannot, and its caller writes them after."""
    settles_behind: int
    """How many batches of acks a worker may have committing in the background while it takes
    more tasks (``settle_and_take`` with ``limit=0``, concurrently with ``take``); ``0``: the
    acks ride with the next take, in one ``settle_and_take``. A backend whose settle waits on
    its own durable writes (JetStream: fsynced record writes) gains by not holding the take
    back; one that commits acks and leases together (SQL, one transaction; Redis, one round
    trip) keeps ``0``."""

    async def submit(self, draft: TaskDraft) -> tuple[TaskRecord, bool]: ...

    async def take(
        self,
        consumer: str,
        *,
        capabilities: frozenset[str] | None,
        limit: int,
        lease: float,
        kinds: Sequence[str] | None = None,
    ) -> list[TaskRecord]: ...

    async def settle(self, change: Settle) -> bool: ...

    async def settle_and_take(
        self,
        changes: Sequence[Settle],
        consumer: str,
        *,
        capabilities: frozenset[str] | None,
        limit: int,
        lease: float,
        kinds: Sequence[str] | None = None,
    ) -> tuple[list[bool], list[TaskRecord]]: ...

    async def extend(self, consumer: str, task_ids: Sequence[str], *, lease: float) -> int: ...

    async def get(self, task_id: str) -> TaskRecord: ...

    async def list(
        self,
        *,
        status: TaskStatus | None = None,
        kind: str | None = None,
        limit: int = 50,
        offset: int = 0,
        id_prefix: str | None = None,
    ) -> Page[TaskRecord]: ...

    async def count(self, status: TaskStatus | None = None) -> int: ...

    async def requeue(self, task_id: str) -> TaskRecord: ...

    async def purge(self, status: TaskStatus, *, ids: Sequence[str] | None = None) -> int: ...

    async def next_due(self) -> datetime | None: ...

    def now(self) -> datetime: ...

    async def close(self) -> None: ...
