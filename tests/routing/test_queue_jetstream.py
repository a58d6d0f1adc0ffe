"""The queue conformance tests of ``test_queue.py`` and ``test_queue_hotpath.py`` against the
NATS JetStream backend on a real nats-server (fixture ``jetstream``), plus what only JetStream
has: the durability check, an unreachable server, the work-queue stream and its consumers, the
max-deliveries advisory, a killed worker and a killed broker."""

from __future__ import annotations

import asyncio
import functools
import json
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from netsuke.events import EventBus
from netsuke.routing import (
    JetStreamTaskBackend,
    QueueDurabilityError,
    QueueUnavailableError,
    RetryPolicy,
    TaskQueue,
    TaskRecord,
)
from netsuke.store import TaskDraft

from .conftest import need_nats
from .helpers import eventually, wait_for
from .test_queue import (  # noqa: F401  (collected here again, on JetStream)
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


def _prefix() -> str:
    return f"T{uuid.uuid4().hex[:12].upper()}"


@pytest.fixture
def bus() -> EventBus:
    return EventBus("test")


@pytest.fixture
async def queue(jetstream: tuple[str, str], bus: EventBus) -> AsyncIterator[TaskQueue]:
    url, monitor = jetstream
    backend = await JetStreamTaskBackend.open(url, prefix=_prefix(), monitor=monitor)
    q = TaskQueue(backend, events=bus)
    yield q
    await q.close()


def _backend(queue: TaskQueue) -> JetStreamTaskBackend:
    backend = queue.backend
    assert isinstance(backend, JetStreamTaskBackend)
    return backend


async def _stream_messages(backend: JetStreamTaskBackend, stream: str) -> int:
    return int((await backend.js.stream_info(stream)).state.messages)


def _work_of(backend: JetStreamTaskBackend, task_id: str) -> str:
    """The work stream holding ``task_id``'s message (tasks spread over them by id)."""
    return backend.works[backend._shard(task_id)]


async def test_a_task_is_one_message_of_its_work_stream_until_acked_and_compacted(
    queue: TaskQueue,
) -> None:
    backend = _backend(queue)
    task = await queue.submit("t", capabilities=["c"])
    work = _work_of(backend, task.id)
    assert await _stream_messages(backend, work) == 1
    [held] = await backend.take("w1", capabilities=frozenset({"c"}), limit=1, lease=30)
    [route] = backend._routes.values()
    info = await backend.js.consumer_info(work, route.consumer)
    assert info.num_ack_pending == 1 and info.config.max_deliver == task.max_attempts + 2
    assert backend._kept == [True] * len(backend.works)  # limits retention: acks delete nothing
    assert await backend.settle(("w1", held.id, {"status": "succeeded", "result": 1}))

    async def gone() -> bool:  # the ack is not waited for; a compaction after it drops it
        await backend.compact(await backend.compact())  # (a pass purges the previous marks)
        return await _stream_messages(backend, work) == 0

    await eventually(gone)
    assert (await queue.get(task.id)).result == 1


@pytest.mark.timeout(60)
async def test_compaction_drops_only_messages_every_consumer_is_done_with(
    queue: TaskQueue,
) -> None:
    """A compaction purges the acked messages below the first one a consumer still needs (a
    lease held, a retry waiting under a nak, a message not delivered yet), on every route;
    a purged task's messages go with its record, so it is neither listed nor found."""
    backend = _backend(queue)
    backend.compact_interval = 3600.0  # (passes run by hand here)
    works = backend.works
    a = await asyncio.gather(*(queue.submit("a", {"i": i}, capabilities=["a"]) for i in range(8)))
    b = await asyncio.gather(*(queue.submit("b", {"i": i}, capabilities=["b"]) for i in range(8)))
    got: list[TaskRecord] = []
    while len(got) < 8:
        got += await backend.take("w", capabilities=frozenset({"a"}), limit=8, lease=30)
    held, retry, done = got[0], got[1], got[2:]
    for t in done:
        assert await backend.settle(("w", t.id, {"status": "succeeded", "result": t.payload}))
    run_at = backend.now() + timedelta(seconds=3600)
    assert await backend.settle(("w", retry.id, {"status": "queued", "run_at": run_at}))
    total = sum([await _stream_messages(backend, w) for w in works])
    assert total == 16
    marks = await backend.compact()
    marks = await backend.compact(marks)
    await backend.compact(marks)
    kept = {t.id for t in (held, retry, *b)}
    for t in [*a, *b]:  # what still holds a message: the lease, the retry, route b's backlog
        found = await backend._queued(t.id)
        if t.id in kept:
            assert found is not None and found["id"] == t.id
    assert (await queue.get(held.id)).status == "leased"
    assert (await queue.get(retry.id)).status == "queued"
    assert {(await queue.get(t.id)).result["i"] for t in done} == {t.payload["i"] for t in done}
    for t in done:  # settled and acked: the record holds it; its message may be compacted
        assert (await queue.get(t.id)).status == "succeeded"
    # route b's tasks, never delivered, are still taken whole after the passes
    taken: list[TaskRecord] = []
    while len(taken) < 8:
        taken += await backend.take("w", capabilities=frozenset({"b"}), limit=8, lease=30)
    assert sorted(t.payload["i"] for t in taken) == list(range(8))
    for t in taken:
        assert await backend.settle(("w", t.id, {"status": "dead", "last_error": "x"}))
    assert await queue.purge_dead([t.id for t in taken[:3]]) == 3
    for t in taken[:3]:  # its record and its messages gone: not found, not listed
        assert await backend._queued(t.id) is None
        with pytest.raises(Exception, match=t.id):
            await queue.get(t.id)
    assert await queue.count("dead") == 5 and await queue.count() == 13
    # the lease settled too: only the retry's message (and what follows it) is needed now
    assert await backend.settle(("w", held.id, {"status": "succeeded", "result": 0}))
    from netsuke.routing._observe import METRICS

    purges = METRICS.tasks["jetstream_compactions"]

    async def compacted() -> bool:
        await backend.compact(await backend.compact())
        counts = [await _stream_messages(backend, w) for w in works]
        keep = _work_of(backend, retry.id)
        return all(n == 0 for w, n in zip(works, counts, strict=True) if w != keep)

    await eventually(compacted)
    assert METRICS.tasks["jetstream_compactions"] > purges  # (counted)
    assert await backend._queued(retry.id) is not None
    assert (await queue.get(retry.id)).status == "queued" and await queue.count() == 13


@pytest.mark.timeout(60)
async def test_compaction_waits_while_a_max_deliveries_advisory_waits(queue: TaskQueue) -> None:
    """The backend handling a max-deliveries advisory reads the message it names: while one
    waits in ``P_ADVISORIES`` unhandled (here one it cannot handle), nothing is compacted;
    once it is gone, the acked messages are."""
    backend = _backend(queue)
    backend.compact_interval = 3600.0  # (passes run by hand here)
    task = await queue.submit("t")
    [held] = await backend.take("w", capabilities=None, limit=1, lease=30)
    assert await backend.settle(("w", held.id, {"status": "succeeded", "result": 1}))
    work = _work_of(backend, task.id)
    [route] = backend._routes.values()

    async def acked() -> bool:
        return (await backend.js.consumer_info(work, route.consumer)).num_ack_pending == 0

    await eventually(acked)
    subject = f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{work}.bogus"
    await backend.js.publish(subject, b"{}")  # (no stream_seq: its handler fails, it stays)
    assert await _stream_messages(backend, backend.advisories) == 1
    marks = await backend.compact()
    marks = await backend.compact(marks)
    assert await _stream_messages(backend, work) == 1  # kept: an advisory waits
    await backend.js.purge_stream(backend.advisories)
    await backend.compact(marks)
    assert await _stream_messages(backend, work) == 0
    assert (await queue.get(task.id)).result == 1


@pytest.mark.timeout(60)
async def test_an_acked_message_delivered_again_as_new_is_dropped_not_run_again(
    queue: TaskQueue,
) -> None:
    """On a kept stream an acked message stays until compacted: a broker restarted from a
    consumer state older than its last acks (written up to 100 ms late) delivers it again as
    a first delivery. Messages stored before the backend (re)joined the broker have their
    record read first: a settled task is dropped as stale, not leased and run again. (The
    consumer made again here delivers its acked message again the same way.)"""
    backend = _backend(queue)
    task = await queue.submit("t", {"x": 1})
    [held] = await backend.take("w", capabilities=None, limit=1, lease=30)
    assert await backend.settle(("w", held.id, {"status": "succeeded", "result": 5}))
    work = _work_of(backend, task.id)
    [route] = backend._routes.values()

    async def acked() -> bool:
        info = await backend.js.consumer_info(work, route.consumer)
        return info.num_ack_pending == 0

    await eventually(acked)
    backend._fresh = None  # (disconnected: nothing trusted until rejoined)
    backend._rejoined()  # (the connection is back: the streams' last sequences noted)
    await eventually(lambda: _true(backend._fresh is not None))
    config = (await backend.js.consumer_info(work, route.consumer)).config
    await backend.js.delete_consumer(work, route.consumer)
    await backend.js.add_consumer(work, config)
    assert await backend.take("w", capabilities=None, limit=1, lease=30) == []
    got = await queue.get(task.id)
    assert got.status == "succeeded" and got.result == 5 and got.attempts == 1
    new = await queue.submit("t", {"x": 2})  # stored after: a first delivery, no read
    [fresh] = await backend.take("w", capabilities=None, limit=1, lease=30)
    assert fresh.id == new.id and fresh.attempts == 1


async def _true(value: bool) -> bool:
    return value


@pytest.mark.timeout(60)
async def test_a_prefix_made_with_work_queue_streams_keeps_them(
    jetstream: tuple[str, str],
) -> None:
    """A prefix whose work stream was made with work-queue retention (before 2026-12-07) is
    opened as it is: each ack deletes its message, nothing is compacted, every rule holds."""
    from nats.js.api import RetentionPolicy, StorageType, StreamConfig

    url, monitor = jetstream
    prefix = _prefix()
    first = await JetStreamTaskBackend.open(url, prefix=prefix, monitor=monitor, work_streams=1)
    try:  # (the old layout: the same stream, with work-queue retention)
        await first.js.delete_stream(first.work)
        await first.js.add_stream(
            StreamConfig(
                name=first.work,
                subjects=[f"{first.subjects}.r.>"],
                retention=RetentionPolicy.WORK_QUEUE,
                storage=StorageType.FILE,
                duplicate_window=120.0,
                allow_direct=True,
            )
        )
    finally:
        await first.close()
    backend = await JetStreamTaskBackend.open(url, prefix=prefix, monitor=monitor)
    queue = TaskQueue(backend)
    try:
        assert backend._kept == [False] and backend.works == [f"{prefix}_WORK"]
        tasks = [await queue.submit("t", {"i": i}) for i in range(3)]
        assert await _stream_messages(backend, backend.work) == 3
        got: list[TaskRecord] = []
        while len(got) < 3:
            got += await backend.take("w", capabilities=None, limit=3, lease=30)
        assert await backend.settle(("w", got[0].id, {"status": "succeeded", "result": 7}))
        run_at = backend.now() + timedelta(seconds=0.2)
        assert await backend.settle(("w", got[1].id, {"status": "queued", "run_at": run_at}))
        assert await backend.settle(("w", got[2].id, {"status": "dead", "last_error": "x"}))

        async def acked() -> bool:  # the work queue drops each acked (or termed) message
            return await _stream_messages(backend, backend.work) == 1

        await eventually(acked)
        await asyncio.sleep(0.3)
        [again] = await backend.take("w", capabilities=None, limit=1, lease=30)
        assert again.id == got[1].id and again.attempts == 2
        assert (await queue.get(got[0].id)).result == 7
        assert await queue.purge_dead() == 1 and await queue.count() == 2
        assert {t.id for t in tasks} >= {again.id}
    finally:
        await queue.close()


async def test_a_retry_is_the_same_message_nacked_with_the_backoff_delay(
    queue: TaskQueue,
) -> None:
    backend = _backend(queue)
    task = await queue.submit("t")
    [held] = await backend.take("w", capabilities=None, limit=1, lease=30)
    first = await backend._find(task.id)
    assert first is not None and first["status"] == "leased"
    run_at = backend.now() + timedelta(seconds=0.3)
    assert await backend.settle(("w", held.id, {"status": "queued", "run_at": run_at}))
    assert await backend.take("w", capabilities=None, limit=1, lease=30) == []  # not yet
    assert await backend.next_due() is not None
    await asyncio.sleep(0.4)
    [again] = await backend.take("w", capabilities=None, limit=1, lease=30)
    assert again.id == task.id and again.attempts == 2
    second = await backend._find(task.id)
    assert second is not None and second["_m"] == first["_m"]  # the same message
    assert await _stream_messages(backend, _work_of(backend, task.id)) == 1


@pytest.mark.timeout(60)
async def test_in_progress_keeps_a_long_task_from_being_redelivered(
    jetstream: tuple[str, str],
) -> None:
    url, monitor = jetstream
    backend = await JetStreamTaskBackend.open(url, prefix=_prefix(), monitor=monitor, ack_wait=1.0)
    queue = TaskQueue(backend)
    try:
        task = await queue.submit("long")
        runs: list[int] = []

        async def handle(t: TaskRecord) -> str:
            runs.append(t.attempts)
            await asyncio.sleep(2.5)  # 2.5 leases: renewed by in_progress (+WPI)
            return "done"

        async with (
            queue.worker(handle, lease=1.0, poll_interval=0.05),
            queue.worker(handle, lease=1.0, poll_interval=0.05),
        ):
            await eventually(lambda: _status_is(queue, task.id, "succeeded"), timeout=20)
        assert runs == [1]
        [route] = backend._routes.values()
        info = await backend.js.consumer_info(_work_of(backend, task.id), route.consumer)
        assert info.delivered.consumer_seq == 1  # never redelivered: the lease was renewed
    finally:
        await queue.close()


async def _status_is(queue: TaskQueue, task_id: str, status: str) -> bool:
    return (await queue.get(task_id)).status == status


@pytest.mark.timeout(60)
async def test_past_max_deliveries_the_advisory_dead_letters_the_task(queue: TaskQueue) -> None:
    backend = _backend(queue)
    task = await queue.submit("t", retry=RetryPolicy(max_attempts=1))  # max_deliver 3
    for attempt in (1, 2, 3):  # three holders die in turn: nobody settles
        await eventually(functools.partial(_taken, backend, attempt))

    async def dead_letterd() -> bool:  # the server gives up when a worker next asks
        assert await backend.take("w4", capabilities=None, limit=1, lease=0.2) == []
        return await _status_is(queue, task.id, "dead")

    await eventually(dead_letterd, timeout=20)
    dead = await queue.get(task.id)
    assert "max deliveries" in (dead.last_error or "") and dead.attempts == 3
    entries = await backend.js.get_last_msg(backend.dead, f"{backend.subjects}.dead")
    assert entries.data.decode() == task.id
    assert await _stream_messages(backend, _work_of(backend, task.id)) == 0
    assert [t.id for t in (await queue.dead_letters()).items] == [task.id]


async def _taken(backend: JetStreamTaskBackend, attempt: int) -> bool:
    got = await backend.take(f"w{attempt}", capabilities=None, limit=1, lease=0.2)
    return [t.attempts for t in got] == [attempt]


async def test_until_taken_a_task_is_its_message_then_the_lease_makes_its_record(
    queue: TaskQueue,
) -> None:
    """Submit writes one fsynced message; ``get`` and ``list`` read it there until a take."""
    from nats.js.errors import KeyNotFoundError

    backend = _backend(queue)
    task = await queue.submit("t", {"x": 1})
    with pytest.raises(KeyNotFoundError):
        await backend._rec(task.id).get(f"t.{task.id}")
    assert (await queue.get(task.id)).payload == {"x": 1}
    assert [t.id for t in (await queue.list(status="queued")).items] == [task.id]
    [held] = await backend.take("w", capabilities=None, limit=1, lease=30)
    assert held.id == task.id and held.payload == {"x": 1} and held.attempts == 1
    assert (await queue.get(task.id)).status == "leased"  # this process knows at once

    async def recorded() -> bool:  # everyone else after lease_write_delay
        try:
            entry = await backend._rec(task.id).get(f"t.{task.id}")
        except KeyNotFoundError:
            return False
        record = json.loads(entry.value)
        return bool(record["status"] == "leased" and record["lease_owner"] == "w")

    await eventually(recorded)
    assert await queue.count("queued") == 0 and await queue.count("leased") == 1


async def test_a_task_settled_within_the_lease_write_delay_is_written_once(
    queue: TaskQueue,
) -> None:
    backend = _backend(queue)
    task = await queue.submit("t")
    shard = f"KV_{backend.bucket}_{backend.shards.index(backend._rec(task.id))}"
    before = (await backend.js.stream_info(shard)).state.last_seq
    [held] = await backend.take("w", capabilities=None, limit=1, lease=30)
    assert await backend.settle(("w", held.id, {"status": "succeeded", "result": 7}))
    record = json.loads((await backend._rec(task.id).get(f"t.{task.id}")).value)
    assert record["status"] == "succeeded" and record["attempts"] == 1
    await asyncio.sleep(backend.lease_write_delay * 3)  # the delayed lease write is skipped
    assert (await backend.js.stream_info(shard)).state.last_seq == before + 1  # one write


async def test_idempotency_keys_hold_across_backends_and_outlast_the_duplicate_window(
    queue: TaskQueue, jetstream: tuple[str, str]
) -> None:
    backend = _backend(queue)
    other = await JetStreamTaskBackend.open(
        jetstream[0], prefix=backend.prefix, monitor=jetstream[1]
    )
    try:
        first = await queue.submit("mail", idempotency_key="k")
        again, created = await other.submit(
            TaskDraft(kind="mail", payload={}, run_at=other.now(), idempotency_key="k")
        )
        assert again.id == first.id and created is False
        # the key is a KV key until the task is purged, not the stream's 2-minute window
        info = await backend.js.stream_info(_work_of(backend, first.id))
        assert info.config.duplicate_window == 120.0
    finally:
        await other.close()


async def test_a_second_backend_on_the_same_server_sees_the_same_queue(
    queue: TaskQueue, jetstream: tuple[str, str]
) -> None:
    backend = _backend(queue)
    other = await JetStreamTaskBackend.open(
        jetstream[0], prefix=backend.prefix, monitor=jetstream[1]
    )
    try:
        task = await queue.submit("t", {"x": 1}, capabilities=["c"])
        seen: list[str] = []
        worker = TaskQueue(other).worker(
            lambda t: seen.append(t.id), capabilities={"c"}, poll_interval=0.05
        )
        async with worker:
            await wait_for(lambda: seen == [task.id])
        await eventually(lambda: _status_is(queue, task.id, "succeeded"))
    finally:
        await other.close()


async def test_an_unreachable_server_is_one_clear_error(jetstream: tuple[str, str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there now
    with pytest.raises(QueueUnavailableError, match=rf"cannot reach NATS at nats://.*:{port}"):
        await JetStreamTaskBackend.open(f"nats://127.0.0.1:{port}")
    with pytest.raises(QueueUnavailableError) as ei:  # a password never reaches the message
        await JetStreamTaskBackend.open(f"nats://u:hunter2@127.0.0.1:{port}")
    assert "hunter2" not in str(ei.value) and f"***@127.0.0.1:{port}" in str(ei.value)


@pytest.mark.timeout(60)
async def test_a_server_without_jetstream_is_one_clear_error(tmp_path: Path) -> None:
    from netsuke.manager.testing import NatsServer

    need_nats()
    server = NatsServer(workdir=tmp_path)
    url = await asyncio.to_thread(server.start)
    try:
        with pytest.raises(QueueUnavailableError, match="JetStream is not available"):
            await JetStreamTaskBackend.open(url)
    finally:
        server.stop()


@pytest.mark.timeout(60)
async def test_a_server_without_fsync_on_every_write_is_refused_or_warned(
    tmp_path: Path, jetstream: tuple[str, str]
) -> None:
    from netsuke.manager.testing import NatsServer

    need_nats()
    server = NatsServer(workdir=tmp_path, jetstream=True, sync_interval=None, monitor=True)
    url = await asyncio.to_thread(server.start)
    try:
        with pytest.raises(QueueDurabilityError, match="sync_interval: always"):
            await JetStreamTaskBackend.open(url, monitor=server.monitor_url)
        with capture_logs() as logs:
            backend = await JetStreamTaskBackend.open(
                url, monitor=server.monitor_url, durability="warn"
            )
        await backend.close()
        [warned] = [e for e in logs if e["event"] == "queue.jetstream_not_durable"]
        assert warned["log_level"] == "error" and "sync_interval" in warned["problem"]
    finally:
        server.stop()
    with socket.socket() as s:  # settings nobody can read: refused under require
        s.bind(("127.0.0.1", 0))
        nowhere = f"http://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(QueueDurabilityError, match="could not be read"):
        await JetStreamTaskBackend.open(jetstream[0], monitor=nowhere)


@pytest.mark.timeout(120)
async def test_a_killed_worker_and_a_killed_broker_lose_no_acknowledged_task(
    tmp_path: Path,
) -> None:
    from netsuke.manager.testing import NatsServer

    need_nats()
    server = NatsServer(workdir=tmp_path, jetstream=True, monitor=True)
    url = await asyncio.to_thread(server.start)
    prefix = "CRASH"
    marker = tmp_path / "taken"
    try:
        queue = TaskQueue(
            await JetStreamTaskBackend.open(url, prefix=prefix, monitor=server.monitor_url)
        )
        task = await queue.submit("important", {"n": 42})
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(HERE / "crash_worker_jetstream.py"), url, prefix,
            server.monitor_url, str(marker),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            async with asyncio.timeout(30):
                while not marker.exists():
                    assert proc.returncode is None, "the worker process exited early"
                    await asyncio.sleep(0.02)
            assert marker.read_text() == f"{task.id} 1"
            # its lease is on disk lease_write_delay after the take (SIGKILL before that: the
            # task is redelivered all the same, its attempt counted: see the lease-lost test)
            await eventually(lambda: _status_is(queue, task.id, "leased"))
            proc.send_signal(signal.SIGKILL)
            assert await asyncio.wait_for(proc.wait(), 10) == -signal.SIGKILL
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        acked = await asyncio.gather(*(queue.submit("bulk", {"i": i}) for i in range(200)))
        await queue.close()
        await asyncio.to_thread(server.kill)  # the broker dies right after acknowledging
        await asyncio.to_thread(server.start)  # same port, same store
        queue = TaskQueue(
            await JetStreamTaskBackend.open(url, prefix=prefix, monitor=server.monitor_url)
        )
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
            await eventually(lambda: _count_is(queue, "succeeded", len(acked) + 1))
        finally:
            await queue.close()
    finally:
        server.stop()


async def _count_is(queue: TaskQueue, status: str, n: int) -> bool:
    return await queue.count(status) == n  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("nats://", "needs a host"),
        ("nats://h:99999", "port"),
        ("nats://h:4222?durability=maybe", "durability"),
        ("nats://h:4222?prefix=a.b", "prefix"),
        ("nats://h:4222?ack_wait=0", "ack_wait"),
        ("nats://h:4222?work_streams=0", "work_streams"),
        ("nats://h:4222?work_streams=four", "work_streams"),
        ("nats://h:4222?monitor=ftp://x", "monitor"),
        ("nats://h:4222?nope=1", "unknown"),
    ],
)
def test_a_bad_nats_queue_url_is_refused_naming_the_problem(url: str, reason: str) -> None:
    from netsuke.routing import check_queue_url

    with pytest.raises(ValueError, match=reason):
        check_queue_url(url)


def test_good_nats_queue_urls_pass() -> None:
    from netsuke.routing import check_queue_url

    for url in (
        "nats://127.0.0.1:4222",
        "nats://u:p@h:4222?durability=warn&prefix=APP_1&ack_wait=60&monitor=http://h:8222",
        "nats://h:4222?work_streams=1",
    ):
        assert check_queue_url(url) == url


async def test_listing_pages_through_every_record_and_skips_purged_ones(
    queue: TaskQueue,
) -> None:
    backend = _backend(queue)
    backend.scan_batch = 3  # several direct-get batches per bucket
    tasks = await asyncio.gather(*(queue.submit("n", {"i": i}) for i in range(40)))
    got = []
    while len(got) < 40:
        got += await backend.take("w", capabilities=None, limit=40, lease=30)
    for t in got[:30]:
        assert await backend.settle(("w", t.id, {"status": "succeeded", "result": 1}))
    for t in got[30:]:
        assert await backend.settle(("w", t.id, {"status": "dead", "last_error": "x"}))
    assert await queue.count("succeeded") == 30 and await queue.count("dead") == 10
    listed = (await queue.list(status="succeeded", limit=100)).items
    assert len(listed) == 30 and len(tasks) == 40
    assert await queue.purge_dead([t.id for t in got[30:35]]) == 5
    assert await queue.count("dead") == 5 and await queue.count() == 35


@pytest.mark.timeout(120)
async def test_a_running_worker_rides_out_a_broker_restart(tmp_path: Path) -> None:
    """The broker is SIGKILLed and restarted under a running worker and producer: every task
    acknowledged before, during (the submits that succeed) and after is handled."""
    from netsuke.manager.testing import NatsServer

    need_nats()
    server = NatsServer(workdir=tmp_path, jetstream=True, monitor=True)
    url = await asyncio.to_thread(server.start)
    queue = TaskQueue(await JetStreamTaskBackend.open(url, monitor=server.monitor_url))
    seen: set[str] = set()
    try:
        async with queue.worker(lambda t: seen.add(t.id), poll_interval=0.05, concurrency=4):
            before = [await queue.submit("t", {"i": i}) for i in range(20)]
            await wait_for(lambda: {t.id for t in before} <= seen, timeout=20)
            queued = [await queue.submit("t", {"i": i}) for i in range(20)]
            await asyncio.to_thread(server.kill)
            await asyncio.to_thread(server.start)  # same port and store
            after: list[TaskRecord] = []
            async with asyncio.timeout(30):
                while len(after) < 20:
                    try:
                        after.append(await queue.submit("t", {"j": len(after)}))
                    except Exception:  # reconnecting: not acknowledged, so not owed
                        await asyncio.sleep(0.1)
            owed = {t.id for t in [*before, *queued, *after]}
            await wait_for(lambda: owed <= seen, timeout=40)
    finally:
        await queue.close()
        server.stop()


async def test_a_lease_lost_before_its_record_was_written_still_counts_an_attempt(
    queue: TaskQueue, jetstream: tuple[str, str]
) -> None:
    backend = _backend(queue)
    doomed = await JetStreamTaskBackend.open(
        jetstream[0], prefix=backend.prefix, monitor=jetstream[1], lease_write_delay=60
    )
    try:
        task = await queue.submit("t")
        held: list[TaskRecord] = []

        async def first() -> bool:  # (the new route reaches doomed through its KV watch)
            held.extend(await doomed.take("doomed", capabilities=None, limit=1, lease=0.2))
            return bool(held)

        await eventually(first)
        assert [t.attempts for t in held] == [1]
        await doomed.nc.close()  # dies: its lease record was never written
        assert (await queue.get(task.id)).status == "queued"

        async def again() -> bool:
            got = await backend.take("w", capabilities=None, limit=1, lease=30)
            assert [t.attempts for t in got] in ([], [2])
            return bool(got)

        await eventually(again)
    finally:
        await doomed.close()


@pytest.mark.timeout(90)
async def test_several_work_streams_spread_tasks_and_keep_every_rule(
    jetstream: tuple[str, str],
) -> None:
    """``work_streams=4``: tasks spread over four work streams by id (their fsyncs run in
    parallel); listing, taking, acking and the max-deliveries dead letter work on each."""
    url, monitor = jetstream
    backend = await JetStreamTaskBackend.open(
        url, prefix=_prefix(), monitor=monitor, work_streams=4
    )
    queue = TaskQueue(backend)
    try:
        assert len(backend.works) == 4
        tasks = await queue.submit_many("t", [{"n": i} for i in range(40)], capabilities=["c"])
        counts = [await _stream_messages(backend, w) for w in backend.works]
        assert sum(counts) == 40 and all(c > 0 for c in counts)  # (40 ids: each stream some)
        assert await queue.count("queued") == 40
        assert (await queue.get(tasks[7].id)).payload == {"n": 7}
        seen: list[int] = []
        async with queue.worker(lambda t: seen.append(t.payload["n"]), capabilities={"c"}):
            await wait_for(lambda: len(seen) == 40, timeout=30)
        assert sorted(seen) == list(range(40))
        assert await queue.count("succeeded") == 40
        # a task past its max deliveries, on a stream other than the first: dead-lettered
        while True:
            doomed = await queue.submit("t", retry=RetryPolicy(max_attempts=1))
            if backend._shard(doomed.id) != 0:  # (others are taken below with it)
                break
        for attempt in (1, 2, 3):
            await eventually(functools.partial(_taken_id, backend, doomed.id, attempt))

        async def dead() -> bool:
            await backend.take("w4", capabilities=None, limit=8, lease=0.2)
            return await _status_is(queue, doomed.id, "dead")

        await eventually(dead, timeout=30)
        assert "max deliveries" in ((await queue.get(doomed.id)).last_error or "")
    finally:
        await queue.close()


async def _taken_id(backend: JetStreamTaskBackend, task_id: str, attempt: int) -> bool:
    got = await backend.take(f"w{attempt}", capabilities=None, limit=8, lease=0.2)
    return any(t.id == task_id and t.attempts == attempt for t in got)


@pytest.mark.timeout(60)
async def test_a_prefix_keeps_the_number_of_work_streams_it_was_made_with(
    jetstream: tuple[str, str],
) -> None:
    """A new prefix gets ``DEFAULT_WORK_STREAMS`` (or the number asked for), recorded; later
    backends on it use that number, and one asking for another is refused in one line (tasks
    map to streams by id: a backend with another number would leave some undelivered)."""
    from netsuke.routing._jetstream_backend import DEFAULT_WORK_STREAMS

    url, monitor = jetstream
    made = await JetStreamTaskBackend.open(url, prefix=_prefix(), monitor=monitor)
    one = await JetStreamTaskBackend.open(url, prefix=_prefix(), monitor=monitor, work_streams=1)
    try:
        assert len(made.works) == DEFAULT_WORK_STREAMS == 4 and len(one.works) == 1
        again = await JetStreamTaskBackend.open(url, prefix=one.prefix, monitor=monitor)
        try:
            assert again.works == one.works  # the recorded number, not the default
            task = await TaskQueue(one).submit("t")

            async def taken() -> bool:  # (once its route reached this backend's watch)
                got = await again.take("w", capabilities=None, limit=1, lease=30)
                return [t.id for t in got] == [task.id]

            await eventually(taken)
        finally:
            await again.close()
        with pytest.raises(QueueUnavailableError, match="has 4 work streams, not 2"):
            await JetStreamTaskBackend.open(
                url, prefix=made.prefix, monitor=monitor, work_streams=2
            )
        # a prefix made before the number was recorded keeps the streams it has
        await made.kv.purge("cfg.work_streams")
        older = await JetStreamTaskBackend.open(url, prefix=made.prefix, monitor=monitor)
        try:
            assert older.works == made.works
            assert int((await older.kv.get("cfg.work_streams")).value) == 4
        finally:
            await older.close()
    finally:
        await made.close()
        await one.close()


@pytest.mark.timeout(60)
async def test_records_keep_values_orjson_cannot_write_exactly(queue: TaskQueue) -> None:
    """Records are written by orjson when it is exact; an integer beyond 64 bits, NaN or an
    infinity (in the payload or the result) is written and read back by the standard library,
    so every value round-trips as on SQL."""
    import math

    big = 2**70
    plain = await queue.submit("t", {"n": 1})
    odd = await queue.submit("t", {"big": big, "nan": float("nan"), "s": "Infinity?"})
    results = {plain.id: {"ok": [1.5, None]}, odd.id: {"big": big, "inf": float("-inf")}}
    done: list[str] = []

    def handle(task: TaskRecord) -> object:
        done.append(task.id)
        return results[task.id]

    async with queue.worker(handle):
        await wait_for(lambda: len(done) == 2, timeout=20)
    got = await queue.get(odd.id)
    assert got.payload["big"] == big and math.isnan(got.payload["nan"])
    assert got.result["big"] == big and got.result["inf"] == float("-inf")
    assert (await queue.get(plain.id)).result == {"ok": [1.5, None]}
    listed = {t.id: t for t in (await queue.list(status="succeeded")).items}
    assert listed[odd.id].payload["big"] == big
