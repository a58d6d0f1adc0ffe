"""A turn's own work does not grow with its conversation, and the memory a server keeps between
turns is always the committed history (or its window).

Costs are counted, not timed: the offline model's count of earlier messages it tallied, and
the Python calls made by Netsuke's own code in one turn (cProfile's deterministic count)."""

from __future__ import annotations

import asyncio
import cProfile
import pstats
import random
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from pydantic_ai import Agent
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
from pydantic_ai.models.function import AgentInfo, FunctionModel

from netsuke import Runtime
from netsuke.agents import (
    AgentConfig,
    Agents,
    MemoryPolicy,
    SessionMovedError,
    TextDelta,
    TurnCancelledError,
    TurnCompleted,
    TurnError,
    current_turn,
)
from netsuke.agents._offline import OfflineModel
from netsuke.store import Store


def _turn_seen(reply: object) -> int:
    found = re.search(r"\(turn (\d+)\)", str(reply))
    assert found is not None, reply
    return int(found.group(1))


def _prompts(messages: list[ModelMessage]) -> list[str]:
    return [
        str(p.content)
        for m in messages
        if isinstance(m, ModelRequest)
        for p in m.parts
        if isinstance(p, UserPromptPart)
    ]


async def _memory(rt: Runtime, sid: str) -> list[ModelMessage] | None:
    pid = rt.whereis(sid)
    assert pid is not None
    out: list[ModelMessage] | None = await rt.call(pid, "history")
    return out


def _netsuke_calls(stats: pstats.Stats) -> int:
    """Calls made by Netsuke's own functions (a C function's call counts for its caller)."""
    n = 0
    for fn, v in stats.stats.items():  # type: ignore[attr-defined]
        if fn[0] != "~":
            if "/netsuke/" in fn[0]:
                n += v[1]
            continue
        for caller, cv in v[4].items():
            if "/netsuke/" in caller[0]:
                n += cv[0]
    return n


async def _profiled(coro: Any) -> int:
    prof = cProfile.Profile()
    prof.enable()
    try:
        await coro
    finally:
        prof.disable()
    return _netsuke_calls(pstats.Stats(prof))


@pytest.mark.timeout(60)
async def test_the_offline_model_tallies_only_the_messages_since_its_last_turn(
    agents: Agents,
) -> None:
    cfg = AgentConfig(name="tally")
    await agents.start_agent("tally", cfg)
    assert _turn_seen(await agents.run("tally", "p1")) == 1
    model = cfg._cache["model"]
    assert isinstance(model, OfflineModel)
    for k in range(2, 41):
        before = model.scanned
        reply = await agents.run("tally", f"p{k}")
        assert _turn_seen(reply) == k and f"Before that you said 'p{k - 1}'" in reply
        # the previous turn's request and response: never the whole conversation
        assert model.scanned - before <= 2, (k, model.scanned - before)


def _add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@pytest.mark.timeout(60)
async def test_sessions_sharing_initial_memory_keep_their_own_tallies(agents: Agents) -> None:
    """Sessions of one agent start from the same ``initial_memory`` message objects; taking
    turns in alternation, each still reads only its own new messages."""
    head = ModelRequest(parts=[SystemPromptPart("house rules")])
    cfg = AgentConfig(name="shared", initial_memory=[head])
    for s in ("a", "b", "c"):
        await agents.start_agent(f"shared-{s}", cfg)
    for s in ("a", "b", "c"):
        await agents.run(f"shared-{s}", f"{s}1")
    model = cfg._cache["model"]
    assert isinstance(model, OfflineModel)
    for k in range(2, 16):
        for s in ("a", "b", "c"):
            before = model.scanned
            reply = await agents.run(f"shared-{s}", f"{s}{k}")
            assert _turn_seen(reply) == k and f"Before that you said '{s}{k - 1}'" in reply
            assert model.scanned - before <= 2, (s, k, model.scanned - before)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("memory", "tools"),
    [
        (MemoryPolicy(), False),
        (MemoryPolicy(), True),
        (MemoryPolicy(max_tokens=60), False),
        (MemoryPolicy(max_messages=6), False),
    ],
    ids=["unbounded", "tool_calls", "max_tokens", "max_messages"],
)
async def test_netsukes_own_calls_per_turn_do_not_grow_with_the_conversation(
    agents: Agents, memory: MemoryPolicy, tools: bool
) -> None:
    """pydantic-ai's per-run work on the history grows with it (not Netsuke's to change); the
    agent server's, the runner's, the memory policy's and the offline model's must not."""
    cfg = AgentConfig(name="calls", memory=memory, tools=[_add] if tools else [])
    await agents.start_agent("calls", cfg)
    prompt = "add 2 and 3" if tools else "hello again"
    for k in range(1, 6):
        await agents.run("calls", f"hello number {k}")
    early = min([await _profiled(agents.run("calls", prompt)) for _ in range(3)])
    for k in range(60):
        await agents.run("calls", f"add {k} and 1" if tools and k % 2 else f"hello number {k}")
    late = min([await _profiled(agents.run("calls", prompt)) for _ in range(3)])
    # 60 more turns (120 messages or more): a walk of the history adds hundreds of calls; a
    # bounded memory varies within its bound (trimmed in batches under max_messages)
    assert late <= early + 100, (early, late)


