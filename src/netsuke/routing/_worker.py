"""Workers: take tasks under a lease, run the handler, ack; retry, fall back, dead-letter.

A worker offers ``capabilities`` (``None``: takes every task) and takes only tasks whose
capabilities it offers, all of them; ``kinds`` narrows it to some task kinds. It runs up to
``concurrency`` [``1``] handlers at once and takes up to ``batch`` [``concurrency``] tasks per
round trip, under a ``lease`` [``30.0`` s] renewed every ``lease / 3`` while a handler runs.

For each task, in order:

1. ``task.started`` is published; ``handler(task)`` runs (sync or async), within
   ``task.timeout`` when set (else ``TaskTimeoutError`` is the attempt's error).
2. Success: the result (JSON) is stored and the task acked (``succeeded``), then
   ``task.succeeded``. The ack is committed before the next event for it.
3. Failure with attempts left: the task goes back to the queue at ``now + delay`` where
   ``delay`` is the full-jitter backoff of the task's policy (``rng`` [``random.Random()``]
   draws it), then ``task.retried`` (with ``delay`` and ``error``).
4. Failure of the last attempt: ``task.failed``; then ``fallback(task, error)`` if given: its
   result acks the task (``succeeded``, ``last_error`` kept). Without a fallback, or when it
   fails too, the task is dead-lettered (``dead``), then ``task.dead_lettered``.

A worker that dies mid-task never acks: the lease expires and another take delivers the task
again (at-least-once). A redelivered task whose attempts are used up is dead-lettered without
running. A settle by a worker that lost its lease (it ran past it) changes nothing and is
counted as ``lease_lost``.

A failing ``take`` (the database unreachable) is logged and retried every ``poll_interval``;
the worker keeps going.

``stop()`` stops taking, waits up to ``grace`` [``10.0`` s] for running handlers, then cancels
them (their tasks are redelivered after the lease).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import random
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from netsuke.events import topics
from netsuke.store import TaskRecord

from ._errors import TaskTimeoutError
from ._observe import METRICS, log, tracer
from ._retry import Uniform, backoff_bound

if TYPE_CHECKING:
    from ._queue import TaskQueue

__all__ = ["Fallback", "Handler", "Worker"]

Handler = Callable[[TaskRecord], Awaitable[Any] | Any]
Fallback = Callable[[TaskRecord, BaseException], Awaitable[Any] | Any]


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text[:2000]


class Worker:
    """Consumes a ``TaskQueue``. See the module documentation. Use ``async with`` or
    ``start()``/``stop()``; ``load`` is the number of handlers running now."""

    def __init__(
        self,
        queue: TaskQueue,
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
        rng: Uniform | None = None,
        grace: float = 10.0,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if lease <= 0 or poll_interval <= 0:
            raise ValueError("lease and poll_interval must be > 0 seconds")
        self.queue = queue
        self.backend = queue.backend
        self.handler = handler
        self.name = name or f"worker-{uuid.uuid4().hex[:12]}"
        self.capabilities = None if capabilities is None else frozenset(capabilities)
        self.kinds = None if kinds is None else list(kinds)
        self.concurrency = concurrency
        self.batch = batch or concurrency
        self.lease = lease
        self.poll_interval = poll_interval
        self.fallback = fallback
        self.rng: Uniform = rng or random.Random()
        self.grace = grace
        self._running: dict[str, asyncio.Task[None]] = {}
        self._slot = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._beat_task: asyncio.Task[None] | None = None
        self._stopping = False
        self.processed = 0
        self.take_errors = 0

    @property
    def load(self) -> int:
        """Handlers running now (what capability routing reads as this worker's load)."""
        return len(self._running)

    async def start(self) -> Worker:
        if self._loop_task is None:
            self._stopping = False
            self._loop_task = asyncio.create_task(self._loop(), name=f"netsuke-{self.name}")
            self._beat_task = asyncio.create_task(self._heartbeat(), name=f"{self.name}-beat")
            log.info("worker.started", worker=self.name, capabilities=self._caps_list())
        return self

    async def stop(self) -> None:
        """Stop taking tasks; let running handlers finish within ``grace``, then cancel them."""
        self._stopping = True
        self.queue._wakeup.set()
        self._slot.set()
        for t in (self._loop_task,):
            if t is not None:
                t.cancel()
                await asyncio.gather(t, return_exceptions=True)
        running = list(self._running.values())
        if running:
            _, pending = await asyncio.wait(running, timeout=self.grace)
            for t in pending:
                t.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        if self._beat_task is not None:
            self._beat_task.cancel()
            await asyncio.gather(self._beat_task, return_exceptions=True)
        self._loop_task = self._beat_task = None
        log.info("worker.stopped", worker=self.name, processed=self.processed)

    async def __aenter__(self) -> Worker:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _caps_list(self) -> list[str] | None:
        return None if self.capabilities is None else sorted(self.capabilities)

    # --------------------------------------------------------------- the loop

    async def _loop(self) -> None:
        wakeup = self.queue._wakeup
        while not self._stopping:
            free = self.concurrency - len(self._running)
            if free <= 0:
                self._slot.clear()
                await self._slot.wait()
                continue
            wakeup.clear()
            try:
                tasks = await self.backend.take(
                    self.name,
                    capabilities=self.capabilities,
                    limit=min(free, self.batch),
                    lease=self.lease,
                    kinds=self.kinds,
                )
            except Exception as exc:  # the database is unreachable: keep trying, slowly
                self.take_errors += 1
                log.warning("worker.take_failed", worker=self.name, error=repr(exc))
                await asyncio.sleep(self.poll_interval)
                continue
            if tasks:
                for task in tasks:
                    self._running[task.id] = asyncio.create_task(self._handle(task))
                continue
            timeout = self.poll_interval
            try:
                due = await self.backend.next_due()
            except Exception as exc:
                log.warning("worker.poll_failed", worker=self.name, error=repr(exc))
                due = None
            if due is not None:
                gap = (due - self.backend.now()).total_seconds()
                if gap > 0:  # (gap <= 0: due, but not for us: wait for the poll)
                    timeout = min(timeout, gap)
            try:
                async with asyncio.timeout(timeout):
                    await wakeup.wait()
            except TimeoutError:
                pass

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            ids = list(self._running)
            if ids:
                try:
                    await self.backend.extend(self.name, ids, lease=self.lease)
                except Exception as exc:  # the next beat retries; a lost lease is redelivered
                    log.warning("worker.extend_failed", worker=self.name, error=repr(exc))

    # ------------------------------------------------------------- one task

    async def _handle(self, task: TaskRecord) -> None:
        try:
            if task.attempts > task.max_attempts:
                await self._dead(task, "the lease expired during its last attempt")
                return
            await self._attempt(task)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the store failed: the lease expires, the task comes back
            log.error("worker.settle_failed", worker=self.name, task=task.id, error=repr(exc))
        finally:
            del self._running[task.id]
            self.processed += 1
            self._slot.set()

    async def _attempt(self, task: TaskRecord) -> None:
        events = self.queue.events
        METRICS.tasks["started"] += 1
        if events is not None:
            events.publish(
                topics.TASK_STARTED, task=task.id, worker=self.name, attempt=task.attempts
            )
        loop = asyncio.get_running_loop()
        began = loop.time()
        error: BaseException | None = None
        result: Any = None
        with tracer.start_as_current_span(
            "routing.task.handle",
            attributes={"task.id": task.id, "task.kind": task.kind, "task.attempt": task.attempts},
        ):
            try:
                if task.timeout is not None:
                    try:
                        async with asyncio.timeout(task.timeout):
                            result = await _call(self.handler, task)
                    except TimeoutError:
                        raise TaskTimeoutError(task.id, task.timeout) from None
                else:
                    result = await _call(self.handler, task)
                json.dumps(result)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = exc
        if error is None:
            await self._ack(task, result, duration=loop.time() - began)
        else:
            await self._failed(task, error)

    async def _settle(self, task: TaskRecord, values: dict[str, Any]) -> bool:
        ok = await self.backend.settle((self.name, task.id, values))
        if not ok:
            METRICS.tasks["lease_lost"] += 1
            log.warning("task.lease_lost", task=task.id, worker=self.name)
        return ok

    async def _ack(
        self,
        task: TaskRecord,
        result: Any,
        *,
        duration: float,
        error: str | None = None,
        fallback: bool = False,
    ) -> None:
        values = {
            "status": "succeeded",
            "result": result,
            "last_error": error,
            "lease_expires_at": None,
            "finished_at": self.backend.now(),
        }
        if not await self._settle(task, values):
            return
        METRICS.tasks["succeeded"] += 1
        if self.queue.events is not None:
            self.queue.events.publish(
                topics.TASK_SUCCEEDED,
                task=task.id,
                worker=self.name,
                attempt=task.attempts,
                duration=duration,
                fallback=fallback,
            )

    async def _failed(self, task: TaskRecord, exc: BaseException) -> None:
        events = self.queue.events
        error = _describe(exc)
        if task.attempts < task.max_attempts:
            bound = backoff_bound(task.attempts, task.backoff_base, task.backoff_cap)
            delay = self.rng.uniform(0.0, bound)
            run_at = self.backend.now() + timedelta(seconds=delay)
            values = {
                "status": "queued",
                "run_at": run_at,
                "last_error": error,
                "lease_owner": None,
                "lease_expires_at": None,
            }
            if not await self._settle(task, values):
                return
            METRICS.tasks["retried"] += 1
            log.info("task.retried", task=task.id, attempt=task.attempts, delay=delay, error=error)
            if events is not None:
                events.publish(
                    topics.TASK_RETRIED,
                    task=task.id,
                    attempt=task.attempts,
                    delay=delay,
                    error=error,
                )
            return
        METRICS.tasks["failed"] += 1
        log.warning("task.failed", task=task.id, attempt=task.attempts, error=error)
        if events is not None:
            events.publish(topics.TASK_FAILED, task=task.id, attempt=task.attempts, error=error)
        if self.fallback is not None:
            try:
                out = self.fallback(task, exc)
                if inspect.isawaitable(out):
                    out = await out
                json.dumps(out)
            except asyncio.CancelledError:
                raise
            except Exception as fexc:
                error = f"{error}; fallback failed: {_describe(fexc)}"
            else:
                METRICS.tasks["fallback"] += 1
                await self._ack(task, out, duration=0.0, error=error, fallback=True)
                return
        await self._dead(task, error)

    async def _dead(self, task: TaskRecord, error: str) -> None:
        values = {
            "status": "dead",
            "last_error": error,
            "lease_expires_at": None,
            "finished_at": self.backend.now(),
        }
        if not await self._settle(task, values):
            return
        METRICS.tasks["dead_lettered"] += 1
        log.warning("task.dead_lettered", task=task.id, error=error)
        if self.queue.events is not None:
            self.queue.events.publish(topics.TASK_DEAD_LETTERED, task=task.id, error=error)


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    out = fn(*args)
    if inspect.isawaitable(out):
        out = await out
    return out
