"""Failure domains: each agent definition has its own supervisor, so one definition's crash loop
never stops the sessions of another (issue 13)."""

from __future__ import annotations

import asyncio

import pytest

from netsuke import DynamicSupervisor, Runtime
from netsuke.agents import AgentConfig, Agents
from netsuke.store import Store


@pytest.mark.timeout(60)
async def test_a_crash_looping_agent_definition_leaves_other_definitions_sessions_up(
    store: Store,
) -> None:
    async with Runtime(shutdown_timeout=5.0) as rt:
        agents = await Agents.start(rt, store, max_restarts=3, max_seconds=5.0)
        a_cfg, b_cfg = AgentConfig(name="flaky"), AgentConfig(name="steady")
        b_sessions = [await agents.start_session("steady", f"u{i}", b_cfg) for i in range(3)]
        for sid, _ in b_sessions:
            assert "turn 1" in await agents.run(sid, f"remember {sid}")
        a_sid, _ = await agents.start_session("flaky", "u0", a_cfg)
        a_sup = rt.whereis(agents.domain_name("flaky"))
        b_sup = rt.whereis(agents.domain_name("steady"))
        assert a_sup is not None and b_sup is not None and a_sup != b_sup
        gave_up = rt.events.subscribe("supervisor.gave_up")
        a_gone = asyncio.ensure_future(rt.wait_exit(a_sup))
        # crash agent A past its intensity (3 restarts in 5 s): its supervisor gives up
        for _ in range(10):
            pid = rt.whereis(a_sid)
            if pid is None:
                break
            rt.exit(pid, RuntimeError("boom"))
            for _ in range(50):
                if rt.whereis(a_sid) not in (None, pid):
                    break
                await asyncio.sleep(0.01)
        await asyncio.wait_for(gave_up.get(), 5)
        assert await asyncio.wait_for(a_gone, 5) == "shutdown"
        assert rt.whereis(a_sid) is None
        # agent B's sessions are untouched: same pids, same memory, same supervisor
        assert rt.alive(rt.root) and rt.whereis(agents.supervisor) is not None
        assert rt.whereis(agents.domain_name("steady")) == b_sup
        for sid, pid in b_sessions:
            assert agents.whereis(sid) == pid
            reply = await agents.run(sid, "what did I say?")
            assert "turn 2" in reply and f"remember {sid}" in reply
        assert len(await DynamicSupervisor.which_children(b_sup)) == 3
        # agent A comes back under a new supervisor of its own
        a_sid2, a_pid2 = await agents.start_session("flaky", "u0", a_cfg)
        assert a_sid2 == a_sid and rt.whereis(a_sid) == a_pid2
        assert rt.whereis(agents.domain_name("flaky")) not in (None, a_sup)
        assert await agents.stop_agent(a_sid)
        assert rt.whereis(a_sid) is None
