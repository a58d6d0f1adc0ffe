"""The event bus: patterns, order, bounded buffers, drops, listeners."""

from __future__ import annotations

import asyncio
import time

import pytest

from netsuke import Runtime, Supervisor, SupervisorSpec
from netsuke.events import TOPICS, EventBus, SubscriptionClosed, topics
from netsuke.kernel import ChildSpec, Process
from netsuke.observability import render_metrics


async def test_subscriber_gets_matching_topics_in_order() -> None:
    bus = EventBus("n1")
    agents = bus.subscribe("agent.*")
    everything = bus.subscribe()
    bus.publish("agent.started", agent="a")
    bus.publish("task.queued", task="t1")
    bus.publish("agent.stopped", agent="a", reason="normal")
    got = [agents.get_nowait(), agents.get_nowait(), agents.get_nowait()]
    assert [e.topic if e else None for e in got] == ["agent.started", "agent.stopped", None]
    assert [e.seq for e in [everything.get_nowait() for _ in range(3)] if e] == [1, 2, 3]
    e = await agents.get(timeout=0.1) if agents.pending() else None
    assert e is None
    assert got[1] is not None and got[1].data == {"agent": "a", "reason": "normal"}
    assert got[0] is not None and got[0].id == f"n1-{bus.boot}-1"
    assert got[0].to_dict()["topic"] == "agent.started"


async def test_event_ids_are_unique_across_restarts_of_a_node() -> None:
    ids = []
    for _ in range(3):  # the same node started three times
        async with Runtime("local") as rt:
            ids.append(rt.events.publish("agent.started", agent="a").id)
    assert len(set(ids)) == 3
    assert all(i.startswith("local-") and i.endswith("-1") for i in ids)


async def test_slow_subscriber_never_blocks_producer_and_drops_are_counted() -> None:
    bus = EventBus(buffer=10)
    slow = bus.subscribe("turn.*")
    fast = bus.subscribe("turn.*", buffer=100_000)
    t0 = time.perf_counter()
    for i in range(50_000):
        bus.publish("turn.finished", n=i)
    elapsed = time.perf_counter() - t0
    assert slow.pending() == 10 and slow.dropped == 49_990
    assert fast.pending() == 50_000 and fast.dropped == 0
    assert bus.dropped == 49_990
    # drop_oldest keeps the newest events
    first = slow.get_nowait()
    assert first is not None and first.data["n"] == 49_990
    assert elapsed < 5  # generous: the point is that publish never waits for the reader
    assert b'netsuke_events_dropped_total{node="local"}' in render_metrics()


async def test_drop_newest_keeps_the_oldest() -> None:
    bus = EventBus()
    sub = bus.subscribe("x", buffer=2, overflow="drop_newest")
    for i in range(5):
        bus.publish("x", n=i)
    assert [sub.get_nowait().data["n"] for _ in range(2)] == [0, 1]  # type: ignore[union-attr]
    assert sub.dropped == 3


async def test_get_waits_for_next_event_and_close_ends_iteration() -> None:
    bus = EventBus()
    sub = bus.subscribe("a.*")
    received: list[str] = []

    async def reader() -> None:
        async for ev in sub:
            received.append(ev.topic)

    task = asyncio.create_task(reader())
    await asyncio.sleep(0)
    bus.publish("a.one")
    bus.publish("a.two")
    await asyncio.sleep(0)
    sub.close()
    await asyncio.wait_for(task, 1)
    assert received == ["a.one", "a.two"]
    with pytest.raises(SubscriptionClosed):
        await sub.get()
    bus.publish("a.three")  # closed subscriptions receive nothing
    assert sub.pending() == 0


async def test_get_timeout() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    with pytest.raises(TimeoutError):
        await sub.get(timeout=0.01)


async def test_listener_runs_handler_and_survives_its_errors() -> None:
    bus = EventBus()
    seen: list[int] = []

    async def handler(ev: object) -> None:
        n = ev.data["n"]  # type: ignore[attr-defined]
        if n == 1:
            raise RuntimeError("boom")
        seen.append(n)

    bus.listen("x", handler)
    for i in range(3):
        bus.publish("x", n=i)
    for _ in range(10):
        await asyncio.sleep(0)
    assert seen == [0, 2]
    assert bus.handler_errors == 1
    await bus.aclose()
    assert bus.subscriptions() == []


@pytest.mark.parametrize("topic", ["", "Agent.Started", "a..b", "a b", "a.*"])
async def test_bad_topic_is_refused(topic: str) -> None:
    bus = EventBus()
    with pytest.raises(ValueError, match="topic"):
        bus.publish(topic)
    assert bus.published == 0


@pytest.mark.parametrize("pattern", ["", "a b", "A.*"])
async def test_bad_pattern_is_refused(pattern: str) -> None:
    with pytest.raises(ValueError, match="pattern"):
        EventBus().subscribe(pattern)


def test_catalogue_topics_are_valid() -> None:
    bus = EventBus()
    for topic in TOPICS:
        bus.publish(topic)
    assert bus.published == len(TOPICS)


class _Crashy(Process):
    def handle_cast(self, msg: object) -> None:
        raise RuntimeError("crash")


async def test_runtime_bus_sees_supervisor_restart() -> None:
    async with Runtime() as rt:
        sub = rt.events.subscribe("process.*")
        sup = await rt.start(
            Supervisor,
            SupervisorSpec(children=[ChildSpec(_Crashy, None, id="w", name="crashy")]),
        )
        assert sup is not None
        rt.cast("crashy", "go")
        ev = await sub.get(timeout=2)
        assert ev.topic == topics.PROCESS_RESTARTED
        assert ev.data["child"] == "'w'"
    assert sub.closed  # the runtime closed its own bus
