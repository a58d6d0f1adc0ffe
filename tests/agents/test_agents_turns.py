"""Turns: offline model, FunctionModel, tools, schemas, failures, executions, registry, events."""

from __future__ import annotations

import asyncio
import gc
import uuid
from typing import Any

import pytest
from pydantic import BaseModel
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo

from netsuke import Runtime
from netsuke.agents import (
    OFFLINE_MARK,
    AgentConfig,
    AgentConfigError,
    AgentNotFoundError,
    Agents,
    InvalidInputError,
    OutputValidationError,
    PromptContext,
    TurnContext,
    agent_load,
    current_turn,
)
from netsuke.agents._metrics import METRICS as AGENT_METRICS
from netsuke.events import topics
from netsuke.store import Store
from netsuke.store._observe import METRICS as STORE_METRICS

from .helpers import echo_model, last_prompt, scripted, slow_model


async def test_offline_model_replies_from_the_conversation(agents: Agents) -> None:
    pid = await agents.start_agent("sushi-bot", AgentConfig(name="sushi"))
    first = await agents.run("sushi-bot", "How do I make nigiri?")
    second = await agents.run(pid, "And maki?")
    assert first.startswith(OFFLINE_MARK) and "nigiri" in first and "turn 1" in first
    assert "turn 2" in second and "nigiri" in second  # it read the conversation


async def test_offline_model_calls_a_named_tool_and_reports_its_result(agents: Agents) -> None:
    calls: list[tuple[int, int]] = []

    def add(a: int, b: int) -> int:
        """Add two numbers."""
        calls.append((a, b))
        return a + b

    await agents.start_agent("calc", AgentConfig(name="calc", tools=[add]))
    reply = await agents.run("calc", "please add 20 and 22")
    assert calls == [(20, 22)]
    assert reply == f"{OFFLINE_MARK} add returned 42."


async def test_tool_error_goes_back_to_the_model_not_into_the_server(agents: Agents) -> None:
    seen: list[str] = []

    def lookup(city: str) -> str:
        """Weather of a city."""
        raise KeyError(city)

    def fn(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        last = messages[-1]
        parts = getattr(last, "parts", [])
        retry = [p for p in parts if getattr(p, "outcome", None) in ("retried", "failed")]
        if retry:
            seen.append(str(retry[0].content))
            return ModelResponse(parts=[TextPart("sorry, no weather")])
        return ModelResponse(parts=[ToolCallPart("lookup", {"city": "Oslo"})])

    pid = await agents.start_agent("w", AgentConfig(name="w", model=scripted(fn), tools=[lookup]))
    assert await agents.run("w", "weather?") == "sorry, no weather"
    assert seen and "KeyError" in seen[0]
    assert agents.rt.alive(pid)


async def test_runcontext_tools_and_turn_context_are_visible_in_tools(agents: Agents) -> None:
    seen: list[TurnContext | None] = []

    async def whoami(ctx: Any) -> str:
        """Who is calling."""
        seen.append(current_turn())
        return "me"

    await agents.start_session("ctxbot", "u7", AgentConfig(name="ctxbot", tools=[whoami]))
    await agents.run("ctxbot-u7", "call whoami")
    ctx = seen[0]
    assert ctx is not None and ctx.agent == "ctxbot" and ctx.user == "u7"
    assert ctx.session == "ctxbot-u7" and ctx.chain == ("ctxbot",) and ctx.depth == 0
    assert ctx.task is not None and current_turn() is None


async def test_invalid_input_is_refused_before_the_model_is_called(agents: Agents) -> None:
    class Order(BaseModel):
        item: str
        qty: int

    calls: list[int] = []
    cfg = AgentConfig(name="orders", model=echo_model(calls), input_schema=Order)
    await agents.start_agent("orders", cfg)
    with pytest.raises(InvalidInputError) as e:
        await agents.run("orders", {"item": "tea", "qty": "many"})
    assert e.value.errors and "qty" in e.value.errors[0]
    assert calls == []
    assert await agents.history("orders") == []
    reply = await agents.run("orders", {"item": "tea", "qty": 2})
    assert '"qty":2' in reply and calls == [1]
    schema_cfg = AgentConfig(
        name="js", model=echo_model(), input_schema={"type": "object", "required": ["q"]}
    )
    await agents.start_agent("js", schema_cfg)
    with pytest.raises(InvalidInputError):
        await agents.run("js", {"x": 1})
    with pytest.raises(InvalidInputError):
        await agents.run("js", "not json")
    await agents.start_agent("plain", AgentConfig(name="plain"))
    with pytest.raises(InvalidInputError):
        await agents.run("plain", 42)
    with pytest.raises(InvalidInputError):
        await agents.run("plain", "   ")


async def test_output_is_validated_with_retries(agents: Agents) -> None:
    class Answer(BaseModel):
        city: str
        population: int

    attempts: list[int] = []

    def fn(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        attempts.append(1)
        tool = info.output_tools[0].name
        if len(attempts) == 1:
            return ModelResponse(parts=[ToolCallPart(tool, {"city": "Oslo"})])
        return ModelResponse(parts=[ToolCallPart(tool, {"city": "Oslo", "population": 700000})])

    await agents.start_agent(
        "geo", AgentConfig(name="geo", model=scripted(fn), output_schema=Answer)
    )
    out = await agents.run("geo", "Oslo?")
    assert out == Answer(city="Oslo", population=700000) and len(attempts) == 2


async def test_output_that_never_validates_fails_the_turn_and_keeps_memory(agents: Agents) -> None:
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 10}},
        "required": ["n"],
    }

    def fn(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name, {"n": 1})])

    cfg = AgentConfig(name="num", model=scripted(fn), output_schema=schema, output_retries=1)
    pid = await agents.start_agent("num", cfg)
    with pytest.raises(OutputValidationError) as e:
        await agents.run("num", "a number")
    assert agents.rt.alive(pid) and await agents.history("num") == []
    row = await agents.store.executions.get(e.value.execution_id or "")
    assert row.status == "failed" and row.kind == "agent_turn"
    offline = AgentConfig(
        name="offnum", output_schema={"type": "object", "properties": {"n": {"type": "integer"}}}
    )
    await agents.start_agent("offnum", offline)
    assert await agents.run("offnum", "give 12") == {"n": 12}


