"""Concurrency: a turn runs in a task while the server answers; busy, cancel, timeout;
get-or-start under 100 concurrent callers; 1,000 sessions chatting at once."""

from __future__ import annotations

import asyncio

import pytest

from netsuke import Runtime
from netsuke.agents import (
    AgentBusyError,
    AgentConfig,
    Agents,
    TurnCancelledError,
    TurnTimeoutError,
    agent_load,
)
from netsuke.store import Store

from .helpers import echo_model, slow_model


async def test_server_answers_status_and_history_while_a_turn_runs(
    agents: Agents, rt: Runtime
) -> None:
    started, release = asyncio.Event(), asyncio.Event()
    model = slow_model(0, started, release=release)  # the model answers only when released
    pid = await agents.start_agent("slow", AgentConfig(name="slow", model=model))
    turn = asyncio.ensure_future(agents.run("slow", "think"))
    await asyncio.wait_for(started.wait(), 5)
    status = await asyncio.wait_for(agents.status("slow"), 5)
    assert status["state"] == "running" and status["execution"] is not None
    assert agent_load(rt, pid) == 1
    assert await asyncio.wait_for(agents.history("slow"), 5) == []
    assert not turn.done()  # answered while the model call is still in flight
    release.set()
    assert await turn == "slow think"
    assert agent_load(rt, pid) == 0 and len(await agents.history("slow")) == 2


async def test_turns_queue_in_order_and_overflow_is_busy(agents: Agents, rt: Runtime) -> None:
    started = asyncio.Event()
    cfg = AgentConfig(name="q", model=slow_model(0.2, started), max_queue=2)
    pid = await agents.start_agent("q", cfg)
    first = asyncio.ensure_future(agents.run("q", "1"))
    await asyncio.wait_for(started.wait(), 5)
    queued = [asyncio.ensure_future(agents.run("q", str(i))) for i in (2, 3)]
    await asyncio.sleep(0.01)
    assert agent_load(rt, pid) == 3
    with pytest.raises(AgentBusyError) as e:
        await agents.run("q", "4")
    assert e.value.limit == 2 and e.value.agent == "q"
    assert [await first, *[await q for q in queued]] == ["slow 1", "slow 2", "slow 3"]
    history = await agents.history("q")
    assert len(history) == 6 and rt.alive(pid)


async def test_cancel_stops_the_model_call_and_leaves_memory_unchanged(
    agents: Agents, rt: Runtime
) -> None:
    started = asyncio.Event()
    cancelled: list[int] = []
    helper_done: list[str] = []

    async def research(topic: str) -> str:
        """Research a topic for a long time."""
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            helper_done.append("tool cancelled")
            raise
        return "done"

    cfg = AgentConfig(name="c", tools=[research])
    pid = await agents.start_agent("c", cfg)
    await agents.run("c", "hello")
    turn = asyncio.ensure_future(agents.run("c", "research 'otters'"))
    await asyncio.wait_for(started.wait(), 5)
    assert await agents.cancel("c") is True
    with pytest.raises(TurnCancelledError) as e:
        await turn
    for _ in range(100):  # the tool's task is cancelled with the turn (it unwinds at once)
        if helper_done:
            break
        await asyncio.sleep(0.01)
    assert helper_done == ["tool cancelled"]
    assert rt.alive(pid) and len(await agents.history("c")) == 2
    assert await agents.cancel("c") is False
    assert "turn 2" in await agents.run("c", "still there?")
    await asyncio.sleep(0.05)
    row = await agents.store.executions.get(e.value.execution_id or "")
    assert row.status == "cancelled"

    slow_started = asyncio.Event()
    await agents.start_agent(
        "m", AgentConfig(name="m", model=slow_model(30, slow_started, cancelled))
    )
    t = asyncio.ensure_future(agents.run("m", "x"))
    await asyncio.wait_for(slow_started.wait(), 5)
    await agents.cancel("m")
    with pytest.raises(TurnCancelledError):
        await t
    for _ in range(100):
        if cancelled:
            break
        await asyncio.sleep(0.01)
    assert cancelled == [1]


async def test_a_turn_over_its_timeout_fails_and_the_agent_lives_on(
    agents: Agents, rt: Runtime
) -> None:
    cfg = AgentConfig(name="t", model=slow_model(30), turn_timeout=0.2)
    pid = await agents.start_agent("t", cfg)
    with pytest.raises(TurnTimeoutError) as e:
        await agents.run("t", "x")
    assert e.value.timeout == 0.2 and rt.alive(pid)
    assert await agents.history("t") == []
    status = await agents.status("t")
    assert status["state"] != "running"


async def test_a_hundred_concurrent_get_or_start_callers_get_one_session(
    agents: Agents, rt: Runtime
) -> None:
    cfg = AgentConfig(name="support", model=echo_model())
    refs = await asyncio.gather(*(agents.start_session("support", "u1", cfg) for _ in range(100)))
    assert {r.pid for r in refs} == {refs[0].pid} and refs[0].session_id == "support-u1"
    assert agents.count_agents() == 1
    conv = await agents.store.conversations.list(agent_name="support")
    assert len(conv.items) == 1


@pytest.mark.timeout(120)
async def test_a_thousand_sessions_chat_at_once_with_isolated_memories(
    agents: Agents, store: Store
) -> None:
    cfg = AgentConfig(name="chat")
    n = 1000
    refs = await asyncio.gather(*(agents.start_session("chat", f"u{i}", cfg) for i in range(n)))
    first = await asyncio.gather(
        *(agents.run(r.session_id, f"I am {i}") for i, r in enumerate(refs))
    )
    second = await asyncio.gather(*(agents.run(r.session_id, "who am I?") for r in refs))
    for i, reply in enumerate(second):
        assert f"'I am {i}'" in reply and "turn 2" in reply, reply
    assert all(f"I am {i}'" in first[i] for i in range(n))
    for i in (0, 499, 999):
        assert len(await store.conversations.history(f"chat-u{i}")) == 4
