"""Model credentials and failure reasons, over real HTTP to a fake OpenAI-compatible server on
127.0.0.1 that checks its key like a real provider (issue 15, items 4 and 5)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic_ai import models

from netsuke.agents import (
    AgentConfig,
    AgentConfigError,
    Agents,
    ModelCallError,
    ModelConfigError,
    model_problem,
    redact_secrets,
    resolve_model,
)
from netsuke.store import Store

from .fake_openai import FakeOpenAI, fake_openai_server

KEY = "sk-fake-0123456789abcdef"


@pytest.fixture
def keyed() -> Iterator[FakeOpenAI]:
    with fake_openai_server(api_key=KEY) as f, models.override_allow_model_requests(True):
        yield f


async def _define(store: Store, name: str, model: str, **config: Any) -> None:
    await store.agents.create({"name": name, "model": model, "config": config})


async def test_a_stored_agent_sends_the_key_its_definition_names(
    agents: Agents, store: Store, keyed: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VLLM_API_KEY", KEY)
    await _define(
        store, "vllm", "openai-compatible:qwen", base_url=keyed.url, api_key_env="VLLM_API_KEY"
    )
    ref = await agents.start_session("vllm", "ann")
    assert (await agents.run(ref.session_id, "hello")).startswith("echo: hello")
    assert keyed.auth == [f"Bearer {KEY}"]
    stored = await store.agents.get("vllm")
    assert stored.config == {"base_url": keyed.url, "api_key_env": "VLLM_API_KEY"}


async def test_a_wrong_key_fails_with_a_reason_naming_the_variable_not_the_key(
    agents: Agents, store: Store, keyed: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VLLM_API_KEY", "sk-wrong-key-abcdef123456")
    await _define(
        store, "vllm", "openai-compatible:qwen", base_url=keyed.url, api_key_env="VLLM_API_KEY"
    )
    ref = await agents.start_session("vllm", "ann")
    with pytest.raises(ModelCallError) as e:
        await agents.run(ref.session_id, "hello")
    assert e.value.status == 401 and not e.value.transient
    assert "refused the credentials (HTTP 401); check VLLM_API_KEY" in e.value.reason
    assert keyed.url.removesuffix("/v1") in e.value.reason
    row = await store.executions.get(str(e.value.execution_id))
    assert row.status == "failed" and row.error is not None
    for text in (e.value.reason, str(e.value), row.error):
        assert "sk-wrong" not in text and KEY not in text


async def test_a_missing_key_is_the_reason_of_the_failed_turn(
    agents: Agents, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    await _define(store, "gpt", "openai-chat:gpt-4o")
    ref = await agents.start_session("gpt", "ann")
    with pytest.raises(ModelConfigError) as e:
        await agents.run(ref.session_id, "hello")
    assert e.value.reason == "model openai-chat:gpt-4o: OPENAI_API_KEY is not set"
    assert e.value.field == "model"
    row = await store.executions.get(str(e.value.execution_id))
    assert row.error == "ModelConfigError: model openai-chat:gpt-4o: OPENAI_API_KEY is not set"


async def test_a_named_variable_that_is_not_set_is_reported(
    agents: Agents, store: Store, keyed: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    await _define(
        store, "vllm", "openai-compatible:qwen", base_url=keyed.url, api_key_env="VLLM_API_KEY"
    )
    ref = await agents.start_session("vllm", "ann")
    with pytest.raises(ModelConfigError) as e:
        await agents.run(ref.session_id, "hello")
    assert e.value.field == "config.api_key_env"
    assert e.value.reason == "model openai-compatible:qwen: VLLM_API_KEY is not set"
    assert keyed.auth == []  # nothing was sent


async def test_openai_through_its_standard_variables(
    agents: Agents, keyed: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``openai-chat:`` with no base_url: OPENAI_BASE_URL and OPENAI_API_KEY, as the SDK."""
    monkeypatch.setenv("OPENAI_BASE_URL", keyed.url)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    await agents.start_agent("gpt", AgentConfig(name="gpt", model="openai-chat:gpt-4o"))
    assert (await agents.run("gpt", "hi")).startswith("echo: hi")
    assert keyed.auth == [f"Bearer {KEY}"] and keyed.requests[0]["model"] == "gpt-4o"


