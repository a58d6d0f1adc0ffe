"""Crash and restore (SQLite and PostgreSQL), owners, idle hibernation and eviction, stored
definitions, memory policy."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    SystemPromptPart,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)

from netsuke import Runtime
from netsuke.agents import AgentConfig, Agents, MemoryPolicy
from netsuke.store import Store
from netsuke.store.testing import TemporaryPostgres
from tests.conftest import MIGRATED_TEMPLATE

from .helpers import echo_model


@pytest.fixture(params=["sqlite", "postgres"])
def any_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'crash.db'}"
    server: TemporaryPostgres = request.getfixturevalue("postgres_server")
    return server.create_database(template=MIGRATED_TEMPLATE)


@pytest.fixture
async def any_store(any_url: str) -> AsyncIterator[Store]:
    async with Store.open(any_url, migrate=True) as s:
        yield s


async def test_a_crashed_session_is_restarted_and_sees_its_whole_history(any_store: Store) -> None:
    async with Runtime(shutdown_timeout=5.0) as rt:
        agents = await Agents.start(rt, any_store)
        sid, pid = await agents.start_session("support", "u1", AgentConfig(name="support"))
        await agents.run(sid, "my order is #1234")
        await agents.run(sid, "it is late")
        sub = rt.events.subscribe("agent.restarted")
        rt.exit(pid, RuntimeError("boom"))
        await asyncio.wait_for(sub.get(), 5)
        new_pid = agents.whereis(sid)
        assert new_pid is not None and new_pid != pid
        reply = await agents.run(sid, "where is it?")
        assert "turn 3" in reply and "it is late" in reply
        assert len(await agents.history(sid)) == 6
        assert (await agents.status(sid))["restarts"] == 1
    # a new node over the same store: the conversation is all there
    async with Runtime(shutdown_timeout=5.0) as rt2:
        agents2 = await Agents.start(rt2, any_store)
        sid2, _ = await agents2.start_session("support", "u1", AgentConfig(name="support"))
        assert "turn 4" in await agents2.run(sid2, "hello again")


async def test_a_crash_during_a_turn_fails_that_call_and_keeps_memory(
    agents: Agents, rt: Runtime
) -> None:
    started = asyncio.Event()

    async def slow(x: str) -> str:
        """Slow tool."""
        started.set()
        await asyncio.sleep(30)
        return x

    sid, pid = await agents.start_session("s", "u", AgentConfig(name="s", tools=[slow]))
    await agents.run(sid, "hi")
    turn = asyncio.ensure_future(agents.run(sid, "slow 'x'"))
    await asyncio.wait_for(started.wait(), 5)
    rt.exit(pid, RuntimeError("boom"))
    with pytest.raises(Exception) as e:
        await turn
    assert type(e.value).__name__ == "ProcessExitedError"
    for _ in range(100):
        if agents.whereis(sid) not in (None, pid):
            break
        await asyncio.sleep(0.01)
    assert "turn 2" in await agents.run(sid, "still here")


async def test_owner_exit_stops_the_agent(agents: Agents, rt: Runtime) -> None:
    with pytest.raises(ConnectionError):
        async with rt.scope() as liveview:
            pid = await agents.start_agent(
                "chat:user:42", AgentConfig(name="chat"), owner=liveview.pid
            )
            await agents.run("chat:user:42", "Hello!")
            raise ConnectionError("tab closed")
    await asyncio.wait_for(rt.wait_exit(pid), 5)
    assert agents.whereis("chat:user:42") is None and agents.count_agents() == 0


async def test_owner_exit_hibernates_under_that_policy_and_a_new_owner_attaches(
    agents: Agents, rt: Runtime
) -> None:
    cfg = AgentConfig(name="chat", owner_policy="hibernate")
    async with rt.scope() as first:
        sid, pid = await agents.start_session("chat", "u9", cfg, owner=first.pid)
        await agents.run(sid, "remember me")
    await asyncio.sleep(0.05)
    status = await agents.status(sid)
    assert rt.alive(pid) and status["state"] == "hibernated" and status["owner"] is None
    async with rt.scope() as second:
        ref = await agents.start_session("chat", "u9", cfg, owner=second.pid)
        assert ref.pid == pid
        assert (await agents.status(sid))["owner"] == repr(second.pid)
        assert "remember me" in await agents.run(sid, "who am I?")
    stop_cfg = AgentConfig(name="chat2")
    async with rt.scope() as third:
        sid3, pid3 = await agents.start_session("chat2", "u1", stop_cfg)
        await agents.attach_owner(sid3, third.pid)
    await asyncio.wait_for(rt.wait_exit(pid3), 5)


async def test_idle_sessions_hibernate_then_leave_memory_and_come_back(
    agents: Agents, rt: Runtime
) -> None:
    cfg = AgentConfig(name="idle", idle_hibernate=0.1, idle_evict=0.3)
    sub = rt.events.subscribe("agent.*")
    sid, pid = await agents.start_session("idle", "u1", cfg)
    await agents.run(sid, "first words")
    await asyncio.sleep(0.2)
    assert (await agents.status(sid))["state"] == "hibernated"
    for _ in range(100):
        if agents.whereis(sid) is None:
            break
        await asyncio.sleep(0.02)
    assert agents.whereis(sid) is None and agents.count_evicted() == 1
    assert (await agents.status(sid))["state"] == "evicted"
    reply = await agents.run(sid, "are you back?")
    assert "turn 2" in reply and "first words" in reply
    assert agents.whereis(sid) not in (None, pid) and agents.count_evicted() == 0
    seen = set()
    for _ in range(10):
        try:
            seen.add((await asyncio.wait_for(sub.get(), 0.2)).topic)
        except TimeoutError:
            break
    assert {"agent.hibernated", "agent.evicted", "agent.started"} <= seen


async def test_start_an_agent_from_its_stored_definition(agents: Agents, store: Store) -> None:
    await store.agents.create(
        {
            "name": "search",
            "system_prompt": "Find things",
            "capabilities": ["search"],
            "config": {"turn_timeout": 9, "max_messages": 4},
        }
    )
    pid = await agents.start_defined("search")
    status = await agents.status("search")
    assert status["agent"] == "search" and agents.rt.registry.meta("search")["capabilities"] == [
        "search"
    ]
    assert "[offline]" in await agents.run(pid, "find otters")
    spec = await store.factory.spec("search")
    cfg = AgentConfig.from_spec(spec)
    assert cfg.turn_timeout == 9 and cfg.memory.max_messages == 4 and cfg.version == 1
    spec2, pid2 = await agents.register_agent({"name": "helper", "system_prompt": "Help"})
    assert spec2.name == "helper" and pid2 is not None and agents.whereis("helper") == pid2


def _turn(i: int, tool: bool) -> list[ModelMessage]:
    msgs: list[ModelMessage] = [ModelRequest(parts=[UserPromptPart(f"q{i}")])]
    if tool:
        msgs.append(ModelResponse(parts=[ToolCallPart("t", {"i": i}, tool_call_id=f"c{i}")]))
        msgs.append(ModelRequest(parts=[ToolReturnPart("t", i, tool_call_id=f"c{i}")]))
    msgs.append(ModelResponse(parts=[TextPart(f"a{i}")]))
    return msgs


@settings(max_examples=60, deadline=None)
@given(
    tools=st.lists(st.booleans(), min_size=1, max_size=12),
    max_messages=st.integers(1, 30),
    max_tokens=st.one_of(st.none(), st.integers(1, 200)),
)
def test_memory_policy_drops_whole_turns_and_never_orphans_tool_calls(
    tools: list[bool], max_messages: int, max_tokens: int | None
) -> None:
    history: list[ModelMessage] = []
    for i, t in enumerate(tools):
        history.extend(_turn(i, t))
    first = history[0]
    assert isinstance(first, ModelRequest)
    history[0] = ModelRequest(parts=[SystemPromptPart("sys"), *first.parts])
    kept = MemoryPolicy(max_messages=max_messages, max_tokens=max_tokens).apply(history)
    assert kept, "the newest turn is always kept"
    assert isinstance(kept[0], ModelRequest) and isinstance(kept[0].parts[0], SystemPromptPart)
    assert any(isinstance(p, UserPromptPart) for p in kept[0].parts)
    calls = {p.tool_call_id for m in kept for p in m.parts if isinstance(p, ToolCallPart)}
    returns = {p.tool_call_id for m in kept for p in m.parts if isinstance(p, ToolReturnPart)}
    assert calls == returns
    assert kept[-1] == history[-1]
    n_turns = sum(
        1
        for m in kept
        if isinstance(m, ModelRequest) and any(isinstance(p, UserPromptPart) for p in m.parts)
    )
    if n_turns > 1:
        assert len(kept) <= max_messages


async def test_a_memory_window_limits_what_the_model_sees(agents: Agents) -> None:
    seen: list[int] = []

    async def fn(messages: list[ModelMessage], info: object) -> ModelResponse:
        seen.append(len(messages))
        return ModelResponse(parts=[TextPart("ok")])

    from pydantic_ai.models.function import FunctionModel

    cfg = AgentConfig(name="win", model=FunctionModel(fn), memory=MemoryPolicy(max_messages=4))
    await agents.start_agent("win", cfg)
    for i in range(5):
        await agents.run("win", f"m{i}")
    assert seen == [1, 3, 5, 5, 5]
    assert len(await agents.history("win")) == 10
    _ = echo_model


async def test_turns_keep_one_idle_timer_and_it_waits_for_the_last_turn(
    agents: Agents, rt: Runtime
) -> None:
    """The idle timer is not cancelled and re-armed per turn: a turn moves its due time; a
    timer that fires before the due time waits for the rest; at the due time the session
    hibernates (no wall-clock assertion: the due times are set on the server itself)."""
    cfg = AgentConfig(name="busy", idle_hibernate=600, idle_evict=1200)
    sid, pid = await agents.start_session("busy", "u1", cfg)
    server: Any = rt._procs[pid.id]
    await agents.run(sid, "one")
    timer, due = server._timer, server._idle_due
    assert timer is not None and not timer.cancelled() and timer.when() <= due
    for i in range(3):
        await agents.run(sid, f"turn {i}")
    assert server._timer is timer and not timer.cancelled()  # the same timer, never churned
    assert server._idle_due > due  # moved by the later turns
    loop = asyncio.get_running_loop()
    server._idle()  # fires early (activity since): waits for the rest, stays in memory
    assert (await agents.status(sid))["state"] == "idle"
    rest = server._timer
    assert rest is not None and rest is not timer and abs(rest.when() - server._idle_due) < 0.01
    rest.cancel()
    server._idle_due = loop.time() - 1  # due: hibernates, then arms the eviction timer
    server._idle()
    assert (await agents.status(sid))["state"] == "hibernated"
    assert server._timer is not None and server._idle_due > loop.time() + 500
    assert "turn 5" in await agents.run(sid, "back?")  # history reloaded from the store
