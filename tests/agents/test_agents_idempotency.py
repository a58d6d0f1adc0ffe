"""Request ids (the API's ``Idempotency-Key``), fencing across "nodes" and the tools'
idempotency keys (issue 17).

Two ``Agents`` on two store handles of one SQLite file play two nodes."""

from __future__ import annotations

import asyncio
import json

import pytest

from netsuke import Runtime
from netsuke.agents import (
    AgentConfig,
    Agents,
    RequestInProgressError,
    RequestKeyReusedError,
    SessionMovedError,
    current_tool_call,
    current_turn,
    tool_idempotency_key,
)
from netsuke.store import NodeIdentity, Store, ValidationError
from tests.cluster.history import Claim, Request, check, committed_from_history

A = NodeIdentity("alpha", 1)
B = NodeIdentity("beta", 1)


class Dead:
    """Every node is live except those named."""

    def __init__(self, *dead: str) -> None:
        self.dead = set(dead)

    async def is_live(self, node: str, incarnation: int) -> bool:
        return node not in self.dead


@pytest.mark.timeout(30)
async def test_a_request_id_runs_the_turn_once_and_replays_its_reply(
    agents: Agents, store: Store
) -> None:
    sid, _ = await agents.start_session("idem", "u")
    first = await agents.run_turn(sid, "hello", request_id="r-1")
    assert not first.replayed and first.reply is not None and first.messages
    assert json.loads(first.reply)["execution_id"] == first.execution_id
    count = (await store.conversations.get(sid)).message_count
    again = await agents.run_turn(sid, "hello", request_id="r-1")
    assert again.replayed and again.reply == first.reply and not again.messages
    assert (again.execution_id, again.output) == (first.execution_id, first.output)
    assert await agents.run(sid, "hello", request_id="r-1") == first.output
    with pytest.raises(RequestKeyReusedError):
        await agents.run_turn(sid, "something else", request_id="r-1")
    assert (await store.conversations.get(sid)).message_count == count  # nothing ran
    with pytest.raises(ValidationError):
        await agents.run_turn(sid, "hello", request_id="bad id")
    other = await agents.run_turn(sid, "hello", request_id="r-2")  # a new id: a new turn
    assert other.execution_id != first.execution_id and not other.replayed
    assert (await store.conversations.get(sid)).message_count > count


@pytest.mark.timeout(30)
async def test_a_duplicate_while_the_first_runs_is_refused_not_run(
    agents: Agents, store: Store
) -> None:
    started, release = asyncio.Event(), asyncio.Event()
    calls = 0

    async def slow() -> str:
        """A slow tool."""
        nonlocal calls
        calls += 1
        started.set()
        await release.wait()
        return "done"

    sid, _ = await agents.start_session("idem", "u", AgentConfig(name="idem", tools=[slow]))
    first = asyncio.ensure_future(agents.run_turn(sid, "slow", request_id="k"))
    await started.wait()
    with pytest.raises(RequestInProgressError):
        await agents.run_turn(sid, "slow", request_id="k")
    release.set()
    done = await first
    replay = await agents.run_turn(sid, "slow", request_id="k")
    assert replay.replayed and replay.reply == done.reply and calls == 1


@pytest.mark.timeout(30)
async def test_a_tool_sees_its_call_index_and_a_key_from_the_request_id(agents: Agents) -> None:
    seen: list[tuple[int, str, str]] = []

    async def probe() -> str:
        """Records its tool call."""
        call, turn = current_tool_call(), current_turn()
        assert call is not None and turn is not None
        seen.append((call.index, call.idempotency_key, turn.execution_id))
        return "ok"

    sid, _ = await agents.start_session("idem", "u", AgentConfig(name="idem", tools=[probe]))
    await agents.run(sid, "probe", request_id="req-7")
    assert seen[0][:2] == (0, tool_idempotency_key(sid, "req-7", 0))
    await agents.run(sid, "probe")  # no request id: derived from the execution id
    index, key, execution = seen[1]
    assert (index, key) == (0, tool_idempotency_key(sid, execution, 0))
    assert current_tool_call() is None  # only inside a tool


