"""Memory never crosses conversations: delegates and capability routing keep one session per
conversation (the offline model replies from the conversation it sees, so a leak shows), and
seed 004's chain-depth rule holds through stored delegates."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from netsuke.node import Node


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    async with Node.open(f"sqlite+aiosqlite:///{tmp_path / 'n.db'}", sandbox=False) as n:
        yield n


@pytest.mark.timeout(60)
async def test_two_users_through_the_same_delegate_see_nothing_of_each_other(node: Node) -> None:
    await node.register_agent({"name": "summarizer", "capabilities": ["summarize"]}, start=False)
    await node.register_agent({"name": "researcher", "delegates": ["summarizer"]}, start=False)
    agents = node.agents
    ann = (await agents.start_session("researcher", "ann")).session_id
    bob = (await agents.start_session("researcher", "bob")).session_id

    first = await agents.run(ann, "delegate_to_summarizer 'my password is hunter2'")
    assert "hunter2" in str(first) and "turn 1" in str(first)
    told_bob = await agents.run(bob, "delegate_to_summarizer 'hello'")
    assert "hunter2" not in str(told_bob)
    assert "turn 1" in str(told_bob)  # bob's summarizer has seen only bob's message
    # each conversation keeps its own delegate memory across turns
    again = await agents.run(ann, "delegate_to_summarizer 'and again'")
    assert "turn 2" in str(again) and "hunter2" in str(again)

    # one delegate session per conversation, recorded for its user
    ann_delegate = await node.store.conversations.get("summarizer@researcher-ann")
    bob_delegate = await node.store.conversations.get("summarizer@researcher-bob")
    assert (ann_delegate.user_id, bob_delegate.user_id) == ("ann", "bob")
    bob_history = await agents.history("summarizer@researcher-bob")
    assert "hunter2" not in repr(bob_history)
    # the delegate session is owned by its caller's session: it stops with it
    assert await agents.stop_agent(bob)
    for _ in range(100):
        if agents.whereis("summarizer@researcher-bob") is None:
            break
        await asyncio.sleep(0.01)
    assert agents.whereis("summarizer@researcher-bob") is None


@pytest.mark.timeout(60)
async def test_two_users_through_the_same_route_see_nothing_of_each_other(node: Node) -> None:
    await node.register_agent({"name": "summarizer", "capabilities": ["summarize"]})
    route = ["summarize"]
    ann1 = await node.process(
        "my password is hunter2", capabilities=route, conversation_id="c1", user="ann"
    )
    assert "turn 1" in str(ann1)
    bob1 = await node.process("hello", capabilities=route, conversation_id="c1", user="bob")
    assert "turn 1" in str(bob1) and "hunter2" not in str(bob1)
    ann2 = await node.process(
        "what did I say?", capabilities=route, conversation_id="c1", user="ann"
    )
    assert "turn 2" in str(ann2) and "hunter2" in str(ann2)
    # another conversation of the same user is another memory
    other = await node.process("new topic", capabilities=route, conversation_id="c2", user="ann")
    assert "turn 1" in str(other)
    # a user alone: the user's own session with the agent
    mine = await node.process("just me", capabilities=route, user="carl")
    assert "turn 1" in str(mine)
    assert "turn 2" in str(await node.process("me again", capabilities=route, user="carl"))
    assert node.agents.whereis("summarizer-carl") is not None
    # no ids: a conversation of its own per call, never the shared instance's memory
    for text in ("anon one", "anon two"):
        reply = await node.process(text, capabilities=route)
        assert "turn 1" in str(reply) and "hunter2" not in str(reply)
    assert await node.agents.history("summarizer") == []  # the instance served nobody
    # seed 004's handle takes the same ids
    handle = node.get_agent("summarizer")
    reply = await handle.process_message("via handle", conversation_id="c1", user="bob")
    assert "turn 2" in str(reply) and "hunter2" not in str(reply)


@pytest.mark.timeout(60)
async def test_seed_004_agent_shape_and_the_entry_agents_chain_limit(node: Node) -> None:
    spec = await node.register_agent(
        {
            "name": "SearchAgent",
            "description": "Handles search queries",
            "system_prompt": "You are a search assistant...",
            "config_data": {"capabilities": ["search", "filter"], "temperature": 0.7},
            "max_chain_depth": 3,
        }
    )
    assert spec.capabilities == ("search", "filter")
    assert spec.model_settings == {"temperature": 0.7}
    assert "turn 1" in str(await node.process("find it", capabilities=["filter"]))

    await node.register_agent({"name": "d"}, start=False)
    await node.register_agent({"name": "c", "delegates": ["d"], "max_chain_depth": 5}, start=False)
    await node.register_agent({"name": "b", "delegates": ["c"], "max_chain_depth": 5}, start=False)
    await node.register_agent({"name": "a", "delegates": ["b"], "max_chain_depth": 1})
    reply = await node.get_agent("a").process_message(
        "delegate_to_b 'delegate_to_c \"delegate_to_d bye\"'"
    )
    assert "depth 2 exceeds max_chain_depth 1" in str(reply)
    ran = {e.agent_name for e in (await node.store.executions.list(kind="agent_turn")).items}
    assert {"a", "b"} <= ran and not ran & {"c", "d"}  # refused at the second hop
