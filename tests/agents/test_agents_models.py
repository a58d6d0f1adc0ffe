"""Models over real HTTP (a fake OpenAI-compatible server on 127.0.0.1), streaming, transient
retries, and the switch that forbids real model requests in tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic_ai import models
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, FunctionModel

from netsuke.agents import (
    AgentConfig,
    AgentConfigError,
    Agents,
    ModelCallError,
    RetryingModel,
    TextDelta,
    ToolCallFinished,
    ToolCallStarted,
    TurnCompleted,
    resolve_model,
)
from netsuke.store import Store

from .fake_openai import FakeOpenAI, fake_openai_server


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with fake_openai_server() as f, models.override_allow_model_requests(True):
        yield f


def weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def _cfg(fake: FakeOpenAI, **kw: object) -> AgentConfig:
    return AgentConfig(
        name="remote",
        model="openai-compatible:local-llm",
        base_url=fake.url,
        api_key="sk-test-secret",
        system_prompt="Be brief",
        **kw,  # type: ignore[arg-type]
    )


async def test_chat_completions_round_trip_with_tools_and_usage(
    agents: Agents, fake: FakeOpenAI, store: Store
) -> None:
    await agents.start_agent("remote", _cfg(fake, tools=[weather]))
    result = await agents.run_turn("remote", "hello")
    assert result.output.startswith("echo: hello (2 messages)")
    assert fake.requests[0]["messages"][0] == {"role": "system", "content": "Be brief"}
    reply = await agents.run("remote", "what is the weather?")
    assert reply == "the tool said sunny in Oslo"
    assert len(fake.requests) == 3 and len(fake.requests[2]["messages"]) == 6
    row = await store.executions.get(result.execution_id)
    assert (row.tokens_in, row.tokens_out) == (11, 7)


async def test_streaming_over_sse_yields_deltas_and_tool_events(
    agents: Agents, fake: FakeOpenAI
) -> None:
    await agents.start_agent("remote", _cfg(fake, tools=[weather]))
    events = [e async for e in agents.stream("remote", "weather please")]
    kinds = [type(e) for e in events]
    assert ToolCallStarted in kinds and ToolCallFinished in kinds and kinds[-1] is TurnCompleted
    started = next(e for e in events if isinstance(e, ToolCallStarted))
    assert started.tool_name == "weather" and started.args == {"city": "Oslo"}
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text.strip() == "the tool said sunny in Oslo"
    assert all(r.get("stream") for r in fake.requests)
    done = events[-1]
    assert isinstance(done, TurnCompleted) and done.output.strip() == text.strip()


async def test_transient_errors_are_retried_and_permanent_ones_are_typed(
    agents: Agents, fake: FakeOpenAI
) -> None:
    cfg = _cfg(fake)
    await agents.start_agent("remote", cfg)
    model = cfg._cache.get("model")
    fake.fail_next = [503, 429]
    assert (await agents.run("remote", "hi")).startswith("echo: hi")
    assert len(fake.requests) == 3
    assert isinstance(cfg._cache["model"], RetryingModel) and cfg._cache["model"].retried == 2
    fake.fail_next = [400]
    with pytest.raises(ModelCallError) as e:
        await agents.run("remote", "bad")
    assert e.value.status == 400 and not e.value.transient
    assert "sk-test-secret" not in str(e.value)
    assert len(await agents.history("remote")) == 2
    _ = model


async def test_real_model_requests_are_forbidden_in_tests(agents: Agents) -> None:
    cfg = AgentConfig(name="r", model="openai-compatible:x", base_url="http://127.0.0.1:9/v1")
    await agents.start_agent("r", cfg)
    with pytest.raises(ModelCallError) as e:
        await agents.run("r", "hi")
    assert "ALLOW_MODEL_REQUESTS" in str(e.value)


async def test_function_model_streaming(agents: Agents) -> None:
    async def stream_fn(messages: list[ModelMessage], info: AgentInfo):  # type: ignore[no-untyped-def]
        if len(messages) == 1:
            yield {0: DeltaToolCall(name="weather", json_args='{"city": "Rome"}')}
        else:
            yield "it is "
            yield "sunny"

    async def fn(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=[TextPart("x")])

    await agents.start_agent(
        "fs",
        AgentConfig(name="fs", model=FunctionModel(fn, stream_function=stream_fn), tools=[weather]),
    )
    events = [e async for e in agents.stream("fs", "go")]
    assert [type(e).__name__ for e in events] == [
        "ToolCallStarted",
        "ToolCallFinished",
        "TextDelta",
        "TextDelta",
        "TurnCompleted",
    ]
    finished = events[1]
    assert isinstance(finished, ToolCallFinished) and "sunny in Rome" in finished.result
    assert len(await agents.history("fs")) == 4


def test_model_names_resolve_or_fail_with_a_typed_error() -> None:
    assert resolve_model(None).model_name == "offline"
    assert isinstance(
        resolve_model("openai-chat:gpt-4o", base_url="http://127.0.0.1:1/v1", api_key="k"),
        RetryingModel,
    )
    assert isinstance(
        resolve_model("ollama:llama3.2", base_url="http://127.0.0.1:1/v1"), RetryingModel
    )
    with pytest.raises(AgentConfigError):
        resolve_model("nonsense-provider:xyz")
    with pytest.raises(AgentConfigError):
        resolve_model("openai-compatible:x")
