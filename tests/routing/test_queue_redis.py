"""The queue conformance tests of ``test_queue.py`` and ``test_queue_hotpath.py`` against the
Redis Streams backend on a real ``redis-server`` (fixture ``redis_url``), plus what only Redis
has: the persistence check, an unreachable broker, the dead-letter stream, consumer groups."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from netsuke.events import EventBus
from netsuke.routing import TaskQueue, TaskRecord
from netsuke.routing._redis_backend import (
    QueueDurabilityError,
    QueueUnavailableError,
    RedisTaskBackend,
)

from .conftest import need_redis, start_redis, stop_redis
from .helpers import wait_for
from .test_queue import (  # noqa: F401  (collected here again, on Redis)
    test_a_redelivered_task_with_no_attempts_left_is_dead_lettered_unrun,
    test_an_attempt_past_its_timeout_fails_with_task_timeout_error,
    test_an_expired_lease_is_redelivered_and_the_old_holder_cannot_ack,
    test_bad_input_is_refused_with_a_typed_error_and_queues_nothing,
    test_capability_matching_for_workers_offering_many_or_no_capabilities,
    test_dead_letter_queue_list_inspect_requeue_and_purge,
    test_duplicate_idempotency_key_returns_the_first_task,
    test_failures_retry_with_backoff_then_fallback_acks,
    test_many_tasks_concurrent_workers_none_lost_none_twice,
    test_priorities_then_delays_order_delivery,
    test_settle_refuses_unknown_columns_and_changes_nothing,
    test_submit_many_queues_each_task_durably_in_order_and_dedupes_keys,
    test_worker_takes_only_tasks_whose_capabilities_it_offers,
)
from .test_queue_hotpath import (  # noqa: F401
    test_a_sync_handler_returning_non_json_fails_the_attempt,
    test_handlers_of_every_shape_are_acked_with_their_results,
    test_settle_and_take_acks_and_leases_in_one_call,
    test_stop_commits_the_acks_of_handlers_that_finished,
)

HERE = Path(__file__).parent


@pytest.fixture
def bus() -> EventBus:
    return EventBus("test")


@pytest.fixture
async def queue(redis_url: str, bus: EventBus) -> AsyncIterator[TaskQueue]:
    backend = await RedisTaskBackend.open(redis_url, prefix=f"{{t-{uuid.uuid4().hex}}}:q")
    q = TaskQueue(backend, events=bus)
    yield q
    await q.close()


async def test_dead_letters_go_to_the_dead_letter_stream(queue: TaskQueue) -> None:
    task = await queue.submit("t", retry=None)
    backend = queue.backend
    assert isinstance(backend, RedisTaskBackend)
    [held] = await backend.take("w", capabilities=None, limit=1, lease=30)
    assert await backend.settle(("w", held.id, {"status": "dead", "last_error": "boom"}))
    entries = await backend.client.xrange(f"{backend.prefix}:dead")
    assert [e[1][b"id"].decode() for e in entries] == [task.id]
    dead = await queue.get(task.id)
    assert dead.status == "dead" and dead.last_error == "boom"


async def test_a_lease_is_a_pending_entry_of_the_consumer_group(queue: TaskQueue) -> None:
    await queue.submit("t", capabilities=["c"])
    backend = queue.backend
    assert isinstance(backend, RedisTaskBackend)
    [held] = await backend.take("w1", capabilities=frozenset({"c"}), limit=1, lease=30)
    stream = f"{backend.prefix}:r:0|t|c"
    pending = await backend.client.xpending(stream, "netsuke")
    assert pending["pending"] == 1 and pending["consumers"][0]["name"] == b"w1"
    assert await backend.settle(("w1", held.id, {"status": "succeeded", "result": 1}))
    assert (await backend.client.xpending(stream, "netsuke"))["pending"] == 0


async def test_a_second_backend_on_the_same_redis_sees_the_same_queue(
    queue: TaskQueue, redis_url: str
) -> None:
    backend = queue.backend
    assert isinstance(backend, RedisTaskBackend)
    other = await RedisTaskBackend.open(redis_url, prefix=backend.prefix)
    try:
        task = await queue.submit("t", {"x": 1})
        seen: list[str] = []
        async with TaskQueue(other).worker(lambda t: seen.append(t.id), poll_interval=0.05):
            await wait_for(lambda: seen == [task.id])
        assert (await queue.get(task.id)).status == "succeeded"
    finally:
        await other.close()


async def test_an_unreachable_broker_is_one_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there now
    with pytest.raises(QueueUnavailableError, match=rf"cannot reach Redis at redis://.*:{port}"):
        await RedisTaskBackend.open(f"redis://127.0.0.1:{port}/0")
    with pytest.raises(QueueUnavailableError) as ei:  # a password never reaches the message
        await RedisTaskBackend.open(f"redis://:hunter2@127.0.0.1:{port}/0")
    assert "hunter2" not in str(ei.value) and f"***@127.0.0.1:{port}" in str(ei.value)
    with pytest.raises(QueueUnavailableError, match="bad Redis URL"):
        await RedisTaskBackend.open("http://127.0.0.1/0")


async def test_a_server_without_fsync_on_every_write_is_refused_or_warned(
    redis_without_fsync: str,
) -> None:
    with capture_logs() as logs:
        backend = await RedisTaskBackend.open(redis_without_fsync, durability="warn")
    await backend.close()
    [warned] = [e for e in logs if e["event"] == "queue.redis_not_durable"]
    assert warned["log_level"] == "error" and "appendfsync always" in warned["problem"]
    with pytest.raises(QueueDurabilityError, match="appendonly no"):
        await RedisTaskBackend.open(redis_without_fsync)


@pytest.mark.timeout(90)
async def test_a_killed_worker_and_a_killed_broker_lose_no_acknowledged_task(
    tmp_path: Path,
) -> None:
    need_redis()
    durable = ("--appendonly", "yes", "--appendfsync", "always")
    server, url = await asyncio.to_thread(start_redis, tmp_path, *durable)
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    prefix = "{crash}:q"
    marker = tmp_path / "taken"
    try:
        queue = TaskQueue(await RedisTaskBackend.open(url, prefix=prefix))
        task = await queue.submit("important", {"n": 42})
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(HERE / "crash_worker_redis.py"), url, prefix, str(marker),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            async with asyncio.timeout(30):
                while not marker.exists():
                    assert proc.returncode is None, "the worker process exited early"
                    await asyncio.sleep(0.02)
            assert marker.read_text() == f"{task.id} 1"
            proc.send_signal(signal.SIGKILL)
            assert await asyncio.wait_for(proc.wait(), 10) == -signal.SIGKILL
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        acked = await asyncio.gather(*(queue.submit("bulk", {"i": i}) for i in range(200)))
        await queue.close()
        server.send_signal(signal.SIGKILL)  # the broker dies right after acknowledging
        await asyncio.to_thread(server.wait, 10)
        server, url = await asyncio.to_thread(start_redis, tmp_path, *durable, port=port)
        queue = TaskQueue(await RedisTaskBackend.open(url, prefix=prefix))
        try:
            held = await queue.get(task.id)
            assert held.status == "leased" and held.lease_owner == "doomed"
            assert await queue.count("queued") == len(acked)
            seen: list[tuple[str, int]] = []

            def handle(t: TaskRecord) -> str:
                seen.append((t.id, t.attempts))
                return "done"

            async with queue.worker(handle, poll_interval=0.05, batch=50, concurrency=1):
                await wait_for(lambda: len(seen) == len(acked) + 1, timeout=30)
            assert (task.id, 2) in seen
            assert sorted(i for i, _ in seen) == sorted([task.id, *(t.id for t in acked)])
            assert await queue.count("succeeded") == len(acked) + 1
        finally:
            await queue.close()
    finally:
        stop_redis(server)


async def test_concurrent_submits_share_pipelines_and_each_is_stored(queue: TaskQueue) -> None:
    backend = queue.backend
    assert isinstance(backend, RedisTaskBackend)
    before = backend.submit_batches
    tasks = await asyncio.gather(*(queue.submit("t", {"i": i}) for i in range(100)))
    assert backend.submit_batches - before < 10  # grouped, not one round trip each
    assert len({t.id for t in tasks}) == 100
    for t in tasks:
        stored = await queue.get(t.id)
        assert stored.payload == t.payload and stored.status == "queued"
    # a duplicate idempotency key inside one group still returns the first task
    a, b = await asyncio.gather(
        queue.submit("t", {"n": 1}, idempotency_key="same"),
        queue.submit("t", {"n": 2}, idempotency_key="same"),
    )
    assert a.id == b.id and (await queue.get(a.id)).payload == {"n": 1}


async def test_the_take_script_chooses_streams_by_kind_capability_and_priority(
    queue: TaskQueue,
) -> None:
    from netsuke.store import CAPABLE_ONLY

    backend = queue.backend
    assert isinstance(backend, RedisTaskBackend)
    low = await queue.submit("a", capabilities=["x"], priority=0)
    high = await queue.submit("a", capabilities=["x"], priority=5)
    other_kind = await queue.submit("b", capabilities=["x"])
    needs_y = await queue.submit("a", capabilities=["x", "y"])
    bare = await queue.submit("a")
    got = await backend.take(
        "w", capabilities=frozenset({"x", CAPABLE_ONLY}), limit=10, lease=30, kinds=["a"]
    )
    assert [t.id for t in got] == [high.id, low.id]  # not b, not x+y, not the bare task
    got = await backend.take("w", capabilities=None, limit=10, lease=30, kinds=None)
    assert {t.id for t in got} == {other_kind.id, needs_y.id, bare.id}


async def test_a_submit_group_failing_fails_each_of_its_callers(tmp_path: Path) -> None:
    need_redis()
    proc, url = start_redis(tmp_path, "--appendonly", "yes", "--appendfsync", "always")
    backend = await RedisTaskBackend.open(url, prefix="{fail}:q")
    try:
        stop_redis(proc)
        results = await asyncio.gather(
            *(TaskQueue(backend).submit("t", {"i": i}) for i in range(5)),
            return_exceptions=True,
        )
        assert all(isinstance(r, Exception) for r in results), results
    finally:
        await backend.close()


async def test_a_queue_of_layout_1_is_converted_at_open_and_a_newer_one_refused(
    redis_url: str,
) -> None:
    import json
    from datetime import UTC, datetime

    import redis.asyncio as aioredis

    from netsuke.store import new_id

    prefix = f"{{t-{uuid.uuid4().hex}}}:q"
    client = aioredis.Redis.from_url(redis_url)
    try:
        now = datetime.now(UTC)
        ms = int(now.timestamp() * 1000)
        stamp = json.dumps(now.isoformat())
        stream = f"{prefix}:r:0|old|"
        await client.sadd(f"{prefix}:routes", "0|old|")
        await client.xgroup_create(stream, "netsuke", id="0", mkstream=True)
        queued, leased, done = new_id(), new_id(), new_id()
        e_leased = (await client.xadd(stream, {"id": leased})).decode()
        await client.xreadgroup("netsuke", "old-worker", {stream: ">"}, count=1)
        e_queued = (await client.xadd(stream, {"id": queued})).decode()

        def fixed(task_id: str, n: int) -> str:  # the fields layout 1 kept as JSON in ``j``
            return json.dumps({
                "id": task_id, "kind": "old", "capabilities": [], "priority": 0,
                "max_attempts": 5, "backoff_base": 1.0, "backoff_cap": 60.0, "timeout": None,
                "idempotency_key": None, "created_at": now.isoformat(), "payload": {"n": n},
            })  # fmt: skip

        base = {"status": '"queued"', "attempts": "0", "run_at": stamp, "lease_owner": "null",
                "lease_expires_at": "null", "result": "null", "last_error": "null",
                "updated_at": stamp, "finished_at": "null", "_c": ms, "_k": "", "_st": stream}  # fmt: skip
        await client.hset(f"{prefix}:t:{queued}", mapping={
            **base, "j": fixed(queued, 1), "_s": "queued", "_e": e_queued})  # fmt: skip
        # (its lease has expired)
        await client.hset(f"{prefix}:t:{leased}", mapping={
            **base, "j": fixed(leased, 2), "_s": "leased", "_e": e_leased, "status": '"leased"',
            "attempts": "1", "lease_owner": '"old-worker"', "lease_expires_at": stamp,
            "_o": "old-worker", "_x": ms - 1})  # fmt: skip
        await client.hset(f"{prefix}:t:{done}", mapping={
            **base, "j": fixed(done, 3), "_s": "succeeded", "_e": "", "status": '"succeeded"',
            "attempts": "1", "result": '"ok"', "finished_at": stamp})  # fmt: skip
        await client.zadd(f"{prefix}:all", {queued: ms, leased: ms, done: ms})
        await client.zadd(f"{prefix}:s:queued", {queued: ms})
        await client.zadd(f"{prefix}:s:leased", {leased: ms})
        await client.zadd(f"{prefix}:s:succeeded", {done: ms})
        await client.zadd(f"{prefix}:leases", {leased: ms - 1})

        queue = TaskQueue(await RedisTaskBackend.open(redis_url, prefix=prefix))
        try:
            assert await client.get(f"{prefix}:v") == b"3"
            assert not await client.exists(f"{prefix}:all", f"{prefix}:s:leased")
            old = await queue.get(done)
            assert old.status == "succeeded" and old.result == "ok" and old.payload == {"n": 3}
            held = await queue.get(leased)
            assert held.status == "leased" and held.lease_owner == "old-worker"
            assert await queue.count() == 3 and await queue.count("leased") == 1
            assert [t.id for t in (await queue.list(status="queued")).items] == [queued]
            seen: list[tuple[str, int]] = []
            async with queue.worker(lambda t: seen.append((t.id, t.attempts)), poll_interval=0.05):
                await wait_for(lambda: len(seen) == 2)
            assert sorted(seen) == sorted([(queued, 1), (leased, 2)])
            assert await queue.count("succeeded") == 3
        finally:
            await queue.close()
        await client.set(f"{prefix}:v", "4")
        with pytest.raises(QueueUnavailableError, match="key layout 4"):
            await RedisTaskBackend.open(redis_url, prefix=prefix)
    finally:
        await client.aclose()


@pytest.mark.timeout(60)
async def test_a_queue_of_layout_2_is_converted_at_open_and_its_tasks_run(
    redis_url: str,
) -> None:
    """Layout 2 (every queued task's string names its entry) is valid layout 3: ``open`` sets
    the version; the old tasks and new ones (whose entry line stays empty until taken) run."""
    import json
    from datetime import UTC, datetime

    import redis.asyncio as aioredis

    from netsuke.store import new_id

    prefix = f"{{t-{uuid.uuid4().hex}}}:q"
    client = aioredis.Redis.from_url(redis_url)
    try:
        now = datetime.now(UTC)
        ms = int(now.timestamp() * 1000)
        stamp = json.dumps(now.isoformat())
        member = "0|old|"
        stream = f"{prefix}:r:{member}"
        await client.sadd(f"{prefix}:routes", member)
        await client.xgroup_create(stream, "netsuke", id="0", mkstream=True)
        old = new_id()
        entry = (await client.xadd(stream, {"id": old})).decode()
        state = "\n".join(['"queued"', "0", stamp, "null", "null", "null", "null", stamp,
                           "null", "0", entry, str(ms), "", str(len(stream)), stream])  # fmt: skip
        fixed = json.dumps({
            "id": old, "kind": "old", "capabilities": [], "priority": 0, "max_attempts": 5,
            "backoff_base": 1.0, "backoff_cap": 60.0, "timeout": None,
            "idempotency_key": None, "created_at": now.isoformat(), "payload": {"n": 1},
        })  # fmt: skip
        await client.mset({f"{prefix}:t:{old}": state, f"{prefix}:f:{old}": fixed})
        await client.zadd(f"{prefix}:s:queued", {old: ms})
        await client.set(f"{prefix}:v", "2")

        queue = TaskQueue(await RedisTaskBackend.open(redis_url, prefix=prefix))
        try:
            assert await client.get(f"{prefix}:v") == b"3"
            new = await queue.submit("old", {"n": 2})
            assert (await queue.get(old)).payload == {"n": 1}
            assert await queue.count("queued") == 2
            seen: list[tuple[str, int]] = []
            async with queue.worker(lambda t: seen.append((t.id, t.attempts)), poll_interval=0.05):
                await wait_for(lambda: len(seen) == 2)
            assert sorted(seen) == sorted([(old, 1), (new.id, 1)])
            assert await queue.count("succeeded") == 2
        finally:
            await queue.close()
    finally:
        await client.aclose()


@pytest.mark.timeout(60)
async def test_a_submit_reloads_the_script_a_restarted_redis_lost_and_drops_duplicates_strings(
    queue: TaskQueue,
) -> None:
    backend = queue.backend
    assert isinstance(backend, RedisTaskBackend)
    await backend.client.script_flush()  # what a restart of Redis does to its script cache
    many = await queue.submit_many("t", [{"i": i} for i in range(20)])  # a round of its own
    await backend.client.script_flush()
    one = await queue.submit("t", {"i": 20}, idempotency_key="k")  # a grouped round
    again = await queue.submit_many(
        "t", [{"i": 21}] * 20, idempotency_keys=["k"] + [f"k{i}" for i in range(19)]
    )
    assert again[0].id == one.id and again[0].payload == {"i": 20}
    # the duplicate's strings, written by the round's MSET, were deleted by its script
    states = [k async for k in backend.client.scan_iter(f"{backend.prefix}:t:*")]
    fixed = [k async for k in backend.client.scan_iter(f"{backend.prefix}:f:*")]
    assert len(states) == len(fixed) == 20 + 1 + 19
    assert await queue.count("queued") == 40
    taken = await backend.take("w", capabilities=None, limit=100, lease=30)
    assert {t.id for t in taken} == {t.id for t in [*many, one, *again[1:]]}


async def test_settle_and_take_reloads_the_scripts_a_restarted_redis_lost(queue: TaskQueue) -> None:
    backend = queue.backend
    assert isinstance(backend, RedisTaskBackend)
    first, second = await queue.submit("t", {"n": 1}), await queue.submit("t", {"n": 2})
    [held] = await backend.take("w", capabilities=None, limit=1, lease=30)
    await backend.client.script_flush()  # what a restart of Redis does to its script cache
    applied, taken = await backend.settle_and_take(
        [("w", held.id, {"status": "succeeded", "result": 1})],
        "w",
        capabilities=None,
        limit=5,
        lease=30,
    )
    assert applied == [True] and [t.id for t in taken] == [second.id]
    assert held.id == first.id and (await queue.get(first.id)).status == "succeeded"


async def test_settles_trim_acked_entries_and_keep_pending_and_unread_ones(
    queue: TaskQueue,
) -> None:
    backend = queue.backend
    assert isinstance(backend, RedisTaskBackend)
    stream = f"{backend.prefix}:r:0|t|"

    async def take(worker: str, n: int) -> list[TaskRecord]:
        return await backend.take(worker, capabilities=None, limit=n, lease=30)

    async def ack(worker: str, tasks: list[TaskRecord]) -> None:
        changes = [(worker, t.id, {"status": "succeeded"}) for t in tasks]
        applied, _ = await backend.settle_and_take(
            changes, worker, capabilities=None, limit=0, lease=30
        )
        assert all(applied)

    for _ in range(6):
        await queue.submit("t")
    [held] = await take("w1", 1)
    await ack("w2", await take("w2", 3))  # the held one is older: nothing goes
    assert await backend.client.xlen(stream) == 6
    rest = await take("w2", 2)
    unread = await queue.submit("t")
    await ack("w1", [held])
    await ack("w2", rest)  # all acked up to the newest: only it and the unread entry stay
    assert await backend.client.xlen(stream) == 2
    [last] = await take("w3", 5)
    assert last.id == unread.id
    assert (await backend.client.xpending(stream, "netsuke"))["pending"] == 1
