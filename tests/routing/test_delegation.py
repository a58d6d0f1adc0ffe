"""Delegation: allowed delegates, max_chain_depth, cycles, and the chain in the history."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from netsuke.routing import (
    ChainContext,
    ChainDepthError,
    Delegation,
    DelegationCycleError,
    DelegationNotAllowedError,
    current_chain,
    delegation_tool,
)
from netsuke.store import Execution, Store

ALLOWED = {
    "planner": ["researcher", "writer"],
    "researcher": ["searcher", "planner"],
    "searcher": ["fetcher"],
    "fetcher": ["parser"],
    "parser": [],
}


class Chain:
    """A runner whose agents each delegate along a fixed script, recording what ran."""

    def __init__(self, script: dict[str, str]) -> None:
        self.script = script
        self.ran: list[tuple[str, int, str | None]] = []
        self.delegation: Delegation | None = None

    async def __call__(self, target: str, message: str, ctx: ChainContext) -> str:
        self.ran.append((target, ctx.depth, ctx.parent_execution_id))
        assert current_chain() == ctx
        nxt = self.script.get(target)
        if nxt is None:
            return f"{target}: {message}"
        assert self.delegation is not None
        return await self.delegation.delegate(ctx, nxt, message)


async def test_a_chain_runs_and_is_visible_in_the_execution_history(store: Store) -> None:
    runner = Chain({"researcher": "searcher"})
    d = Delegation(runner, delegates=ALLOWED, max_chain_depth=3, store=store)
    runner.delegation = d
    root = await store.executions.record(
        Execution(kind="agent_turn", status="running", agent_name="planner")
    )
    reply = await d.delegate(ChainContext("planner", root.id), "researcher", "find x")
    assert reply == "searcher: find x"
    assert [(a, depth) for a, depth, _ in runner.ran] == [("researcher", 1), ("searcher", 2)]
    chain = await store.executions.chain(root.id)
    assert [e.agent_name for e in chain] == ["planner", "researcher", "searcher"]
    assert chain[1].parent_id == root.id and chain[2].parent_id == chain[1].id
    assert [e.status for e in chain[1:]] == ["succeeded", "succeeded"]
    assert chain[2].details["chain"] == ["planner", "researcher", "searcher"]


async def test_depth_beyond_max_chain_depth_is_refused_before_running(store: Store) -> None:
    runner = Chain({"researcher": "searcher", "searcher": "fetcher", "fetcher": "parser"})
    d = Delegation(runner, delegates=ALLOWED, max_chain_depth=3, store=store)
    runner.delegation = d
    root = await store.executions.record(Execution(agent_name="planner", status="running"))
    with pytest.raises(ChainDepthError) as ei:
        await d.delegate(ChainContext("planner", root.id), "researcher", "deep")
    err = ei.value
    assert (err.agent, err.target, err.depth, err.max_depth) == ("fetcher", "parser", 4, 3)
    assert err.chain == ("planner", "researcher", "searcher", "fetcher")
    assert [a for a, _, _ in runner.ran] == ["researcher", "searcher", "fetcher"]
    chain = await store.executions.chain(root.id)
    assert [e.status for e in chain[1:]] == ["failed", "failed", "failed"]
    assert "ChainDepthError" in (chain[-1].error or "")


async def test_a_cycle_is_refused() -> None:
    runner = Chain({"researcher": "planner"})
    d = Delegation(runner, delegates=ALLOWED, max_chain_depth=10)
    runner.delegation = d
    with pytest.raises(DelegationCycleError) as ei:
        await d.delegate(ChainContext("planner"), "researcher", "loop")
    assert ei.value.chain == ("planner", "researcher") and ei.value.target == "planner"
    assert [a for a, _, _ in runner.ran] == ["researcher"]


async def test_only_allowed_delegates_and_per_agent_depth() -> None:
    ran: list[str] = []

    async def run(target: str, message: str, ctx: ChainContext) -> str:
        ran.append(target)
        return "ok"

    d = Delegation(run, delegates=ALLOWED.get, max_chain_depth=lambda a: 0 if a == "writer" else 2)
    with pytest.raises(DelegationNotAllowedError) as ei:
        await d.delegate(ChainContext("planner"), "parser", "x")
    assert ei.value.reason.startswith("'parser' is not an allowed delegate")
    with pytest.raises(DelegationNotAllowedError):
        await d.delegate(ChainContext("nobody"), "planner", "x")
    assert ran == []
    # a turn context from the agents layer (chain without itself) is accepted too
    turn = ChainContext.of(_Turn(agent="searcher", execution_id=None, chain=("planner",), depth=1))
    assert turn.chain == ("planner", "searcher") and turn.depth == 1
    assert await d.delegate(turn, "fetcher", "x") == "ok"


class _Turn:
    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)
        self.session = "s1"
        self.user = "u1"


async def test_delegation_tool_lets_a_pydantic_ai_agent_call_another_agent() -> None:
    calls: list[tuple[str, str, tuple[str, ...]]] = []

    async def run(target: str, message: str, ctx: ChainContext) -> str:
        calls.append((target, message, ctx.chain))
        return f"{target} says: 42"

    d = Delegation(run, delegates=ALLOWED, max_chain_depth=3)

    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        returns = [
            p for m in messages for p in getattr(m, "parts", []) if isinstance(p, ToolReturnPart)
        ]
        if not returns:
            assert [t.name for t in info.function_tools] == ["delegate_to_researcher"]
            return ModelResponse(
                parts=[ToolCallPart("delegate_to_researcher", {"message": "what is it?"})]
            )
        return ModelResponse(parts=[TextPart(f"answer: {returns[0].content}")])

    agent = Agent(FunctionModel(model), tools=[delegation_tool(d, "researcher")])
    with d.entered(ChainContext("planner", "exec-1")):
        result = await agent.run("ask the researcher")
    assert result.output == "answer: researcher says: 42"
    assert calls == [("researcher", "what is it?", ("planner", "researcher"))]

    refused = Agent(FunctionModel(model), tools=[delegation_tool(d, "researcher")])
    with d.entered(ChainContext("writer")), pytest.raises(DelegationNotAllowedError):
        await refused.run("ask")
    told = Agent(FunctionModel(model), tools=[delegation_tool(d, "researcher", refusal="tell")])
    with d.entered(ChainContext("writer")):
        out = await told.run("ask")
    assert out.output.startswith("answer: delegation refused: 'researcher' is not an allowed")


async def test_policy_from_agent_definitions_in_the_store(store: Store) -> None:
    await store.agents.create({"name": "deep"})
    await store.agents.create({"name": "helper", "delegates": ["deep"]})
    await store.agents.create({"name": "lead", "delegates": ["helper"], "max_chain_depth": 1})
    definitions = {name: await store.agents.get(name) for name in ("lead", "helper", "deep")}

    async def run(target: str, message: str, ctx: ChainContext) -> str:
        return f"{target} ok"

    d = Delegation.for_definitions(run, definitions)
    assert await d.delegate(ChainContext("lead"), "helper", "hi") == "helper ok"
    with pytest.raises(DelegationNotAllowedError):
        await d.delegate(ChainContext("lead"), "deep", "hi")
    # helper alone may go two deep (its limit is 3) ...
    assert d.check(ChainContext("helper"), "deep").depth == 1
    # ... but lead's limit (1) bounds every chain lead entered: refused at the second hop
    with pytest.raises(ChainDepthError) as ei:
        d.check(ChainContext("helper", chain=("lead", "helper")), "deep")
    assert (ei.value.depth, ei.value.max_depth) == (2, 1)
    with pytest.raises(ChainDepthError):
        d.check(ChainContext("lead", chain=("x", "lead")), "helper")


async def test_entry_agent_limit_bounds_the_whole_chain() -> None:
    """a -> b -> c -> d with a's max_chain_depth 1 and b, c allowing 5: the second hop is
    refused (seed 004; the delegating agent's own limit alone let the chain run 3 deep)."""
    limits = {"a": 1, "b": 5, "c": 5, "d": 5}
    delegates = {"a": ["b"], "b": ["c"], "c": ["d"]}
    ran: list[tuple[str, ...]] = []
    d: Delegation

    async def run(target: str, message: str, ctx: ChainContext) -> str:
        ran.append(ctx.chain)
        nxt = delegates.get(target)
        if nxt:
            return await d.delegate(ctx, nxt[0], message)
        return f"{target} done"

    d = Delegation(run, delegates=delegates, max_chain_depth=limits.__getitem__)
    with pytest.raises(ChainDepthError) as ei:
        await d.delegate(ChainContext("a"), "b", "go")
    assert (ei.value.agent, ei.value.target, ei.value.depth, ei.value.max_depth) == ("b", "c", 2, 1)
    assert ran == [("a", "b")]
    limits["a"] = 3
    assert await d.delegate(ChainContext("a"), "b", "go") == "d done"
    # a limit down the chain narrows it too: c with 2 stops c -> d (depth 3)
    limits["c"] = 2
    with pytest.raises(ChainDepthError):
        await d.delegate(ChainContext("a"), "b", "go")
