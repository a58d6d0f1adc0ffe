"""Routing and delegation over the real agents layer (agent servers, turns in the store)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from pydantic_ai import models
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from netsuke import Runtime
from netsuke.agents import AgentConfig, Agents, current_turn
from netsuke.routing import (
    CapabilityRouter,
    Delegation,
    NoRouteError,
    agents_runner,
    delegation_tool,
)
from netsuke.store import Store


@pytest.fixture(autouse=True)
def _no_model_requests() -> Iterator[None]:
    with models.override_allow_model_requests(False):
        yield


@pytest.fixture
async def system(tmp_path: Path) -> AsyncIterator[tuple[Runtime, Store, Agents]]:
    async with (
        Runtime(shutdown_timeout=5.0) as rt,
        Store.open(f"sqlite+aiosqlite:///{tmp_path / 'agents.db'}") as store,
    ):
        yield rt, store, await Agents.start(rt, store)


def delegating_model() -> FunctionModel:
    """Calls its first tool with the user's prompt, then answers with what the tool returned;
    without tools it answers 'done: <prompt>'."""

    def fn(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        returns = [
            p for m in messages for p in getattr(m, "parts", []) if isinstance(p, ToolReturnPart)
        ]
        prompt = next(
            p.content
            for m in messages
            for p in getattr(m, "parts", [])
            if getattr(p, "part_kind", "") == "user-prompt"
        )
        if returns:
            return ModelResponse(parts=[TextPart(f"via tool: {returns[-1].content}")])
        if info.function_tools:
            tool = info.function_tools[0].name
            return ModelResponse(parts=[ToolCallPart(tool, {"message": str(prompt)})])
        return ModelResponse(parts=[TextPart(f"done: {prompt}")])

    return FunctionModel(fn)


async def test_an_agent_delegates_through_the_tool_and_the_chain_is_recorded(
    system: tuple[Runtime, Store, Agents],
) -> None:
    _rt, store, agents = system
    d = Delegation(
        agents_runner(agents),
        delegates={"boss": ["lead"], "lead": ["expert", "boss"]},
        max_chain_depth=2,
    )

    def tool(target: str) -> object:
        return delegation_tool(d, target, context=current_turn, refusal="tell")

    model = delegating_model()
    await agents.start_agent("expert", AgentConfig(name="expert", model=model))
    await agents.start_agent("lead", AgentConfig(name="lead", model=model, tools=[tool("expert")]))
    await agents.start_agent("boss", AgentConfig(name="boss", model=model, tools=[tool("lead")]))
    result = await agents.run_turn("boss", "find x")
    assert result.output == "via tool: via tool: done: find x"
    chain = await store.executions.chain(result.execution_id)
    assert [e.agent_name for e in chain] == ["boss", "lead", "expert"]
    assert chain[2].details["chain"] == ["boss", "lead", "expert"]
    assert chain[1].parent_id == chain[0].id and chain[2].parent_id == chain[1].id


async def test_real_agents_are_refused_cycles_and_depth_beyond_the_limit(
    system: tuple[Runtime, Store, Agents],
) -> None:
    _rt, _store, agents = system
    d = Delegation(
        agents_runner(agents),
        delegates={"a": ["b"], "b": ["a"], "p": ["q"], "q": ["r"], "r": ["s"]},
        max_chain_depth=2,
    )
    model = delegating_model()

    def agent(name: str, target: str | None) -> AgentConfig:
        tools = [delegation_tool(d, target, context=current_turn, refusal="tell")] if target else []
        return AgentConfig(name=name, model=model, tools=tools)

    await agents.start_agent("a", agent("a", "b"))
    await agents.start_agent("b", agent("b", "a"))  # b tries to call a back: a cycle
    cycle = await agents.run("a", "loop")
    assert "delegation refused" in cycle and "already in the chain" in cycle
    await agents.start_agent("p", agent("p", "q"))
    await agents.start_agent("q", agent("q", "r"))
    await agents.start_agent("r", agent("r", "s"))  # would be depth 3 > 2
    await agents.start_agent("s", agent("s", None))
    deep = await agents.run("p", "deep")
    assert "delegation refused" in deep and "exceeds max_chain_depth 2" in deep


async def test_capability_routing_over_live_agent_servers(
    system: tuple[Runtime, Store, Agents],
) -> None:
    rt, _store, agents = system
    model = delegating_model()
    for name, caps in [("s1", ("search",)), ("s2", ("search", "rank")), ("w", ("write",))]:
        await agents.start_agent(name, AgentConfig(name=name, model=model, capabilities=caps))
    router = CapabilityRouter(rt.registry)
    assert router.route(["rank"]).key == "s2"
    assert {router.route(["search"]).key for _ in range(4)} == {"s1", "s2"}
    with pytest.raises(NoRouteError):
        router.route(["translate"])
    entry = router.route(["write"])
    assert await agents.run(entry.pid, "hello") == "done: hello"
