"""Anthropic models over real HTTP, through the ``anthropic`` SDK and pydantic-ai's
``AnthropicModel``, to a fake Messages API on 127.0.0.1 that checks ``x-api-key`` like the
real one (issue 15, item 5)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from pydantic_ai import Agent, DeprecatedModelWarning, models

from netsuke.agents import (
    AgentConfig,
    Agents,
    EndpointGuard,
    ModelCallError,
    ModelConfigError,
    RetryingModel,
    TextDelta,
    model_problem,
    parse_allow_hosts,
    resolve_model,
)
from netsuke.api._ssrf import is_forbidden_address
from netsuke.store import Store

from .fake_anthropic import FakeAnthropic, fake_anthropic_server

KEY = "sk-ant-fake-0123456789abcdef"
MODEL = "anthropic:claude-sonnet-4-6"


@pytest.fixture
def keyed() -> Iterator[FakeAnthropic]:
    with fake_anthropic_server(api_key=KEY) as f, models.override_allow_model_requests(True):
        yield f


def _guard(agents: Agents, fake: FakeAnthropic) -> None:
    """The node's guard (loopback refused) with the fake's host:port on the allow-list, as
    ``netsuke serve`` builds it from ``model_allow_hosts``."""
    allowed = fake.url.removeprefix("http://")
    agents.endpoint_guard = EndpointGuard(is_forbidden_address, parse_allow_hosts([allowed]))


async def _define(store: Store, name: str, **config: Any) -> None:
    await store.agents.create({"name": name, "model": MODEL, "config": config})


async def test_a_stored_anthropic_agent_sends_the_key_its_definition_names(
    agents: Agents, store: Store, keyed: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLAUDE_PROXY_API_KEY", KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-node-key-not-for-this-url")
    _guard(agents, keyed)
    await _define(store, "claude", base_url=keyed.url, api_key_env="CLAUDE_PROXY_API_KEY")
    ref = await agents.start_session("claude", "ann")
    assert await agents.run(ref.session_id, "hello") == "echo: hello (1 messages)"
    assert await agents.run(ref.session_id, "again") == "echo: again (3 messages)"
    assert keyed.keys == [KEY, KEY] and keyed.paths == ["/v1/messages"] * 2
    assert keyed.requests[0]["model"] == "claude-sonnet-4-6"
    assert keyed.requests[0]["messages"][0]["role"] == "user"


async def test_the_guard_refuses_the_fake_when_it_is_not_allowed(
    agents: Agents, store: Store, keyed: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLAUDE_PROXY_API_KEY", KEY)
    agents.endpoint_guard = EndpointGuard(is_forbidden_address, frozenset())
    await _define(store, "claude", base_url=keyed.url, api_key_env="CLAUDE_PROXY_API_KEY")
    ref = await agents.start_session("claude", "ann")
    with pytest.raises(ModelConfigError) as e:
        await agents.run(ref.session_id, "hello")
    assert "127.0.0.1" in e.value.reason and KEY not in e.value.reason
    assert keyed.keys == []  # nothing reached the server


async def test_a_tool_call_round_trip(
    agents: Agents, keyed: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    def weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", keyed.url)
    await agents.start_agent("w", AgentConfig(name="w", model=MODEL, tools=(weather,)))
    assert await agents.run("w", "what is the weather?") == "the tool said sunny in Oslo"
    assert keyed.requests[0]["tools"][0]["name"] == "weather"
    assert keyed.requests[1]["messages"][-1]["content"][0]["type"] == "tool_result"


async def test_a_wrong_key_fails_with_a_reason_naming_the_variable_not_the_key(
    agents: Agents, store: Store, keyed: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = "sk-ant-wrong-key-abcdef123456"
    monkeypatch.setenv("CLAUDE_PROXY_API_KEY", wrong)
    _guard(agents, keyed)
    await _define(store, "claude", base_url=keyed.url, api_key_env="CLAUDE_PROXY_API_KEY")
    ref = await agents.start_session("claude", "ann")
    with structlog.testing.capture_logs() as logs, pytest.raises(ModelCallError) as e:
        await agents.run(ref.session_id, "hello")
    assert e.value.status == 401 and not e.value.transient
    assert e.value.reason == (
        f"model {MODEL} at {keyed.url}: the provider refused the credentials (HTTP 401); "
        "check CLAUDE_PROXY_API_KEY"
    )
    assert keyed.keys == [wrong]  # a 401 is not retried
    row = await store.executions.get(str(e.value.execution_id))
    assert row.status == "failed" and row.error is not None
    for text in (e.value.reason, str(e.value), row.error, repr(logs)):
        assert wrong not in text and KEY not in text


async def test_transient_errors_are_retried_by_netsuke_only(
    agents: Agents, keyed: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SDK's own retries are off: 3 attempts are 3 requests, not 9."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", keyed.url)
    monkeypatch.setattr(RetryingModel, "_delay", lambda self, attempt: 0.0)
    keyed.fail_next = [529, 529, 529]
    cfg = AgentConfig(name="c", model=MODEL, model_retries=3)
    await agents.start_agent("c", cfg)
    with pytest.raises(ModelCallError) as e:
        await agents.run("c", "hello")
    assert e.value.status == 529 and e.value.transient
    assert len(keyed.requests) == 3
    keyed.fail_next = [503]
    assert (await agents.run("c", "hello")).startswith("echo: hello")
    assert len(keyed.requests) == 5


async def test_anthropic_through_its_standard_variables(
    agents: Agents, keyed: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No base_url, no api_key_env: ANTHROPIC_API_KEY (and ANTHROPIC_BASE_URL), as the SDK."""
    monkeypatch.setenv("ANTHROPIC_BASE_URL", keyed.url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    await agents.start_agent("c", AgentConfig(name="c", model=MODEL))
    assert (await agents.run("c", "hi")).startswith("echo: hi")
    assert keyed.keys == [KEY]


async def test_the_nodes_anthropic_key_never_goes_to_a_url_the_definition_chose(
    agents: Agents, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    with fake_anthropic_server() as fake, models.override_allow_model_requests(True):
        monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
        _guard(agents, fake)
        await _define(store, "proxy", base_url=fake.url)
        ref = await agents.start_session("proxy", "ann")
        assert (await agents.run(ref.session_id, "hi")).startswith("echo: hi")
        assert fake.keys == ["not-needed"]


async def test_streaming_sends_the_key_too(
    agents: Agents, keyed: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLAUDE_PROXY_API_KEY", KEY)
    cfg = AgentConfig(name="s", model=MODEL, base_url=keyed.url, api_key_env="CLAUDE_PROXY_API_KEY")
    await agents.start_agent("s", cfg)
    events = [e async for e in agents.stream("s", "hello there")]
    assert type(events[-1]).__name__ == "TurnCompleted"
    assert keyed.keys == [KEY] and keyed.requests[0]["stream"] is True
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert "echo: hello there" in text


async def test_a_missing_key_is_reported_before_the_first_turn(
    agents: Agents, store: Store, keyed: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("CLAUDE_PROXY_API_KEY", raising=False)
    assert model_problem(MODEL) == ("model", f"model {MODEL}: ANTHROPIC_API_KEY is not set")
    assert model_problem(MODEL, environ={"ANTHROPIC_API_KEY": "x"}) is None
    assert model_problem(MODEL, base_url=keyed.url, api_key_env="CLAUDE_PROXY_API_KEY") == (
        "config.api_key_env",
        f"model {MODEL}: CLAUDE_PROXY_API_KEY is not set",
    )
    assert model_problem(MODEL, base_url=keyed.url) is None  # keyless proxy
    await store.agents.create({"name": "c", "model": MODEL})
    ref = await agents.start_session("c", "ann")
    with pytest.raises(ModelConfigError) as e:
        await agents.run(ref.session_id, "hello")
    assert (e.value.field, e.value.reason) == (
        "model",
        f"model {MODEL}: ANTHROPIC_API_KEY is not set",
    )
    _guard(agents, keyed)
    await _define(store, "p", base_url=keyed.url, api_key_env="CLAUDE_PROXY_API_KEY")
    ref = await agents.start_session("p", "ann")
    with pytest.raises(ModelConfigError) as e:
        await agents.run(ref.session_id, "hello")
    assert e.value.field == "config.api_key_env"
    assert keyed.keys == []  # nothing was sent


async def test_a_model_its_provider_deprecated_still_runs_with_a_warning(
    agents: Agents, keyed: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pydantic-ai warns (``DeprecatedModelWarning``) for ``claude-sonnet-4-5``; the turn runs."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", keyed.url)
    await agents.start_agent("old", AgentConfig(name="old", model="anthropic:claude-sonnet-4-5"))
    with pytest.warns(DeprecatedModelWarning, match="claude-sonnet-4-5"):
        assert (await agents.run("old", "hi")).startswith("echo: hi")
    assert keyed.requests[0]["model"] == "claude-sonnet-4-5"


async def test_a_plain_request_without_streaming(keyed: FakeAnthropic) -> None:
    """``resolve_model`` used directly; a small ``max_tokens`` gets one JSON answer (pydantic-ai
    streams larger ones)."""
    model = resolve_model(MODEL, base_url=keyed.url, api_key=KEY)
    result = await Agent(model).run("hi", model_settings={"max_tokens": 256})
    assert result.output == "echo: hi (1 messages)"
    assert not keyed.requests[0].get("stream") and keyed.keys == [KEY]
    assert result.usage.input_tokens == 11 and result.usage.output_tokens == 7