async def test_the_nodes_openai_key_never_goes_to_a_url_the_definition_chose(
    agents: Agents, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    with fake_openai_server() as fake, models.override_allow_model_requests(True):
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        await _define(store, "proxy", "openai-chat:gpt-4o", base_url=fake.url)
        ref = await agents.start_session("proxy", "ann")
        await agents.run(ref.session_id, "hi")
        assert fake.auth == ["Bearer not-needed"]


async def test_ollama_with_a_base_url_and_a_named_key(
    agents: Agents, store: Store, keyed: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ollama speaks the chat-completions API under /v1 (a remote one may want a key)."""
    monkeypatch.setenv("OLLAMA_API_KEY", KEY)
    await _define(
        store, "llama", "ollama:llama3.2", base_url=keyed.url, api_key_env="OLLAMA_API_KEY"
    )
    ref = await agents.start_session("llama", "ann")
    assert (await agents.run(ref.session_id, "hi")).startswith("echo: hi")
    assert keyed.auth == [f"Bearer {KEY}"] and keyed.requests[0]["model"] == "llama3.2"


async def test_streaming_sends_the_key_too(
    agents: Agents, keyed: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLAMACPP_API_KEY", KEY)
    cfg = AgentConfig(
        name="cpp",
        model="openai-compatible:local",
        base_url=keyed.url,
        api_key_env="LLAMACPP_API_KEY",
    )
    await agents.start_agent("cpp", cfg)
    events = [e async for e in agents.stream("cpp", "hello there")]
    assert type(events[-1]).__name__ == "TurnCompleted"
    assert keyed.auth == [f"Bearer {KEY}"]


def test_what_keeps_a_model_from_working_is_reported_before_any_turn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("OLLAMA_BASE_URL", raising=False)
    env: dict[str, str] = {}
    assert model_problem("offline") is None
    assert model_problem("openai-chat:gpt-4o", environ=env) == (
        "model",
        "model openai-chat:gpt-4o: OPENAI_API_KEY is not set",
    )
    assert model_problem("openai-chat:gpt-4o", environ={"OPENAI_API_KEY": "x"}) is None
    assert model_problem("anthropic:claude-sonnet-4-6", environ=env) == (
        "model",
        "model anthropic:claude-sonnet-4-6: ANTHROPIC_API_KEY is not set",
    )
    with monkeypatch.context() as m:  # a node without the client library
        m.setitem(sys.modules, "anthropic", None)
        field, reason = model_problem("anthropic:claude-sonnet-4-6", environ=env) or ("", "")
        assert field == "model" and "pip install 'netsuke[anthropic]'" in reason
        with pytest.raises(AgentConfigError) as e:
            resolve_model("anthropic:claude-sonnet-4-6", api_key="k")
        assert "netsuke[anthropic]" in e.value.reason
    assert model_problem("ollama:llama3.2", environ=env) == (
        "config.base_url",
        "model ollama:llama3.2: set config.base_url or OLLAMA_BASE_URL",
    )
    assert model_problem("ollama:llama3.2", base_url="http://h:11434/v1", environ=env) is None
    assert model_problem("openai-compatible:m", environ=env) == (
        "config.base_url",
        "model openai-compatible:m: an openai-compatible model needs config.base_url",
    )
    assert model_problem(
        "openai-compatible:m", base_url="http://h/v1", api_key_env="AWS_SECRET_ACCESS_KEY"
    ) == (
        "config.api_key_env",
        "model openai-compatible:m: api_key_env must end in _API_KEY (or be HF_TOKEN), "
        "e.g. OPENAI_API_KEY or VLLM_API_KEY",
    )
    assert model_problem("deepseek:chat", base_url="http://h/v1", environ={}) == (
        "config.base_url",
        "model deepseek:chat: provider deepseek does not take a base_url",
    )
    assert model_problem("deepseek:chat", environ={}) == (
        "model",
        "model deepseek:chat: DEEPSEEK_API_KEY is not set",
    )
    responses = resolve_model("openai-responses:gpt-5", base_url="http://h/v1", api_key="k")
    assert type(responses).__name__ == "RetryingModel"
    assert type(responses.wrapped).__name__ == "OpenAIResponsesModel"  # type: ignore[attr-defined]
    with pytest.raises(AgentConfigError) as e:
        resolve_model("nonsense-provider:xyz")
    assert e.value.field == "model"
    with pytest.raises(AgentConfigError) as e:
        resolve_model("anthropic:claude-sonnet-4-6")
    assert e.value.reason == "model anthropic:claude-sonnet-4-6: ANTHROPIC_API_KEY is not set"


def test_secrets_are_redacted_from_reasons(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_SERVICE_TOKEN", "tok-abcdefgh12345")
    text = redact_secrets(
        "bad key sk-abc123def456 and Bearer xyz and tok-abcdefgh12345 and api_key=hunter22"
    )
    for secret in ("sk-abc123def456", "xyz", "tok-abcdefgh12345", "hunter22"):
        assert secret not in text
    assert len(redact_secrets("x" * 1000)) == 300
