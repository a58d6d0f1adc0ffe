"""The wired node: stored agents get stored functions and delegates as tools; seed 004's
registry usage; capability routing to live agents."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from netsuke.node import Node
from netsuke.routing import NoRouteError

ADD = """
def add(a: int, b: int) -> int:
    return a + b
"""


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    async with Node.open(f"sqlite+aiosqlite:///{tmp_path / 'n.db'}") as n:
        if n.sandbox is None or n.sandbox.isolation is None:
            if os.environ.get("CI") == "true":
                pytest.fail(f"no sandbox isolation under CI: {n.sandbox and n.sandbox.refusal}")
            pytest.skip(f"no sandbox isolation here: {n.sandbox and n.sandbox.refusal}")
        yield n


async def _add_function(node: Node) -> None:
    await node.functions.store_function(
        name="add",
        code=ADD,
        description="Add two integers",
        input_schema={
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
        output_schema={"type": "integer"},
        is_async=False,
    )


async def test_stored_agent_calls_its_stored_function_in_the_sandbox(node: Node) -> None:
    await _add_function(node)
    await node.register_agent(
        {"name": "calc", "system_prompt": "You add.", "tools": ["add"], "capabilities": ["math"]}
    )
    reply = await node.get_agent("calc").process_message("add 2 and 40")
    assert "42" in str(reply)
    # the function call is recorded as a child of the turn that made it
    page = await node.store.executions.list(kind="function_call")
    call = page.items[0]
    assert call.function_name == "add" and call.status == "succeeded"
    assert call.parent_id is not None
    turn = await node.store.executions.get(call.parent_id)
    assert turn.kind == "agent_turn" and turn.agent_name == "calc"


async def test_process_routes_by_capability_and_refuses_without_a_match(node: Node) -> None:
    await node.register_agent({"name": "searcher", "capabilities": ["search", "filter"]})
    await node.register_agent({"name": "writer", "capabilities": ["write"]})
    reply = await node.process(
        "find supervisors", capabilities=["search"], conversation_id="c1", user="ann"
    )
    assert "find supervisors" in str(reply)
    history = await node.agents.history("searcher@ann:c1")  # the conversation's own session
    assert history and len(history) == 2
    with pytest.raises(NoRouteError):
        await node.process("sing", capabilities=["sing"])


async def test_stored_delegates_become_tools_and_the_chain_is_recorded(node: Node) -> None:
    await node.register_agent({"name": "expert", "description": "knows things"})
    await node.register_agent(
        {"name": "boss", "delegates": ["expert"], "max_chain_depth": 2}, start=True
    )
    reply = await node.get_agent("boss").process_message("delegate_to_expert 'what is OTP?'")
    assert "[offline]" in str(reply)
    turns = (await node.store.executions.list(kind="agent_turn")).items
    expert_turn = next(t for t in turns if t.agent_name == "expert")
    assert expert_turn.parent_id is not None
    chain = await node.store.executions.chain(expert_turn.parent_id)
    assert [e.agent_name for e in chain][:2] == ["boss", "expert"]


async def test_a_cycle_through_stored_delegates_is_refused_inside_the_turn(node: Node) -> None:
    await node.register_agent({"name": "boss", "max_chain_depth": 5})
    await node.register_agent({"name": "expert", "delegates": ["boss"], "max_chain_depth": 5})
    await node.register_agent({"name": "boss", "delegates": ["expert"], "max_chain_depth": 5})
    reply = await node.get_agent("boss").process_message(
        "delegate_to_expert 'delegate_to_boss again'"
    )
    assert "refused" in str(reply) and "cycle" in str(reply)
    # nothing ran for the refused hop: boss has exactly one turn
    turns = (await node.store.executions.list(kind="agent_turn", agent_name="boss")).items
    assert len(turns) == 1