@pytest.mark.timeout(60)
async def test_a_turn_fenced_by_a_takeover_is_never_stored_and_its_retry_commits_once(
    rt: Runtime, store: Store
) -> None:
    """Node A runs a turn whose tool is slow; meanwhile node B takes the session over (A was
    declared not live). A's turn fails fencing (the caller is told, nothing stored), A cannot
    take the session back, and the retry on B with the same request id runs the tool again
    with the same idempotency key and commits once; a second retry replays the reply."""
    store.conversations.set_ownership(A, Dead())
    in_tool, takeover = asyncio.Event(), asyncio.Event()
    keys: list[str] = []

    async def charge() -> str:
        """Charges the customer (a side effect keyed by the idempotency key)."""
        call = current_tool_call()
        assert call is not None
        keys.append(call.idempotency_key)
        in_tool.set()
        await takeover.wait()
        return "charged"

    cfg = AgentConfig(name="pay", tools=[charge])
    a = await Agents.start(rt, store)
    sid, _ = await a.start_session("pay", "u", cfg)
    attempt = asyncio.ensure_future(a.run_turn(sid, "charge", request_id="pay-1"))
    await in_tool.wait()
    async with Store.open(store.url) as store_b, Runtime(shutdown_timeout=5.0) as rt_b:
        store_b.conversations.set_ownership(B, Dead("alpha"))
        taken = await store_b.conversations.open("pay-u", agent_name="pay", claim=True)
        assert (taken.owner_node, taken.incarnation) == ("beta", 2)
        takeover.set()
        with pytest.raises(SessionMovedError) as moved:
            await attempt
        assert moved.value.current_epoch == 2
        assert await store_b.conversations.find_request(sid, "pay-1") is None
        with pytest.raises(SessionMovedError) as refused:  # B is live: A may not claim back
            await a.run_turn(sid, "charge", request_id="pay-1")
        assert refused.value.owner == "beta"

        b = await Agents.start(rt_b, store_b)
        await b.start_session("pay", "u", cfg)
        takeover.set()
        done = await b.run_turn(sid, "charge", request_id="pay-1")
        assert not done.replayed
        replay = await b.run_turn(sid, "charge", request_id="pay-1")
        assert replay.replayed and replay.reply == done.reply
        assert keys == [tool_idempotency_key(sid, "pay-1", 0)] * 2  # at least once, same key

        committed = await committed_from_history(
            store_b, sid, lambda p: "pay-1" if p == "charge" else None
        )
        report = check(
            [Request("pay-1", acknowledged=True, reply=done.reply)],
            committed,
            [Claim(taken.incarnation, taken.message_count)],
        )
        assert report.counts == (0, 0, 0) and report.ok, report.details
        assert [t.epoch for t in committed] == [3]  # B's agent server claimed epoch 3


@pytest.mark.timeout(30)
async def test_a_session_a_live_node_owns_starts_unclaimed_and_its_turns_are_refused(
    agents: Agents, store: Store
) -> None:
    store.conversations.set_ownership(A, Dead())
    await store.conversations.open("solo-u", agent_name="solo", user_id="u", claim=True, node=B)
    sid, _ = await agents.start_session("solo", "u")
    with pytest.raises(SessionMovedError) as moved:
        await agents.run(sid, "hello", request_id="r")
    assert moved.value.owner == "beta"
    conv = await store.conversations.get(sid)
    assert (conv.owner_node, conv.incarnation, conv.message_count) == ("beta", 1, 0)
    store.conversations.set_ownership(A, Dead("beta"))  # beta is declared gone: A takes over
    assert "[offline]" in await agents.run(sid, "hello", request_id="r")
    conv = await store.conversations.get(sid)
    assert (conv.owner_node, conv.incarnation) == ("alpha", 2)