@pytest.mark.timeout(60)
async def test_offline_usage_is_the_function_models_estimate() -> None:
    """Tallied, the offline model's token usage is what ``FunctionModel`` estimates from the
    whole history."""
    offline: Agent[None, str] = Agent(OfflineModel())
    history: list[ModelMessage] = []
    ref_history: list[ModelMessage] = []
    for k in range(1, 8):
        r = await offline.run(f"tell me about item {k}, please", message_history=history)
        text = r.output

        async def same(messages: list[ModelMessage], info: AgentInfo, t: str = text) -> Any:
            return ModelResponse(parts=[TextPart(t)])

        ref = await Agent(FunctionModel(same)).run(
            f"tell me about item {k}, please", message_history=ref_history
        )
        assert (r.usage.input_tokens, r.usage.output_tokens) == (
            ref.usage.input_tokens,
            ref.usage.output_tokens,
        ), k
        history, ref_history = r.all_messages(), ref.all_messages()
    assert _turn_seen(text) == 7


@pytest.mark.timeout(60)
async def test_memory_equals_the_store_after_many_turns_with_tools(
    agents: Agents, rt: Runtime, store: Store
) -> None:
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    await agents.start_agent("many", AgentConfig(name="many", tools=[add]))
    for k in range(1, 61):
        reply = await agents.run("many", f"add {k} and 1" if k % 7 == 0 else f"note {k}")
        if k % 7:
            assert _turn_seen(reply) == k
        else:
            assert reply.endswith(f"add returned {k + 1}.")
    stored = await store.conversations.history("many")
    assert await _memory(rt, "many") == stored
    assert len(_prompts(stored)) == 60


@pytest.mark.timeout(60)
async def test_a_cancelled_or_failed_turn_is_neither_in_memory_nor_stored(
    agents: Agents, rt: Runtime, store: Store
) -> None:
    started = asyncio.Event()

    async def wait(x: str) -> str:
        """Wait for ever."""
        started.set()
        await asyncio.sleep(30)
        return x

    def boom(x: str) -> str:
        """Fail."""
        raise RuntimeError("boom")

    cfg = AgentConfig(name="cx", tools=[wait, boom], tool_retries=0)
    await agents.start_agent("cx", cfg)
    for k in range(1, 4):
        await agents.run("cx", f"p{k}")
    turn = asyncio.ensure_future(agents.run("cx", "wait 'here'"))
    await asyncio.wait_for(started.wait(), 5)
    assert await agents.cancel("cx")
    with pytest.raises(TurnCancelledError):
        await turn
    with pytest.raises(TurnError):  # the tool fails, no retry left: the turn fails
        await agents.run("cx", "boom 'now'")
    stored = await store.conversations.history("cx")
    assert _prompts(stored) == ["p1", "p2", "p3"]
    assert await _memory(rt, "cx") == stored
    reply = await agents.run("cx", "p4")
    assert _turn_seen(reply) == 4 and "Before that you said 'p3'" in reply


@pytest.mark.timeout(60)
async def test_a_fenced_turn_drops_the_memory_and_the_next_turn_reloads_the_store(
    agents: Agents, rt: Runtime, store: Store
) -> None:
    await agents.start_agent("fx", AgentConfig(name="fx"))
    for k in range(1, 4):
        await agents.run("fx", f"p{k}")
    # a successor (another process of this node) claims the session: our incarnation is old
    await store.conversations.open("fx", agent_name="fx", claim=True)
    with pytest.raises(SessionMovedError):
        await agents.run("fx", "lost")
    assert await _memory(rt, "fx") is None  # nothing cached to serve
    assert _prompts(await store.conversations.history("fx")) == ["p1", "p2", "p3"]
    reply = await agents.run("fx", "p4")  # claims again and reloads the store
    assert _turn_seen(reply) == 4 and "Before that you said 'p3'" in reply
    assert await _memory(rt, "fx") == await store.conversations.history("fx")


