"""Workers: take tasks under a lease, run the handler, ack; retry, fall back, dead-letter.

A worker offers ``capabilities`` (``None``: takes every task) and takes only tasks whose
capabilities it offers, all of them; ``kinds`` narrows it to some task kinds. It runs up to
``concurrency`` [``1``] handlers at once and takes up to ``batch`` [``concurrency``] tasks per
round trip, under a ``lease`` [``30.0`` s] renewed every ``lease / 3`` while a handler runs.
A plain function's handler runs inline in the worker's loop, in delivery order (no asyncio
task: it could not yield anyway); a coroutine function, or a handler returning an awaitable,
runs in its own asyncio task.

For each task, in order:

1. ``task.started`` is published; ``handler(task)`` runs (sync or async), within
   ``task.timeout`` when set (else ``TaskTimeoutError`` is the attempt's error).
2. Success: the result (JSON) is stored and the task acked (``succeeded``), then
   ``task.succeeded``. Acks wait in an outbox and are committed with the worker's next take
   (``settle_and_take``: on SQLite one transaction acks a batch and leases the next), or, on a
   backend with ``settles_behind`` > 0 (JetStream: 4), in the background while that take runs,
   up to that many batches at once; the task counts as done (``processed``,
   ``task.succeeded``) only once its ack is committed. If that commit fails the acks stay (or
   go back) in the outbox for the next round; ``stop()`` waits for the background commits,
   then commits those left.
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
import functools
import inspect
import json
import random
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

from netsuke.events import topics
from netsuke.store import TaskRecord

from ._errors import TaskTimeoutError
from ._observe import METRICS, log, tracer, tracing
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
        self._is_async = inspect.iscoroutinefunction(handler)
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
        # acks of handlers that finished, committed with the next take: (task, values, duration)
        self._outbox: list[tuple[TaskRecord, dict[str, Any], float]] = []
        self._behind: int = getattr(self.backend, "settles_behind", 0)  # (older backends: 0)
        self._settling: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
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
            self.queue._wakeups.add(self._wake)
            self._loop_task = asyncio.create_task(self._loop(), name=f"netsuke-{self.name}")
            self._beat_task = asyncio.create_task(self._heartbeat(), name=f"{self.name}-beat")
            log.info("worker.started", worker=self.name, capabilities=self._caps_list())
        return self

    async def stop(self) -> None:
        """Stop taking tasks; let running handlers finish within ``grace``, then cancel them;
        commit the acks of the handlers that finished."""
        self._stopping = True
        self._wake.set()
        if self._loop_task is not None:  # it finishes its round (a take in flight commits)
            _, pending = await asyncio.wait([self._loop_task], timeout=self.grace)
            for t in pending:
                t.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        running = list(self._running.values())
        if running:
            _, pending = await asyncio.wait(running, timeout=self.grace)
            for t in pending:
                t.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        if self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)
        if self._outbox:
            try:
                await self._take(0)
            except Exception as exc:  # their leases expire; the tasks are delivered again
                log.error("worker.settle_failed", worker=self.name, error=repr(exc))
        if self._beat_task is not None:
            self._beat_task.cancel()
            await asyncio.gather(self._beat_task, return_exceptions=True)
        self.queue._wakeups.discard(self._wake)
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
        wake = self._wake
        while not self._stopping:
            free = self.concurrency - len(self._running)
            if free <= 0 and not self._outbox:
                wake.clear()
                await wake.wait()
                continue
            wake.clear()
            try:
                tasks = await self._take(max(0, min(free, self.batch)))
            except Exception as exc:  # the database is unreachable: keep trying, slowly
                self.take_errors += 1
                log.warning("worker.take_failed", worker=self.name, error=repr(exc))
                await self._pause(self.poll_interval)
                continue
            if tasks:
                traced = tracing()
                for task in tasks:
                    self._start(task, traced)
                continue
            if self._outbox or free <= 0:
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
            await self._pause(timeout)

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds`` or until woken (a submit, a handler finishing, ``stop``)."""
        if self._stopping or self._wake.is_set():
            return
        try:
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        except TimeoutError:
            pass

    async def _take(self, limit: int) -> list[TaskRecord]:
        """Commit the acks waiting in the outbox and lease up to ``limit`` tasks, in one
        transaction where the backend can. The acks count as done only once committed; if the
        commit fails they stay in the outbox for the next round."""
        if self._outbox and self._behind and limit > 0:  # commit them behind this take
            while len(self._settling) >= self._behind:  # (the acks stay in the outbox meanwhile)
                await asyncio.wait(set(self._settling), return_when=asyncio.FIRST_COMPLETED)
            committing, self._outbox = self._outbox, []
            settling = asyncio.create_task(self._commit(committing))
            self._settling.add(settling)
            settling.add_done_callback(self._settling.discard)
        acks = self._outbox
        if not acks:
            if limit <= 0:
                return []
            return await self.backend.take(
                self.name,
                capabilities=self.capabilities,
                limit=limit,
                lease=self.lease,
                kinds=self.kinds,
            )
        self._outbox = []
        return await self._settle_and_take(acks, limit)

    async def _settle_and_take(
        self, acks: list[tuple[TaskRecord, dict[str, Any], float]], limit: int
    ) -> list[TaskRecord]:
        """Commit ``acks`` (taken out of the outbox) and lease up to ``limit`` tasks; if that
        fails the acks go back to the front of the outbox for the next round."""
        try:
            applied, tasks = await self.backend.settle_and_take(
                [(self.name, task.id, values) for task, values, _ in acks],
                self.name,
                capabilities=self.capabilities,
                limit=limit,
                lease=self.lease,
                kinds=self.kinds,
            )
        except BaseException:
            self._outbox[:0] = acks
            raise
        self._acked(acks, applied)
        return tasks

    async def _commit(self, acks: list[tuple[TaskRecord, dict[str, Any], float]]) -> None:
        """Commit ``acks`` in the background (``settles_behind``); a failure is logged and
        the next round commits them."""
        try:
            await self._settle_and_take(acks, 0)
        except Exception as exc:
            log.warning("worker.settle_failed", worker=self.name, error=repr(exc))
            self._wake.set()

    def _acked(
        self, acks: list[tuple[TaskRecord, dict[str, Any], float]], applied: list[bool]
    ) -> None:
        events = self.queue.events
        ok = 0
        for (task, _, duration), done in zip(acks, applied, strict=True):
            if not done:
                METRICS.tasks["lease_lost"] += 1
                log.warning("task.lease_lost", task=task.id, worker=self.name)
                continue
            ok += 1
            if events is not None:
                events.publish(
                    topics.TASK_SUCCEEDED,
                    task=task.id,
                    worker=self.name,
                    attempt=task.attempts,
                    duration=duration,
                    fallback=False,
                )
        METRICS.tasks["succeeded"] += ok
        self.processed += len(acks)

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

    def _start(self, task: TaskRecord, traced: bool) -> None:
        """Run one taken task. A plain function's handler runs here, at once (no asyncio task:
        it could not yield anyway); a coroutine, a failure and a dead letter get a task."""
        if task.attempts > task.max_attempts:
            self._spawn(task, self._dead, task, "the lease expired during its last attempt")
            return
        METRICS.tasks["started"] += 1
        events = self.queue.events
        if events is not None:
            events.publish(
                topics.TASK_STARTED, task=task.id, worker=self.name, attempt=task.attempts
            )
        if self._is_async:
            self._spawn(task, self._attempt, task)
            return
        began = _now()
        span = tracer.start_span(_HANDLE, attributes=_attributes(task)) if traced else None
        try:
            if span is None:
                out = self.handler(task)
            else:
                with trace.use_span(span, end_on_exit=True):
                    out = self.handler(task)
            if type(out) not in _JSON_SCALARS and not inspect.isawaitable(out):
                json.dumps(out)
        except Exception as exc:
            self._spawn(task, self._failed, task, exc)
            return
        if inspect.isawaitable(out):
            self._spawn(task, self._attempt, task, out)
            return
        self._outbox.append((task, self._ack_values(out), _now() - began))

    def _spawn(self, task: TaskRecord, fn: Callable[..., Awaitable[bool]], *args: Any) -> None:
        runner = asyncio.create_task(self._guard(task, fn, *args))
        self._running[task.id] = runner
        for arg in args:  # a handler's coroutine the task, cancelled unstarted, never awaited
            if inspect.iscoroutine(arg):
                runner.add_done_callback(functools.partial(_close, arg))

    async def _guard(
        self, task: TaskRecord, fn: Callable[..., Awaitable[bool]], *args: Any
    ) -> None:
        queued = False  # True: the ack waits in the outbox, counted once committed
        try:
            queued = await fn(*args)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the store failed: the lease expires, the task comes back
            log.error("worker.settle_failed", worker=self.name, task=task.id, error=repr(exc))
        finally:
            del self._running[task.id]
            if not queued:
                self.processed += 1
            self._wake.set()

    async def _attempt(self, task: TaskRecord, pending: Awaitable[Any] | None = None) -> bool:
        """Run the handler (or finish the awaitable it returned) within ``task.timeout``; queue
        the ack (``True``) or handle the failure."""
        began = _now()
        error: BaseException | None = None
        result: Any = None
        with tracer.start_as_current_span(_HANDLE, attributes=_attributes(task)):
            try:
                work = pending if pending is not None else _call(self.handler, task)
                if task.timeout is not None:
                    try:
                        async with asyncio.timeout(task.timeout):
                            result = await work
                    except TimeoutError:
                        raise TaskTimeoutError(task.id, task.timeout) from None
                else:
                    result = await work
                json.dumps(result)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = exc
        if error is None:
            self._outbox.append((task, self._ack_values(result), _now() - began))
            return True
        return await self._failed(task, error)

    def _ack_values(self, result: Any, error: str | None = None) -> dict[str, Any]:
        return {
            "status": "succeeded",
            "result": result,
            "last_error": error,
            "lease_expires_at": None,
            "finished_at": self.backend.now(),
        }

    async def _settle(self, task: TaskRecord, values: dict[str, Any]) -> bool:
        ok = await self.backend.settle((self.name, task.id, values))
        if not ok:
            METRICS.tasks["lease_lost"] += 1
            log.warning("task.lease_lost", task=task.id, worker=self.name)
        return ok

    async def _ack(self, task: TaskRecord, result: Any, *, error: str) -> None:
        """Ack on its own commit (the fallback's result after the last attempt failed)."""
        if not await self._settle(task, self._ack_values(result, error)):
            return
        METRICS.tasks["succeeded"] += 1
        if self.queue.events is not None:
            self.queue.events.publish(
                topics.TASK_SUCCEEDED,
                task=task.id,
                worker=self.name,
                attempt=task.attempts,
                duration=0.0,
                fallback=True,
            )

    async def _failed(self, task: TaskRecord, exc: BaseException) -> bool:
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
                return False
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
            return False
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
                await self._ack(task, out, error=error)
                return False
        return await self._dead(task, error)

    async def _dead(self, task: TaskRecord, error: str) -> bool:
        values = {
            "status": "dead",
            "last_error": error,
            "lease_expires_at": None,
            "finished_at": self.backend.now(),
        }
        if not await self._settle(task, values):
            return False
        METRICS.tasks["dead_lettered"] += 1
        log.warning("task.dead_lettered", task=task.id, error=error)
        if self.queue.events is not None:
            self.queue.events.publish(topics.TASK_DEAD_LETTERED, task=task.id, error=error)
        return False


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    out = fn(*args)
    if inspect.isawaitable(out):
        out = await out
    return out


_HANDLE = "routing.task.handle"
_JSON_SCALARS = frozenset({type(None), str, int, float, bool})


def _attributes(task: TaskRecord) -> dict[str, Any]:
    return {"task.id": task.id, "task.kind": task.kind, "task.attempt": task.attempts}


def _close(coroutine: Coroutine[Any, Any, Any], _: object) -> None:
    coroutine.close()  # (no-op once it ran)


def _now() -> float:
    return asyncio.get_running_loop().time()
