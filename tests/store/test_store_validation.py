from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netsuke.store import KNOWN_PROVIDERS, Store, ValidationError, validate_model_string
from netsuke.store._validation import ITEM_NAME

from .helpers import agent

BAD_DRAFTS: list[tuple[dict[str, Any], str]] = [
    ({"input_schema": {"type": "nonsense"}}, "input_schema"),
    (
        {"output_schema": {"type": "object", "properties": {"a": {"minLength": -1}}}},
        "output_schema",
    ),
    ({"input_schema": ["not", "an", "object"]}, "input_schema"),
    ({"model": "gpt-4o"}, "model"),
    ({"model": "skynet:t-800"}, "model"),
    ({"model": "openai:"}, "model"),
    ({"model": "openai:gpt 4o; drop table"}, "model"),
    ({"model": "openai-compatible:llama3", "config": {"base_url": "ftp://x"}}, "config.base_url"),
    ({"capabilities": ["Search"]}, "capabilities[0]"),
    ({"capabilities": ["ok", "has space"]}, "capabilities[1]"),
    ({"capabilities": ["dup", "dup"]}, "capabilities[1]"),
    ({"tools": ["web_search", "rm -rf"]}, "tools[1]"),
    ({"tools": ["9lives"]}, "tools[0]"),
    ({"delegates": ["ghost"]}, "delegates[0]"),
    ({"name": "bad name"}, "name"),
    ({"name": ""}, "name"),
    ({"model_settings": {"temperature": 3.5}}, "model_settings.temperature"),
    ({"model_settings": {"top_p": -0.1}}, "model_settings.top_p"),
    ({"model_settings": {"max_tokens": 0}}, "model_settings.max_tokens"),
    ({"model_settings": {"seed": 1}}, "model_settings.seed"),
    ({"max_chain_depth": 99}, "max_chain_depth"),
    ({"chain_strategy": "chaos"}, "chain_strategy"),
    ({"unknown_field": 1}, "unknown_field"),
    ({"capabilities": "search"}, "capabilities"),
]


@pytest.mark.parametrize(("fields", "field"), BAD_DRAFTS)
async def test_invalid_definition_is_refused_with_its_field_and_nothing_is_written(
    store: Store, fields: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        await store.agents.create({**agent("x"), **fields})
    assert caught.value.field == field
    assert caught.value.reason
    assert await store.agents.count() == 0
    assert (await store.audit.list()).items == []


async def test_invalid_update_leaves_the_current_version(store: Store) -> None:
    await store.agents.create(agent("x"))
    with pytest.raises(ValidationError) as caught:
        await store.agents.update(agent("x", tools=["BAD"]), expected_version=1)
    assert caught.value.field == "tools[0]"
    assert len(await store.agents.versions("x")) == 1


async def test_accepted_model_forms(store: Store) -> None:
    for i, model in enumerate(
        [
            "test",
            "offline",
            "anthropic:claude-sonnet-4-5",
            "openai-responses:gpt-5",
            "google-gla:gemini-2.5-pro",
            "groq:llama-3.3-70b-versatile",
            "ollama:llama3.2:3b",
            "bedrock:anthropic.claude-3-5-sonnet-20241022-v2:0",
            "openai-compatible:qwen/qwen3",
        ]
    ):
        stored = await store.agents.create(agent(f"m{i}", model=model))
        assert stored.model == model


@given(
    provider=st.sampled_from(sorted(KNOWN_PROVIDERS)),
    name=st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,40}\Z"),
)
def test_every_known_provider_with_a_clean_model_name_is_accepted(provider: str, name: str) -> None:
    assert validate_model_string(f"{provider}:{name}") == provider


@given(st.text(max_size=30))
def test_a_model_string_is_accepted_only_with_a_known_provider(model: str) -> None:
    provider = model.partition(":")[0]
    if model in ("test", "offline") or provider in KNOWN_PROVIDERS:
        return  # well-formed or not, covered by the tests above
    with pytest.raises(ValidationError) as caught:
        validate_model_string(model)
    assert caught.value.field == "model"


@given(st.text(max_size=70))
def test_item_names_follow_the_documented_pattern(name: str) -> None:
    ok = (
        0 < len(name) <= 64
        and "a" <= name[0] <= "z"
        and all(c.isascii() and (c.islower() or c.isdigit() or c in "_.-") for c in name)
    )
    assert bool(ITEM_NAME.match(name)) == ok