def _recording(seen: list[list[str]]) -> FunctionModel:
    async def fn(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        seen.append(_prompts(messages))
        return ModelResponse(parts=[TextPart("r" * 30)])

    return FunctionModel(fn)


@pytest.mark.timeout(60)
async def test_a_token_window_is_the_same_kept_trimmed_and_after_a_restart(
    agents: Agents, rt: Runtime, store: Store
) -> None:
    """The model sees ``policy.apply`` of the stored history before each turn, whether the
    server kept its memory trimmed for many turns or reloaded it from the store."""
    seen: list[list[str]] = []
    policy = MemoryPolicy(max_tokens=40)
    sys_part = ModelRequest(parts=[SystemPromptPart("house rules")])
    cfg = AgentConfig(name="win", model=_recording(seen), memory=policy, initial_memory=[sys_part])
    pid = await agents.start_agent("win", cfg)
    for k in range(1, 31):
        before = await store.conversations.history("win")
        await agents.run("win", f"prompt {k} " + "x" * (k % 5) * 7)
        assert seen[-1] == [*_prompts(policy.apply(before)), f"prompt {k} " + "x" * (k % 5) * 7]
    mem = await _memory(rt, "win")
    assert mem is not None and len(mem) < 20  # trimmed: not 61 messages
    sub = rt.events.subscribe("agent.restarted")
    rt.exit(pid, RuntimeError("boom"))
    await asyncio.wait_for(sub.get(), 5)
    before = await store.conversations.history("win")
    await agents.run("win", "after restart")
    assert seen[-1] == [*_prompts(policy.apply(before)), "after restart"]


@pytest.mark.timeout(60)
async def test_streamed_turns_after_a_long_conversation(agents: Agents) -> None:
    await agents.start_agent("st", AgentConfig(name="st"))
    for k in range(1, 31):
        await agents.run("st", f"p{k}")
    text = ""
    done = None
    async for ev in agents.stream("st", "streamed"):
        if isinstance(ev, TextDelta):
            text += ev.text
        elif isinstance(ev, TurnCompleted):
            done = ev
    assert done is not None and _turn_seen(done.output) == 31 == _turn_seen(text)
    assert "Before that you said 'p30'" in text
    reply = await agents.run("st", "after")
    assert _turn_seen(reply) == 32 and "Before that you said 'streamed'" in reply


def _random_turn(i: int, rnd: random.Random) -> list[ModelMessage]:
    parts: list[Any] = [SystemPromptPart(f"s{i}")] if rnd.random() < 0.1 else []
    msgs: list[ModelMessage] = [
        ModelRequest(parts=[*parts, UserPromptPart("u" * rnd.randint(1, 40))])
    ]
    for c in range(rnd.randint(0, 2)):
        cid = f"c{i}-{c}"
        msgs.append(ModelResponse(parts=[ToolCallPart("t", {"a": "x" * rnd.randint(0, 30)}, cid)]))
        msgs.append(ModelRequest(parts=[ToolReturnPart("t", "r" * rnd.randint(0, 30), cid)]))
    msgs.append(ModelResponse(parts=[TextPart("x" * rnd.randint(1, 60))]))
    return msgs


@pytest.mark.timeout(60)
def test_windows_of_a_trimmed_memory_are_the_windows_of_the_whole_history() -> None:
    rnd = random.Random(7)
    checked = 0
    for _ in range(300):
        policy = MemoryPolicy(
            max_messages=rnd.choice([None, 1, 3, 6, 10]),
            max_tokens=rnd.choice([None, 5, 20, 60, 200]),
        )
        full: list[ModelMessage] = []
        if rnd.random() < 0.5:
            full.append(ModelRequest(parts=[SystemPromptPart("head")]))
        mem = list(full)
        for i in range(rnd.randint(1, 40)):
            turn = _random_turn(i, rnd)
            full = full + turn
            mem = policy.trim(mem + turn)
            assert policy.apply(mem) == policy.apply(full)
            checked += 1
        if policy.bounded:
            assert len(mem) <= len(policy.apply(full)) + 1 + 2 * (policy.max_messages or 0) + 8
    assert checked > 1000


@pytest.mark.timeout(60)
async def test_a_committed_turn_whose_early_row_cannot_be_closed_still_reaches_memory(
    agents: Agents, rt: Runtime, store: Store, tmp_path: Path
) -> None:
    """A delegating turn's row is written early and closed after its messages are committed;
    when closing fails (here: the row was deleted meanwhile), the turn is stored, so it
    succeeds and the memory holds it, as the store does."""

    async def ask_expert(question: str) -> str:
        """Ask the expert, then lose this turn's execution row."""
        ctx = current_turn()
        assert ctx is not None
        answer = str(await agents.run("expert", question, parent=ctx))

        def delete() -> None:
            conn = sqlite3.connect(tmp_path / "agents.db", timeout=10)
            try:
                conn.execute("DELETE FROM executions WHERE id = ?", (ctx.execution_id,))
                conn.commit()
            finally:
                conn.close()

        await asyncio.to_thread(delete)
        return answer

    await agents.start_agent("expert", AgentConfig(name="expert"))
    await agents.start_agent("boss", AgentConfig(name="boss", tools=[ask_expert]))
    await agents.run("boss", "hello")
    reply = await agents.run("boss", "ask_expert 'what is 2+2'")
    assert "ask_expert returned" in reply
    stored = await store.conversations.history("boss")
    assert len(_prompts(stored)) == 2
    assert await _memory(rt, "boss") == stored
    assert _turn_seen(await agents.run("boss", "next")) == 3
