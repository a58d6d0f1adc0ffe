"""Fencing: a turn commits only while its server's incarnation owns the session.

A killed server's turn task is not linked to it and runs on. Without a fence it could commit
after the successor loaded the history (the successor's memory then lacks a stored turn) and
after its caller was told the call failed."""

from __future__ import annotations

import asyncio
import collections
import random
import re

import pytest
from pydantic_ai.messages import ModelRequest, UserPromptPart

from netsuke import Runtime
from netsuke.agents import AgentConfig, Agents
from netsuke.kernel import Pid, ProcessExitedError
from netsuke.store import Store


async def _prompts(store: Store, session: str) -> list[str]:
    history = await store.conversations.history(session)
    return [
        str(p.content)
        for m in history
        if isinstance(m, ModelRequest)
        for p in m.parts
        if isinstance(p, UserPromptPart)
    ]


async def _until(check: object, tries: int = 500) -> None:
    for _ in range(tries):
        ok = check() if callable(check) else check
        if asyncio.iscoroutine(ok):
            ok = await ok
        if ok:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never held")


def _turn_seen(reply: object) -> int:
    found = re.search(r"turn (\d+)", str(reply))
    assert found is not None, reply
    return int(found.group(1))


@pytest.mark.timeout(30)
async def test_a_killed_servers_turn_is_fenced_once_its_successor_claimed(
    agents: Agents, rt: Runtime, store: Store
) -> None:
    successor_claimed = asyncio.Event()
    holder: dict[str, Pid] = {}

    async def hold() -> str:
        """Kill the server hosting this turn, then wait until its successor took over."""
        rt.kill(holder["pid"])
        await successor_claimed.wait()
        return "held"

    sid, pid = await agents.start_session("f", "u", AgentConfig(name="f", tools=[hold]))
    holder["pid"] = pid
    assert "turn 1" in await agents.run(sid, "first")
    # no ticket (a bare request): nothing kills the orphaned task, it runs to its commit
    with pytest.raises(ProcessExitedError):
        await rt.call(pid, ("run", "hold", None, None), timeout=None)

    await _until(lambda: agents.whereis(sid) not in (None, pid))
    # the successor's first turn claims the session, then loads the history
    assert "turn 2" in await agents.run(sid, "second")
    assert (await store.conversations.get(sid)).incarnation == 2
    successor_claimed.set()

    async def orphan_done() -> bool:
        page = await store.executions.list(agent_name="f", status="failed")
        return bool(page.items)

    await _until(orphan_done)
    failed = (await store.executions.list(agent_name="f", status="failed")).items
    assert len(failed) == 1 and "SessionMovedError" in (failed[0].error or "")
    assert await _prompts(store, sid) == ["first", "second"]  # the orphan wrote nothing
    assert "turn 3" in await agents.run(sid, "third")  # memory == store


@pytest.mark.timeout(30)
async def test_a_caller_told_its_server_died_never_finds_the_turn_stored(
    agents: Agents, rt: Runtime, store: Store
) -> None:
    started = asyncio.Event()
    release = asyncio.Event()
    seen: list[str] = []

    async def slow() -> str:
        """A slow tool."""
        started.set()
        try:
            await release.wait()
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        seen.append("finished")
        return "done"

    sid, pid = await agents.start_session("g", "u", AgentConfig(name="g", tools=[slow]))
    call = asyncio.ensure_future(agents.run(sid, "slow"))
    await asyncio.wait_for(started.wait(), 5)
    rt.kill(pid)
    with pytest.raises(ProcessExitedError):
        await call
    # the orphaned turn was stopped (it had not begun to commit), so it can never land
    await _until(lambda: seen == ["cancelled"])
    release.set()
    await _until(lambda: agents.whereis(sid) not in (None, pid))
    assert "turn 1" in await agents.run(sid, "after")
    assert await _prompts(store, sid) == ["after"]


@pytest.mark.timeout(120)
async def test_crash_storm_store_equals_memory_and_callers_hear_the_truth(
    agents: Agents, rt: Runtime, store: Store
) -> None:
    """Random kills of session processes under concurrent load (the evaluation's storm):
    every acknowledged turn is stored once, no failed turn is stored, and each restarted
    session's memory is exactly its stored conversation."""
    cfg = agents.define(AgentConfig(name="bot"))
    sessions = [(await agents.start_session("bot", f"u{k}", cfg)).session_id for k in range(12)]
    acked: dict[str, list[str]] = collections.defaultdict(list)
    failed: dict[str, list[str]] = collections.defaultdict(list)
    errors: collections.Counter[str] = collections.Counter()
    stop = asyncio.Event()

    async def chatter(sid: str, tag: int) -> None:
        j = 0
        while not stop.is_set():
            prompt = f"m {sid} {tag} {j}"
            j += 1
            try:
                await agents.run(sid, prompt)
            except Exception as exc:
                failed[sid].append(prompt)
                errors[type(exc).__name__] += 1
                await asyncio.sleep(0.002)
            else:
                acked[sid].append(prompt)

    rnd = random.Random(7)
    chatters = [asyncio.ensure_future(chatter(s, t)) for s in sessions for t in range(2)]
    kills = 0
    # ~16 kills a second: below the agents supervisor's restart intensity (100 in 5 s)
    for _ in range(300):
        pid = agents.whereis(rnd.choice(sessions))
        if pid is not None:
            rt.kill(pid)
            kills += 1
            if kills == 60:
                break
        await asyncio.sleep(rnd.uniform(0.03, 0.09))
    # enough load to judge, however busy the machine: the chatters go on until 100 turns were
    # acknowledged (a bound on the wait, not a speed test)
    await _until(lambda: sum(map(len, acked.values())) > 100, tries=6000)
    stop.set()
    await asyncio.gather(*chatters)
    assert kills == 60
    assert sum(map(len, acked.values())) > 100 and errors  # load, and kills that hurt
    for sid in sessions:
        await _until(lambda sid=sid: agents.whereis(sid) is not None)
        stored = await _prompts(store, sid)
        assert sorted(stored) == sorted(set(stored))  # nothing twice
        assert set(acked[sid]) <= set(stored)  # told ok: stored
        assert not set(failed[sid]) & set(stored)  # told failed: never stored
        # the live memory is the store: the offline model counts the turns it sees
        assert _turn_seen(await agents.run(sid, "count please")) == len(stored) + 1
