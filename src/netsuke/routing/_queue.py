"""The durable task queue: submit, inspect, and the dead-letter queue.

::

    queue = TaskQueue.sql(store, events=rt.events)
    task = await queue.submit("summarise", {"url": u}, capabilities=["summarise"],
                              idempotency_key=f"summarise:{u}", priority=5, delay=0.0)
    async with queue.worker(handle, capabilities={"summarise"}):
        ...

Semantics
---------
* ``submit`` returns once the task is committed (durable across a crash of this process). A
  duplicate ``idempotency_key`` returns the first task, whatever its state; nothing is added.
* Higher ``priority`` first [``0``]; among equals, earliest ``run_at`` (``delay`` seconds from
  now [``0``], or an explicit ``run_at``).
* Retries [``RetryPolicy()``: 5 attempts, base 1 s, cap 60 s, full jitter] and ``timeout``
  [none] are stored with the task; the worker that fails it computes the next ``run_at``.
* Delivery is at-least-once: a worker that dies holding a task loses its lease and the task is
  delivered again once the lease expires. See ``Worker`` for leases, acks and the fallback.
* Events (``rt.events``): ``task.queued`` after the commit of a new task; the worker publishes
  the rest (``task.started``, ``task.succeeded``, ``task.retried``, ``task.failed``,
  ``task.dead_lettered``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import pydantic

from netsuke.events import EventBus, topics
from netsuke.store import (
    MAX_JSON_DEPTH,
    AuditValues,
    Page,
    Store,
    TaskDraft,
    TaskRecord,
    TaskStatus,
    ValidationError,
    check_json,
)

from ._backend import TaskBackend
from ._errors import TaskValidationError
from ._observe import METRICS, log, tracer, tracing
from ._retry import RetryPolicy
from ._sql_backend import SqlTaskBackend

if TYPE_CHECKING:
    from ._worker import Fallback, Handler, Worker

__all__ = ["TaskQueue"]


class TaskQueue:
    """Producer-side API and DLQ over a ``TaskBackend``. Options: ``events`` [none]: the bus
    to publish on; ``retry`` [``RetryPolicy()``]: the default policy of submitted tasks."""

    def __init__(
        self,
        backend: TaskBackend,
        *,
        events: EventBus | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.backend = backend
        self.events = events
        self.retry = retry or RetryPolicy()
        self._wakeups: set[asyncio.Event] = set()  # one per running worker

    @classmethod
    def sql(
        cls,
        store: Store,
        *,
        events: EventBus | None = None,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.time,
        max_batch: int = 256,
    ) -> TaskQueue:
        """A queue on the store's ``tasks`` table (the embedded backend)."""
        return cls(
            SqlTaskBackend(store, clock=clock, max_batch=max_batch), events=events, retry=retry
        )

    def now(self) -> datetime:
        return self.backend.now()

    def _notify(self) -> None:
        """Wake this queue's workers (a task was queued)."""
        for wake in self._wakeups:
            wake.set()

    async def submit(
        self,
        kind: str,
        payload: Mapping[str, Any] | None = None,
        *,
        capabilities: Iterable[str] = (),
        priority: int = 0,
        delay: float = 0.0,
        run_at: datetime | None = None,
        idempotency_key: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        audit: Callable[[str], Sequence[AuditValues]] | None = None,
    ) -> TaskRecord:
        """Queue a task; returns it once committed. ``TaskValidationError`` for bad input
        (nothing is queued). ``audit(task_id)``: audit rows committed in the task's own
        transaction when it is created, on a backend that ``commits_audit`` (the SQL store;
        none for a duplicate). Other backends ignore it: their caller writes the rows."""
        [draft] = self._drafts(
            kind, [payload], [idempotency_key], capabilities, priority, delay, run_at, retry,
            timeout,
        )  # fmt: skip
        if audit is not None:
            draft.with_audit(audit)
        if tracing():
            with tracer.start_as_current_span(
                "routing.task.submit", attributes={"task.kind": kind}
            ):
                task, created = await self.backend.submit(draft)
        else:
            task, created = await self.backend.submit(draft)
        self._submitted(task, created)
        if created:
            self._notify()
        return task

    async def submit_many(
        self,
        kind: str,
        payloads: Iterable[Mapping[str, Any] | None],
        *,
        capabilities: Iterable[str] = (),
        priority: int = 0,
        delay: float = 0.0,
        run_at: datetime | None = None,
        idempotency_keys: Sequence[str | None] | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
    ) -> list[TaskRecord]:
        """Queue one task of ``kind`` per payload, with the same options (``idempotency_keys``:
        one per payload, or none); returns them in order once all are committed. A backend
        with ``submit_many`` (Redis, JetStream) sends them together: one round trip and one
        fsync for the lot; others submit them concurrently (their commits are shared). Bad
        input: ``TaskValidationError`` and nothing is queued. Not atomic: on a broker error
        some may be queued (a retry with the same idempotency keys finds them)."""
        body = list(payloads)
        keys = list(idempotency_keys) if idempotency_keys is not None else [None] * len(body)
        if len(keys) != len(body):
            raise TaskValidationError("idempotency_keys", "one per payload")
        drafts = self._drafts(
            kind, body, keys, capabilities, priority, delay, run_at, retry, timeout
        )
        if not drafts:
            return []
        many = getattr(self.backend, "submit_many", None)
        with (
            tracer.start_as_current_span(
                "routing.task.submit_many", attributes={"task.kind": kind, "tasks": len(drafts)}
            )
            if tracing()
            else contextlib.nullcontext()
        ):
            if many is not None:
                got: list[tuple[TaskRecord, bool]] = await many(drafts)
            else:
                got = list(await asyncio.gather(*(self.backend.submit(d) for d in drafts)))
        for task, created in got:
            self._submitted(task, created)
        self._notify()
        return [task for task, _ in got]

    @staticmethod
    def _caps(capabilities: Iterable[str]) -> tuple[str, ...]:
        if isinstance(capabilities, str):
            raise TaskValidationError("capabilities", "a list of names, not one string")
        return tuple(capabilities)

    def _when(self, delay: float, run_at: datetime | None) -> datetime:
        if delay < 0:
            raise TaskValidationError("delay", "must be >= 0 seconds")
        if run_at is not None:
            return run_at
        return self.now() + timedelta(seconds=delay) if delay else self.now()

    def _drafts(
        self,
        kind: str,
        payloads: Sequence[Mapping[str, Any] | None],
        keys: Sequence[str | None],
        capabilities: Iterable[str],
        priority: int,
        delay: float,
        run_at: datetime | None,
        retry: RetryPolicy | None,
        timeout: float | None,
    ) -> list[TaskDraft]:
        """The checked drafts of ``submit`` and ``submit_many``: one per payload (with its
        idempotency key), the other options shared; ``TaskValidationError`` for the first bad
        value (then nothing is queued)."""
        caps = self._caps(capabilities)
        when = self._when(delay, run_at)
        policy = retry or self.retry
        draft = self._draft
        return [
            draft(kind, p, caps, priority, when, k, policy, timeout)
            for p, k in zip(payloads, keys, strict=True)
        ]

    @staticmethod
    def _draft(
        kind: str,
        payload: Mapping[str, Any] | None,
        caps: tuple[str, ...],
        priority: int,
        when: datetime,
        idempotency_key: str | None,
        policy: RetryPolicy,
        timeout: float | None,
    ) -> TaskDraft:
        """A checked draft (``TaskValidationError`` naming the field otherwise), its payload
        encoded once."""
        body = dict(payload or {})
        try:
            text = json.dumps(body)
        except (TypeError, ValueError, RecursionError) as exc:
            _check_payload(body)  # (its problem is reported first, as it always was)
            raise TaskValidationError("payload", f"not JSON-serialisable: {exc}") from None
        # the walk of check_json only when the text could hide its problems: json.dumps
        # escapes every surrogate as \udxxx (so none without that text), and nesting is at
        # most the count of brackets (those inside strings only add to it)
        if "\\ud" in text or text.count("{") + text.count("[") > MAX_JSON_DEPTH:
            _check_payload(body)
        draft = TaskDraft.plain(
            kind=kind,
            payload=body,
            payload_json=text,
            capabilities=caps,
            priority=priority,
            max_attempts=policy.max_attempts,
            backoff_base=policy.base,
            backoff_cap=policy.cap,
            timeout=timeout,
            run_at=when,
            idempotency_key=idempotency_key,
        )
        if draft is not None:
            return draft
        try:  # not plainly valid: pydantic decides, and names the field
            draft = TaskDraft(
                kind=kind,
                payload=body,
                capabilities=caps,
                priority=priority,
                max_attempts=policy.max_attempts,
                backoff_base=policy.base,
                backoff_cap=policy.cap,
                timeout=timeout,
                run_at=when,
                idempotency_key=idempotency_key,
            )
        except pydantic.ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or "task"
            raise TaskValidationError(field, err["msg"]) from None
        return draft.with_payload_json(text)  # the store writes it as is: encoded once

    def _submitted(self, task: TaskRecord, created: bool) -> None:
        """Count a submit, and publish ``task.queued`` for a new task."""
        if not created:
            METRICS.tasks["duplicate"] += 1
            log.debug("task.duplicate", task=task.id, idempotency_key=task.idempotency_key)
            return
        METRICS.tasks["submitted"] += 1
        if self.events is not None:
            self.events.publish(
                topics.TASK_QUEUED,
                task=task.id,
                kind=task.kind,
                capabilities=task.capabilities,
                priority=task.priority,
                run_at=task.run_at.isoformat(),
            )

    def worker(
        self,
        handler: Handler,
        *,
        name: str | None = None,
        capabilities: Iterable[str] | None = None,
        kinds: Sequence[str] | None = None,
        concurrency: int = 1,
        batch: int | None = None,
        lease: float = 30.0,
        poll_interval: float = 1.0,
        fallback: Fallback | None = None,
        rng: Any = None,
    ) -> Worker:
        """A ``Worker`` consuming this queue (see ``Worker`` for the options)."""
        from ._worker import Worker

        return Worker(
            self,
            handler,
            name=name,
            capabilities=capabilities,
            kinds=kinds,
            concurrency=concurrency,
            batch=batch,
            lease=lease,
            poll_interval=poll_interval,
            fallback=fallback,
            rng=rng,
        )

    # ------------------------------------------------------------- inspection

    async def get(self, task_id: str) -> TaskRecord:
        """The task ``task_id``; ``TaskNotFoundError`` when there is none."""
        return await self.backend.get(task_id)

    async def list(
        self,
        *,
        status: TaskStatus | None = None,
        kind: str | None = None,
        limit: int = 50,
        offset: int = 0,
        id_prefix: str | None = None,
    ) -> Page[TaskRecord]:
        """Tasks oldest first, by status, kind and the start of their id (``id_prefix``)."""
        return await self.backend.list(
            status=status, kind=kind, limit=limit, offset=offset, id_prefix=id_prefix
        )

    async def count(self, status: TaskStatus | None = None) -> int:
        return await self.backend.count(status)

    # -------------------------------------------------------- dead letters

    async def dead_letters(
        self, *, limit: int = 50, offset: int = 0, id_prefix: str | None = None
    ) -> Page[TaskRecord]:
        """The dead-letter queue, oldest first: tasks that failed their last attempt (and whose
        fallback, if any, failed too). Each keeps its ``last_error`` and ``attempts``."""
        return await self.backend.list(
            status="dead", limit=limit, offset=offset, id_prefix=id_prefix
        )

    async def requeue(self, task_id: str) -> TaskRecord:
        """Move a dead task back to the queue, ready now, attempts reset.
        ``TaskNotFoundError`` when ``task_id`` is not in the dead-letter queue."""
        task = await self.backend.requeue(task_id)
        METRICS.tasks["requeued"] += 1
        log.info("task.requeued", task=task_id)
        if self.events is not None:
            self.events.publish(
                topics.TASK_QUEUED,
                task=task.id,
                kind=task.kind,
                capabilities=task.capabilities,
                priority=task.priority,
                run_at=task.run_at.isoformat(),
            )
        self._notify()
        return task

    async def purge_dead(self, ids: Sequence[str] | None = None) -> int:
        """Delete dead tasks (all, or only ``ids``); returns how many were deleted."""
        n = await self.backend.purge("dead", ids=ids)
        METRICS.tasks["purged"] += n
        log.info("task.purged", count=n)
        return n

    async def close(self) -> None:
        """Flush pending commits of the backend."""
        await self.backend.close()


def _check_payload(body: dict[str, Any]) -> None:
    """``TaskValidationError`` for a lone surrogate or nesting too deep in ``body``."""
    try:
        check_json(body, "payload")
    except ValidationError as exc:
        raise TaskValidationError(exc.field, exc.reason) from None
