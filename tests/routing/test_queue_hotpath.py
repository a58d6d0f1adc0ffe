"""The queue's hot path: acks committed with the next lease, inline handlers, plain drafts, the
SQLite task writer's shared transactions (SQLite file and real PostgreSQL where it applies)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netsuke.events import EventBus, topics
from netsuke.routing import RetryPolicy, TaskQueue, TaskRecord
from netsuke.store import Store, TaskDraft

from .helpers import eventually, next_event, wait_for


@pytest.fixture
def bus() -> EventBus:
    return EventBus("test")


@pytest.fixture
async def queue(store: Store, bus: EventBus) -> AsyncIterator[TaskQueue]:
    q = TaskQueue.sql(store, events=bus)
    yield q
    await q.close()


async def test_an_ack_is_committed_before_it_is_reported(
    queue: TaskQueue, store: Store, bus: EventBus
) -> None:
    sub = bus.subscribe(topics.TASK_SUCCEEDED)
    tasks = await asyncio.gather(*(queue.submit("n", {"i": i}) for i in range(40)))
    worker = queue.worker(lambda t: t.payload["i"] * 2, concurrency=8, batch=8)
    async with worker:
        for _ in tasks:
            event = await next_event(sub, topics.TASK_SUCCEEDED)
            stored = await store.tasks.get(event.data["task"])  # another connection
            assert stored.status == "succeeded" and stored.result == stored.payload["i"] * 2
        assert worker.processed == len(tasks)
    assert await queue.count("succeeded") == len(tasks)
    assert await queue.count("leased") == 0


async def test_stop_commits_the_acks_of_handlers_that_finished(queue: TaskQueue) -> None:
    for _ in range(3):
        await _stop_half_way(queue, 25)


async def _stop_half_way(queue: TaskQueue, n: int) -> None:
    await asyncio.gather(*(queue.submit("n", {"i": i}) for i in range(n)))
    seen: list[str] = []
    worker = queue.worker(lambda t: seen.append(t.id), batch=5)
    await worker.start()
    await wait_for(lambda: len(seen) >= n // 2)
    await worker.stop()
    handled = set(seen)
    for task_id in handled:  # every handled task acked: none left leased to redeliver
        assert (await queue.get(task_id)).status == "succeeded"
    assert worker.processed == len(seen) == len(handled)
    rest: list[str] = []
    async with queue.worker(lambda t: rest.append(t.id)):
        await wait_for(lambda: len(rest) >= n - len(handled))
    assert not handled & set(rest)
    assert await queue.backend.purge("succeeded") == n


async def test_handlers_of_every_shape_are_acked_with_their_results(queue: TaskQueue) -> None:
    async def later(t: TaskRecord) -> Any:
        await asyncio.sleep(0)
        return {"async": t.payload["i"]}

    def returns_awaitable(t: TaskRecord) -> Any:
        return later(t)

    for handler in (lambda t: {"sync": t.payload["i"]}, later, returns_awaitable):
        tasks = [await queue.submit("h", {"i": i}) for i in range(5)]
        async with queue.worker(handler, concurrency=2):
            for t in tasks:
                await _succeeded(queue, t.id)
        results = [(await queue.get(t.id)).result for t in tasks]
        assert [next(iter(r.values())) for r in results] == list(range(5))
        await queue.backend.purge("succeeded")


async def test_a_sync_handler_returning_non_json_fails_the_attempt(queue: TaskQueue) -> None:
    task = await queue.submit("bad", retry=RetryPolicy(max_attempts=1))
    async with queue.worker(lambda t: object()):
        await _status(queue, task.id, "dead")
    assert "TypeError" in ((await queue.get(task.id)).last_error or "")


async def _succeeded(queue: TaskQueue, task_id: str) -> None:
    await _status(queue, task_id, "succeeded")


async def _status(queue: TaskQueue, task_id: str, status: str) -> None:
    async def check() -> bool:
        return (await queue.get(task_id)).status == status

    await eventually(check)


async def test_the_sqlite_writer_shares_a_commit_and_rolls_back_a_failing_part(
    tmp_path: Path,
) -> None:
    async with Store.open(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}", migrate=True) as store:
        writer = store.tasks._sqlite
        assert writer is not None
        now = datetime.now(UTC)
        drafts = [TaskDraft(kind="k", payload={"i": i}, run_at=now) for i in range(3)]

        def boom(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM tasks")  # rolled back with its savepoint
            raise RuntimeError("boom")

        before = writer.transactions
        inserted, failed, taken = await asyncio.gather(
            store.tasks.insert(drafts, now=now),
            writer._run(boom),
            store.tasks.take("w", capabilities=None, limit=10, lease=30, now=now),
            return_exceptions=True,
        )
        assert writer.transactions == before + 1
        assert isinstance(failed, RuntimeError)
        assert isinstance(inserted, list) and isinstance(taken, list)
        assert {t.id for t, _ in inserted} == {t.id for t in taken}  # one transaction, in order
        assert await store.tasks.count("leased") == 3


async def test_settle_and_take_acks_and_leases_in_one_call(queue: TaskQueue) -> None:
    a = await queue.submit("t")
    [held] = await queue.backend.take("w", capabilities=None, limit=1, lease=30)
    b = await queue.submit("t")
    applied, got = await queue.backend.settle_and_take(
        [("w", held.id, {"status": "succeeded"}), ("other", held.id, {"status": "dead"})],
        "w",
        capabilities=None,
        limit=5,
        lease=30,
    )
    assert held.id == a.id and applied == [True, False]
    assert [t.id for t in got] == [b.id] and got[0].attempts == 1
    assert (await queue.get(a.id)).status == "succeeded"
    applied, got = await queue.backend.settle_and_take(
        [], "w", capabilities=None, limit=0, lease=30
    )
    assert applied == [] and got == []


_text = st.one_of(st.text(max_size=70), st.integers(), st.none())
_number = st.one_of(
    st.integers(-3, 2000), st.floats(allow_nan=False, allow_infinity=False), st.booleans()
)


@settings(max_examples=300, deadline=None)
@given(
    kind=_text,
    caps=st.lists(st.one_of(st.text(max_size=70), st.integers()), max_size=4),
    priority=_number,
    max_attempts=_number,
    base=_number,
    timeout=st.one_of(st.none(), _number),
    key=st.one_of(st.none(), st.text(max_size=210)),
    payload_key=st.one_of(st.text(max_size=5), st.integers()),
)
def test_a_plain_draft_is_exactly_what_validation_builds(
    kind: Any,
    caps: list[Any],
    priority: Any,
    max_attempts: Any,
    base: Any,
    timeout: Any,
    key: Any,
    payload_key: Any,
) -> None:
    run_at = datetime(2026, 1, 1, tzinfo=UTC)
    args: dict[str, Any] = {
        "kind": kind,
        "payload": {payload_key: 1},
        "capabilities": tuple(caps),
        "priority": priority,
        "max_attempts": max_attempts,
        "backoff_base": base,
        "backoff_cap": 60.0,
        "timeout": timeout,
        "run_at": run_at,
        "idempotency_key": key,
    }
    plain = TaskDraft.plain(payload_json="{}", **args)
    try:
        validated = TaskDraft(**args)
    except pydantic.ValidationError:
        assert plain is None
        return
    if plain is not None:  # (None is allowed: validation then decides, as here)
        assert plain.model_dump() == validated.model_dump()
        assert plain.payload_json == "{}"
        assert plain.route == validated.route
