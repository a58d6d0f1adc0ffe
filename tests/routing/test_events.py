"""The queue publishes task.* events; a subscriber that never reads does not slow it."""

from __future__ import annotations

import asyncio
import time

from netsuke.events import EventBus
from netsuke.routing import MemoryTaskBackend, TaskQueue, TaskRecord

from .helpers import wait_for

N = 2000


async def _produce_and_consume(bus: EventBus) -> float:
    queue = TaskQueue(MemoryTaskBackend(), events=bus)
    done: list[str] = []

    def handle(t: TaskRecord) -> None:
        done.append(t.id)

    began = time.process_time()  # this process's CPU: other processes on the machine don't count
    async with queue.worker(handle, concurrency=64):
        for i in range(N):
            await queue.submit("t", {"i": i})
        await wait_for(lambda: len(done) == N, timeout=60)
    elapsed = time.process_time() - began
    assert await queue.count("succeeded") == N
    return elapsed


async def test_a_subscriber_that_never_reads_does_not_slow_the_queue() -> None:
    baseline = min([await _produce_and_consume(EventBus("a")) for _ in range(2)])
    bus = EventBus("b")
    stuck = bus.subscribe("task.*", buffer=16)  # never read
    also_stuck = bus.subscribe("*", buffer=1, overflow="drop_newest")
    loaded = min([await _produce_and_consume(bus) for _ in range(2)])
    # 3 events per task (queued, started, succeeded); the buffers stay bounded, drops counted
    assert stuck.pending() == 16 and also_stuck.pending() == 1
    assert stuck.dropped == 2 * 3 * N - 16
    assert bus.dropped == stuck.dropped + also_stuck.dropped
    assert loaded < baseline * 2 + 0.2, (loaded, baseline)


async def test_every_state_change_of_a_task_is_published_in_order() -> None:
    bus = EventBus("c")
    sub = bus.subscribe("task.*")
    queue = TaskQueue(MemoryTaskBackend(), events=bus)
    task = await queue.submit("t", capabilities=["x"], priority=3)
    async with queue.worker(lambda t: "ok", capabilities=["x"]):
        await wait_for(lambda: sub.pending() == 3)
    events = [sub.get_nowait() for _ in range(3)]
    assert [e.topic for e in events if e] == ["task.queued", "task.started", "task.succeeded"]
    queued = events[0]
    assert queued is not None
    assert queued.data["task"] == task.id and queued.data["capabilities"] == ["x"]
    assert queued.data["priority"] == 3
    await asyncio.sleep(0)


async def test_task_events_are_counted_in_prometheus() -> None:
    from netsuke.observability import render_metrics

    def value(text: str, sample: str) -> float:
        for line in text.splitlines():
            if line.startswith(sample + " "):
                return float(line.split()[-1])
        return 0.0

    before = render_metrics().decode()
    queue = TaskQueue(MemoryTaskBackend())
    await queue.submit("t")
    done: list[str] = []
    async with queue.worker(lambda t: done.append(t.id)):
        await wait_for(lambda: bool(done))
        await asyncio.sleep(0.01)
    after = render_metrics().decode()
    for event in ("submitted", "started", "succeeded"):
        sample = f'netsuke_tasks_total{{event="{event}"}}'
        assert value(after, sample) == value(before, sample) + 1