async def test_a_completed_turn_is_committed_with_its_execution(
    agents: Agents, store: Store
) -> None:
    await agents.start_agent("e", AgentConfig(name="e", model=echo_model()))
    result = await agents.run_turn("e", "hi")
    history = await store.conversations.history("e")
    assert len(history) == 2 and last_prompt(history) == "hi"
    row = await store.executions.get(result.execution_id)
    assert row.status == "succeeded" and row.session_id == "e" and row.agent_name == "e"
    assert row.tokens_in > 0 and row.tokens_out > 0 and row.duration_ms is not None
    assert row.details["chain"] == ["e"] and row.parent_id is None
    assert uuid.UUID(row.id).version == 7  # time-ordered: inserts at the index's right edge


async def test_a_lone_turn_commits_on_the_loop_and_concurrent_turns_on_the_thread(
    agents: Agents, store: Store
) -> None:
    await agents.start_agent("lone", AgentConfig(name="lone", model=echo_model()))
    before = STORE_METRICS.inline_commits
    await agents.run("lone", "hi")
    assert STORE_METRICS.inline_commits == before + 1  # the only turn in flight
    assert AGENT_METRICS.running == 0

    started = asyncio.Event()
    await agents.start_agent("slow", AgentConfig(name="slow", model=slow_model(0.3, started)))
    slow = asyncio.create_task(agents.run("slow", "wait"))
    await started.wait()
    assert AGENT_METRICS.running == 1
    before = STORE_METRICS.inline_commits
    await agents.run("lone", "again")  # another turn is running: the writer thread commits
    assert STORE_METRICS.inline_commits == before
    assert await slow == "slow wait"
    assert AGENT_METRICS.running == 0
    assert last_prompt(await store.conversations.history("lone")) == "again"
    assert len(await store.conversations.history("slow")) == 2


async def test_delegated_turn_records_its_parent_and_chain(agents: Agents, store: Store) -> None:
    async def ask_expert(question: str) -> str:
        """Ask the expert."""
        return str(await agents.run("expert", question, parent=current_turn()))

    await agents.start_agent("expert", AgentConfig(name="expert", model=echo_model()))
    await agents.start_agent("boss", AgentConfig(name="boss", tools=[ask_expert]))
    boss = await agents.run_turn("boss", "ask_expert 'what is 2+2'")
    assert "ask_expert returned" in boss.output
    parent = await store.executions.get(boss.execution_id)
    assert parent.status == "succeeded" and parent.tokens_in > 0
    children = (await store.executions.list(parent_id=boss.execution_id)).items
    assert len(children) == 1 and children[0].agent_name == "expert"
    assert children[0].details["chain"] == ["boss", "expert"] and children[0].details["depth"] == 1
    assert [e.id for e in await store.executions.chain(boss.execution_id)] == [
        boss.execution_id,
        children[0].id,
    ]


