"""Definition changes take effect: new sessions start from the current version, running ones
move at their next turn (``version_policy: next_turn``) or on restart (``on_restart``), and
``status`` says which version a session really runs. The version a turn ran is recorded on
its execution row (``details.version``)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from netsuke import Runtime
from netsuke.agents import AgentConfigError, Agents
from netsuke.events import topics
from netsuke.store import Store


async def _update(store: Store, rt: Runtime | None, name: str, **content: Any) -> int:
    """Store a new version; with ``rt``, tell the node as the API does (definition.changed)."""
    current = await store.agents.get(name)
    draft = current.draft().model_copy(update=content)
    updated = await store.agents.update(draft, expected_version=current.version)
    if rt is not None:
        rt.events.publish(
            topics.DEFINITION_CHANGED, kind="agent", name=name, version=updated.version,
            action="updated", actor="test",
        )  # fmt: skip
    return updated.version


async def _ran(agents: Agents, session: str, message: str) -> int:
    """Run a turn; the definition version it ran under (from its execution row)."""
    result = await agents.run_turn(session, message)
    execution = await agents.store.executions.get(result.execution_id)
    return int(execution.details["version"])


async def _settle() -> None:
    for _ in range(5):  # let the definition.changed listener take the event
        await asyncio.sleep(0)


@pytest.mark.timeout(30)
async def test_running_sessions_move_at_their_next_turn_and_new_ones_start_current(
    agents: Agents, rt: Runtime, store: Store
) -> None:
    await store.agents.create({"name": "bot", "system_prompt": "PROMPT-A"})
    sid = (await agents.start_session("bot", "ann")).session_id
    assert await _ran(agents, sid, "hi") == 1
    assert await _update(store, rt, "bot", system_prompt="PROMPT-B") == 2
    await _settle()
    # the running session runs version 2 from its next turn on, its memory intact
    result = await agents.run_turn(sid, "again")
    assert "turn 2" in str(result.output)
    assert (await store.executions.get(result.execution_id)).details["version"] == 2
    status = await agents.status(sid)
    assert status["version"] == 2
    assert rt.registry.meta(sid)["version"] == 2
    # a change made elsewhere (no event on this node): a new session still starts current
    assert await _update(store, None, "bot", system_prompt="PROMPT-C") == 3
    bob = (await agents.start_session("bot", "bob")).session_id
    assert (await agents.status(bob))["version"] == 3
    assert await _ran(agents, bob, "hello") == 3
    # ... and the running one follows at its next turn, since the node now knows of v3
    assert await _ran(agents, sid, "third") == 3
    # stopped, then started again: the current version
    assert await _update(store, rt, "bot", system_prompt="PROMPT-D") == 4
    await _settle()
    assert await agents.stop_agent(bob)
    bob = (await agents.start_session("bot", "bob")).session_id
    assert await _ran(agents, bob, "back") == 4


@pytest.mark.timeout(30)
async def test_on_restart_policy_keeps_the_version_until_the_session_restarts(
    agents: Agents, rt: Runtime, store: Store
) -> None:
    await store.agents.create({"name": "steady", "config": {"version_policy": "on_restart"}})
    sid, pid = await agents.start_session("steady", "ann")
    assert await _ran(agents, sid, "one") == 1
    await _update(store, rt, "steady", system_prompt="new")
    await _settle()
    assert await _ran(agents, sid, "two") == 1  # still the version it started with
    assert (await agents.status(sid))["version"] == 1
    new = (await agents.start_session("steady", "bob")).session_id
    assert await _ran(agents, new, "hi") == 2  # a new session: current
    rt.kill(pid)  # a crash: the restart runs the current version
    for _ in range(200):
        if agents.whereis(sid) not in (None, pid):
            break
        await asyncio.sleep(0.01)
    assert await _ran(agents, sid, "three") == 2
    assert "turn 4" in str(await agents.run(sid, "memory kept"))


async def test_an_unknown_version_policy_is_refused(agents: Agents, store: Store) -> None:
    await store.agents.create({"name": "odd", "config": {"version_policy": "sometimes"}})
    with pytest.raises(AgentConfigError) as ei:
        await agents.start_session("odd", "ann")
    assert ei.value.field == "version_policy"
