"""The durable task queue on the SQL store (SQLite file and real PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from netsuke.events import EventBus, topics
from netsuke.routing import (
    RetryPolicy,
    TaskNotFoundError,
    TaskQueue,
    TaskRecord,
    TaskTimeoutError,
    TaskValidationError,
)
from netsuke.store import Store, ValidationError

from .helpers import Fixed, eventually, next_event, wait_for


@pytest.fixture
def bus() -> EventBus:
    return EventBus("test")


@pytest.fixture
async def queue(store: Store, bus: EventBus) -> AsyncIterator[TaskQueue]:
    q = TaskQueue.sql(store, events=bus)
    yield q
    await q.close()


async def test_submitted_task_is_committed_then_taken_handled_and_acked(
    queue: TaskQueue, store: Store, bus: EventBus
) -> None:
    sub = bus.subscribe("task.*")
    task = await queue.submit("echo", {"text": "hi"}, capabilities=["echo"])
    assert task.status == "queued" and task.attempts == 0
    # committed: another connection of the store sees it
    assert (await store.tasks.get(task.id)).payload == {"text": "hi"}
    assert (await next_event(sub, topics.TASK_QUEUED)).data["task"] == task.id

    async def handle(t: TaskRecord) -> Any:
        return {"echo": t.payload["text"]}

    async with queue.worker(handle, capabilities={"echo"}):
        done = await next_event(sub, topics.TASK_SUCCEEDED)
    assert done.data["task"] == task.id and done.data["attempt"] == 1
    stored = await queue.get(task.id)
    assert stored.status == "succeeded" and stored.result == {"echo": "hi"}
    assert stored.attempts == 1 and stored.finished_at is not None


async def test_duplicate_idempotency_key_returns_the_first_task(queue: TaskQueue) -> None:
    first = await queue.submit("mail", {"to": "a"}, idempotency_key="mail:1")
    again = await queue.submit("mail", {"to": "other"}, idempotency_key="mail:1")
    assert again.id == first.id and again.payload == {"to": "a"}
    both = await asyncio.gather(
        *(queue.submit("mail", {"n": i}, idempotency_key="mail:2") for i in range(10))
    )
    assert len({t.id for t in both}) == 1
    assert await queue.count() == 2


async def test_submit_many_queues_each_task_durably_in_order_and_dedupes_keys(
    queue: TaskQueue, bus: EventBus
) -> None:
    sub = bus.subscribe("task.queued")
    first = await queue.submit("mail", {"to": "z"}, idempotency_key="many:0")
    tasks = await queue.submit_many(
        "mail",
        [{"to": "a"}, {"to": "b"}, None, {"to": "dup"}],
        capabilities=["smtp"],
        priority=3,
        idempotency_keys=[None, "many:1", None, "many:0"],
    )
    assert [t.payload for t in tasks[:3]] == [{"to": "a"}, {"to": "b"}, {}]
    assert tasks[3].id == first.id and tasks[3].payload == {"to": "z"}  # the first task
    for t in tasks[:3]:
        stored = await queue.get(t.id)
        assert stored == t and stored.status == "queued"
        assert stored.capabilities == ["smtp"] and stored.priority == 3
    assert await queue.count("queued") == 4
    queued = {(await next_event(sub, topics.TASK_QUEUED)).data["task"] for _ in range(4)}
    assert queued == {first.id, *(t.id for t in tasks[:3])}
    assert await queue.submit_many("mail", []) == []
    with pytest.raises(TaskValidationError) as ei:  # one bad payload: none queued
        await queue.submit_many("mail", [{"ok": 1}, {"f": object()}])
    assert ei.value.field == "payload"
    with pytest.raises(TaskValidationError) as ei:
        await queue.submit_many("mail", [{}, {}], idempotency_keys=["k"])
    assert ei.value.field == "idempotency_keys"
    assert await queue.count() == 4
    handled: list[str] = []
    async with queue.worker(lambda t: handled.append(t.payload.get("to", "")), batch=8):
        await wait_for(lambda: len(handled) == 4)
    assert sorted(handled) == ["", "a", "b", "z"]


async def test_bad_input_is_refused_with_a_typed_error_and_queues_nothing(
    queue: TaskQueue,
) -> None:
    with pytest.raises(TaskValidationError) as ei:
        await queue.submit("x", {"f": object()})
    assert ei.value.field == "payload"
    with pytest.raises(TaskValidationError) as ei:
        await queue.submit("")
    assert ei.value.field == "kind"
    with pytest.raises(TaskValidationError):
        await queue.submit("x", capabilities=["has space"])
    with pytest.raises(TaskValidationError):
        await queue.submit("x", capabilities="one-string")
    with pytest.raises(TaskValidationError):
        await queue.submit("x", delay=-1)
    assert await queue.count() == 0


async def test_worker_takes_only_tasks_whose_capabilities_it_offers(queue: TaskQueue) -> None:
    a = await queue.submit("t", capabilities=["search"])
    b = await queue.submit("t", capabilities=["search", "translate"])
    c = await queue.submit("t")
    seen: list[str] = []
    async with queue.worker(lambda t: seen.append(t.id), capabilities={"search"}):
        await wait_for(lambda: len(seen) == 2)
        await asyncio.sleep(0.05)
    assert set(seen) == {a.id, c.id}
    assert (await queue.get(b.id)).status == "queued"


async def test_priorities_then_delays_order_delivery(queue: TaskQueue) -> None:
    low = await queue.submit("t", priority=0)
    high = await queue.submit("t", priority=10)
    later = await queue.submit("t", priority=99, delay=0.3)
    seen: list[str] = []
    async with queue.worker(lambda t: seen.append(t.id), poll_interval=0.05):
        await wait_for(lambda: len(seen) == 2)
        assert seen == [high.id, low.id]
        await wait_for(lambda: len(seen) == 3)
    assert seen[2] == later.id


async def test_failures_retry_with_backoff_then_fallback_acks(
    queue: TaskQueue, bus: EventBus
) -> None:
    sub = bus.subscribe("task.*")
    task = await queue.submit("flaky", retry=RetryPolicy(max_attempts=3, base=0.01, cap=0.05))
    attempts: list[int] = []

    def handle(t: TaskRecord) -> None:
        attempts.append(t.attempts)
        raise RuntimeError(f"boom {t.attempts}")

    def fallback(t: TaskRecord, exc: BaseException) -> str:
        return f"fallback after {exc}"

    async with queue.worker(handle, fallback=fallback, rng=Fixed(1.0), poll_interval=0.05):
        retried = [await next_event(sub, topics.TASK_RETRIED) for _ in range(2)]
        failed = await next_event(sub, topics.TASK_FAILED)
        ok = await next_event(sub, topics.TASK_SUCCEEDED)
    assert attempts == [1, 2, 3]
    assert [e.data["delay"] for e in retried] == [0.01, 0.02]
    assert failed.data["error"] == "RuntimeError: boom 3"
    assert ok.data["fallback"] is True
    stored = await queue.get(task.id)
    assert stored.status == "succeeded" and stored.result == "fallback after boom 3"
    assert stored.last_error == "RuntimeError: boom 3"


async def test_dead_letter_queue_list_inspect_requeue_and_purge(
    queue: TaskQueue, bus: EventBus
) -> None:
    sub = bus.subscribe("task.dead_lettered")
    policy = RetryPolicy(max_attempts=1)
    tasks = [await queue.submit("bad", {"n": i}, retry=policy) for i in range(3)]
    healed = False

    def handle(t: TaskRecord) -> str:
        if not healed:
            raise ValueError("no")
        return "ok"

    async with queue.worker(handle):
        for _ in tasks:
            await next_event(sub, topics.TASK_DEAD_LETTERED)
        dead = await queue.dead_letters()
        assert {t.id for t in dead.items} == {t.id for t in tasks}
        one = await queue.get(tasks[0].id)
        assert one.status == "dead" and one.last_error == "ValueError: no" and one.attempts == 1
        healed = True
        again = await queue.requeue(tasks[0].id)
        assert again.status == "queued" and again.attempts == 0
        await wait_for_status(queue, tasks[0].id, "succeeded")
    with pytest.raises(TaskNotFoundError):
        await queue.requeue(tasks[0].id)  # not dead any more
    assert await queue.purge_dead([tasks[1].id]) == 1
    assert [t.id for t in (await queue.dead_letters()).items] == [tasks[2].id]
    assert await queue.purge_dead() == 1
    assert (await queue.dead_letters()).items == []
    with pytest.raises(TaskNotFoundError):
        await queue.get(tasks[1].id)


async def wait_for_status(queue: TaskQueue, task_id: str, status: str) -> None:
    async def check() -> bool:
        return (await queue.get(task_id)).status == status

    await eventually(check)


async def test_an_attempt_past_its_timeout_fails_with_task_timeout_error(
    queue: TaskQueue, bus: EventBus
) -> None:
    sub = bus.subscribe("task.dead_lettered")
    task = await queue.submit("slow", timeout=0.05, retry=RetryPolicy(max_attempts=1))

    async def handle(t: TaskRecord) -> None:
        await asyncio.sleep(10)

    async with queue.worker(handle):
        event = await next_event(sub, topics.TASK_DEAD_LETTERED)
    assert event.data["task"] == task.id
    assert (await queue.get(task.id)).last_error == str_error(TaskTimeoutError(task.id, 0.05))


def str_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


async def test_an_expired_lease_is_redelivered_and_the_old_holder_cannot_ack(
    queue: TaskQueue,
) -> None:
    task = await queue.submit("t")
    backend = queue.backend
    [held] = await backend.take("w1", capabilities=None, limit=5, lease=1.0)
    assert held.id == task.id and held.attempts == 1
    assert await backend.take("w2", capabilities=None, limit=5, lease=10) == []
    await asyncio.sleep(1.1)
    [again] = await backend.take("w2", capabilities=None, limit=5, lease=10)
    assert again.attempts == 2 and again.lease_owner == "w2"
    assert await backend.settle(("w1", task.id, {"status": "succeeded"})) is False
    assert await backend.extend("w1", [task.id], lease=10) == 0
    assert await backend.extend("w2", [task.id], lease=10) == 1
    assert await backend.settle(("w2", task.id, {"status": "succeeded"})) is True
    assert (await queue.get(task.id)).status == "succeeded"


async def test_a_redelivered_task_with_no_attempts_left_is_dead_lettered_unrun(
    queue: TaskQueue,
) -> None:
    task = await queue.submit("t", retry=RetryPolicy(max_attempts=1))
    await queue.backend.take("crashed", capabilities=None, limit=1, lease=0.01)
    await asyncio.sleep(0.05)
    ran: list[str] = []
    async with queue.worker(lambda t: ran.append(t.id)):
        await wait_for_status(queue, task.id, "dead")
    assert ran == []
    assert "lease expired" in ((await queue.get(task.id)).last_error or "")


@pytest.mark.timeout(240)
async def test_many_tasks_concurrent_workers_none_lost_none_twice(queue: TaskQueue) -> None:
    n = 300
    submitted = await asyncio.gather(*(queue.submit("n", {"i": i}) for i in range(n)))
    seen: list[int] = []

    async def handle(t: TaskRecord) -> int:
        seen.append(t.payload["i"])
        await asyncio.sleep(0)
        return int(t.payload["i"])

    workers = [queue.worker(handle, concurrency=8, batch=16) for _ in range(3)]
    for w in workers:
        await w.start()
    try:
        await wait_for(lambda: len(seen) == n, timeout=120)  # bounds the wait (fsync per write)
        await wait_for_count(queue, n)
    finally:
        for w in workers:
            await w.stop()
    assert sorted(seen) == list(range(n))
    assert len(submitted) == n


async def wait_for_count(queue: TaskQueue, n: int) -> None:
    async def check() -> bool:
        return await queue.count("succeeded") == n

    await eventually(check, timeout=60)


async def test_capability_matching_for_workers_offering_many_or_no_capabilities(
    queue: TaskQueue,
) -> None:
    many = {f"c{i}" for i in range(9)}  # more than the subset shortcut handles: scans routes
    fits = await queue.submit("t", capabilities=["c1", "c8"])
    bare = await queue.submit("t")
    other = await queue.submit("t", capabilities=["c1", "zz"])
    backend = queue.backend
    got = await backend.take("many", capabilities=frozenset(many), limit=10, lease=30)
    assert {t.id for t in got} == {fits.id, bare.id}
    assert await backend.take("none", capabilities=frozenset(), limit=10, lease=30) == []
    [last] = await backend.take("all", capabilities=None, limit=10, lease=30)
    assert last.id == other.id
    assert await backend.take("kinds", capabilities=None, limit=10, lease=30, kinds=["t"]) == []


async def test_settle_refuses_unknown_columns_and_changes_nothing(queue: TaskQueue) -> None:
    task = await queue.submit("t")
    await queue.backend.take("w", capabilities=None, limit=1, lease=30)
    with pytest.raises(ValidationError) as ei:
        await queue.backend.settle(("w", task.id, {"no_such_column": 1}))
    assert ei.value.field == "values"
    assert (await queue.get(task.id)).status == "leased"


@pytest.mark.parametrize("kind", ["sql", "memory"])
async def test_list_by_id_prefix(store: Store, kind: str) -> None:
    from netsuke.routing import MemoryTaskBackend

    q = TaskQueue.sql(store) if kind == "sql" else TaskQueue(MemoryTaskBackend())
    try:
        tasks = [await q.submit("job", {"i": i}) for i in range(3)]
        for t in tasks:
            assert [x.id for x in (await q.list(id_prefix=t.id)).items] == [t.id]
        shared = tasks[0].id[:4]  # UUIDv7: the same first characters within minutes
        assert {x.id for x in (await q.list(id_prefix=shared)).items} >= {t.id for t in tasks}
        assert (await q.list(id_prefix="zzzz")).items == []
        assert (await q.list(id_prefix="%")).items == []  # no LIKE wildcard
        assert (await q.dead_letters(id_prefix=shared)).items == []
    finally:
        await q.close()


@pytest.mark.parametrize("kind", ["sql", "memory"])
@pytest.mark.parametrize("width", [2, 9])  # the subset shortcut, and the route scan
async def test_a_capable_only_worker_leaves_tasks_asking_for_no_capability(
    store: Store, kind: str, width: int
) -> None:
    from netsuke.routing import MemoryTaskBackend
    from netsuke.store import CAPABLE_ONLY

    q = TaskQueue.sql(store) if kind == "sql" else TaskQueue(MemoryTaskBackend())
    try:
        bare = await q.submit("t")
        fits = await q.submit("t", capabilities=["c1"])
        offered = frozenset({f"c{i}" for i in range(width)} | {CAPABLE_ONLY})
        got = await q.backend.take("agent", capabilities=offered, limit=10, lease=30)
        assert [t.id for t in got] == [fits.id]
        [plain] = await q.backend.take("any", capabilities=frozenset(), limit=10, lease=30)
        assert plain.id == bare.id
    finally:
        await q.close()