async def test_system_prompt_generator_sees_user_time_and_memory(agents: Agents) -> None:
    seen: list[PromptContext] = []
    instructions: list[str | None] = []

    async def prompt(ctx: PromptContext) -> str:
        seen.append(ctx)
        return f"You help {ctx.user}; {len(ctx.memory)} messages so far"

    def fn(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        instructions.append(info.instructions)
        return ModelResponse(parts=[TextPart("ok")])

    cfg = AgentConfig(name="gen", system_prompt=prompt, model=scripted(fn))
    sid, _ = await agents.start_session("gen", "ana", cfg)
    await agents.run(sid, "one")
    await agents.run(sid, "two")
    assert [c.user for c in seen] == ["ana", "ana"] and seen[0].now.tzinfo is not None
    assert instructions == ["You help ana; 0 messages so far", "You help ana; 2 messages so far"]


async def test_registry_metadata_load_and_lookup_helpers(agents: Agents, rt: Runtime) -> None:
    cfg = AgentConfig(name="support", capabilities=("billing", "refunds"))
    sid, pid = await agents.start_session("support", "user-1", cfg)
    await agents.start_session("support", "user-2", cfg)
    meta = rt.registry.meta(sid)
    assert meta == {
        "kind": "agent",
        "agent": "support",
        "session": "support-user-1",
        "user": "user-1",
        "capabilities": ["billing", "refunds"],
        "model": "offline",
        "version": None,  # not from a stored definition
    }
    assert agent_load(rt, pid) == 0 and agent_load(rt, "nobody") == 0
    assert agents.whereis(sid) == pid and agents.count_agents() == 2
    assert [a.name for a in agents.find_agents("user-1")] == ["support-user-1"]
    assert len(agents.find_agents("support-*")) == 2
    assert await agents.stop_agents_matching("user-") == 2
    assert agents.count_agents() == 0 and agents.whereis(sid) is None
    with pytest.raises(AgentNotFoundError):
        await agents.run(sid, "hello?")


async def test_events_are_published_for_lifecycle_and_turns(agents: Agents, rt: Runtime) -> None:
    sub = rt.events.subscribe("*")
    await agents.start_agent("ev", AgentConfig(name="ev"))
    await agents.run("ev", "hi")
    await agents.stop_agent("ev")
    got = []
    while len(got) < 4:
        got.append((await asyncio.wait_for(sub.get(), 5)).topic)
    assert got == [
        topics.AGENT_STARTED,
        topics.TURN_STARTED,
        topics.TURN_FINISHED,
        topics.AGENT_STOPPED,
    ]


def test_bad_configuration_is_refused_with_a_typed_error() -> None:
    with pytest.raises(AgentConfigError) as e:
        AgentConfig(name="9lives")
    assert e.value.field == "name"
    with pytest.raises(AgentConfigError):
        AgentConfig(turn_timeout=0)
    with pytest.raises(AgentConfigError):
        AgentConfig(input_schema={"type": 12})
    with pytest.raises(AgentConfigError):
        AgentConfig(owner_policy="linger")  # type: ignore[arg-type]


@pytest.mark.timeout(60)
async def test_a_finished_turn_is_freed_without_the_cyclic_collector(agents: Agents) -> None:
    # a turn's objects (its ticket, context, task handle, reply) used to form a reference
    # cycle per turn, left to the cyclic collector and promoted to its old generation under
    # load; refcounting alone frees them now
    from netsuke.agents._server import TurnTicket, _Turn

    await agents.start_agent("cyc", AgentConfig(name="cyc"))
    await agents.run("cyc", "warm up")
    gc.collect()
    gc.disable()
    try:
        for i in range(5):
            await agents.run("cyc", f"turn {i}")
        for _ in range(5):
            await asyncio.sleep(0)
        turns = [o for o in gc.get_objects() if type(o) is _Turn]
        tickets = [o for o in gc.get_objects() if type(o) is TurnTicket]
    finally:
        gc.enable()
    # the last turn's may still be referenced (the server's last message); none before it
    assert len(turns) <= 1 and len(tickets) <= 1
