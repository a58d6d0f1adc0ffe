from __future__ import annotations

import pytest

from netsuke.store import AgentSpec, NotFoundError, Store, ValidationError

from .helpers import agent


async def test_spec_carries_everything_needed_to_run_the_agent(store: Store) -> None:
    await store.agents.create(agent("helper"))
    await store.agents.create(
        agent(
            "boss",
            delegates=["helper"],
            max_chain_depth=2,
            chain_strategy="router",
            model_settings={
                "temperature": 0.7,
                "top_p": 0.9,
                "presence_penalty": 0.1,
                "frequency_penalty": -0.1,
                "max_tokens": 99,
            },
            output_schema={"type": "object", "properties": {"answer": {"type": "string"}}},
        )
    )
    spec = await store.factory.spec("boss")
    assert isinstance(spec, AgentSpec)
    assert spec.name == "boss"
    assert spec.version == 1
    assert spec.model == "openai:gpt-4o"
    assert spec.model_settings == {
        "temperature": 0.7,
        "top_p": 0.9,
        "presence_penalty": 0.1,
        "frequency_penalty": -0.1,
        "max_tokens": 99,
    }
    assert spec.pydantic_ai_settings()["max_tokens"] == 99
    assert spec.tools == ("web_search",)
    assert spec.capabilities == ("search",)
    assert spec.delegates == ("helper",)
    assert spec.max_chain_depth == 2
    assert spec.chain_strategy == "router"
    assert spec.output_schema == {"type": "object", "properties": {"answer": {"type": "string"}}}
    assert spec.system_prompt == "You are boss."


async def test_spec_of_an_old_version_and_of_a_missing_agent(store: Store) -> None:
    await store.agents.create(agent("a", system_prompt="v1"))
    await store.agents.update(agent("a", system_prompt="v2"), expected_version=1)
    assert (await store.factory.spec("a", 1)).system_prompt == "v1"
    assert (await store.factory.spec("a")).version == 2
    with pytest.raises(NotFoundError):
        await store.factory.spec("ghost")


async def test_register_agent_at_run_time_notifies_subscribers(store: Store) -> None:
    seen: list[tuple[str, int]] = []
    seen_async: list[str] = []

    async def on_async(spec: AgentSpec) -> None:
        seen_async.append(spec.name)

    def broken(spec: AgentSpec) -> None:
        raise RuntimeError("subscriber bug")

    unsubscribe = store.factory.on_register(lambda s: seen.append((s.name, s.version)))
    store.factory.on_register(broken)
    store.factory.on_register(on_async)
    first = await store.factory.register_agent(agent("SearchAgent", capabilities=["search"]))
    assert first.version == 1
    same = await store.factory.register_agent(agent("SearchAgent", capabilities=["search"]))
    assert same.version == 1
    changed = await store.factory.register_agent(agent("SearchAgent", capabilities=["filter"]))
    assert changed.version == 2
    assert seen == [("SearchAgent", 1), ("SearchAgent", 1), ("SearchAgent", 2)]
    assert seen_async == ["SearchAgent"] * 3
    unsubscribe()
    await store.factory.register_agent(agent("Other"))
    assert len(seen) == 3
    assert (await store.factory.spec("SearchAgent")).capabilities == ("filter",)


async def test_register_agent_refuses_an_invalid_definition(store: Store) -> None:
    with pytest.raises(ValidationError) as caught:
        await store.factory.register_agent(agent("x", model="???"))
    assert caught.value.field == "model"
    assert await store.agents.count() == 0


async def test_spec_resolves_tools_that_are_stored_functions(store: Store) -> None:
    await store.functions.put({"name": "lookup", "code": "def lookup(q):\n    return q\n"})
    await store.functions.put({"name": "lookup", "code": "def lookup(q):\n    return [q]\n"})
    await store.agents.create(agent("a", tools=["lookup", "web_search"]))
    spec = await store.factory.spec("a")
    assert spec.tools == ("lookup", "web_search")
    assert [(f.name, f.version) for f in spec.functions] == [("lookup", 2)]
    assert "return [q]" in spec.functions[0].code


async def test_seed_004_config_data_shape_is_mapped(store: Store) -> None:
    """Seed 004's ``Agent(name=..., config_data={...}, max_chain_depth=...)``."""
    spec = await store.factory.register_agent(
        {
            "name": "SearchAgent",
            "description": "Handles search queries",
            "system_prompt": "You are a search assistant...",
            "config_data": {
                "type": "agent",
                "capabilities": ["search", "filter"],
                "max_chain_depth": 3,
                "chain_strategy": "sequential",
                "temperature": 0.7,
                "top_p": 1.0,
                "presence_penalty": 0.0,
                "frequency_penalty": 0.0,
                "region": "eu",
            },
            "max_chain_depth": 3,
        }
    )
    assert spec.capabilities == ("search", "filter")
    assert spec.max_chain_depth == 3 and spec.chain_strategy == "sequential"
    assert spec.model_settings == {
        "temperature": 0.7,
        "top_p": 1.0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
    }
    assert spec.config == {"region": "eu"}


@pytest.mark.parametrize(
    ("config_data", "extra", "needle"),
    [
        ({"max_chain_depth": 2}, {"max_chain_depth": 3}, "config_data.max_chain_depth"),
        ({"temperature": 0.1}, {"model_settings": {"temperature": 0.2}}, "config_data.temperature"),
        ({"type": "function"}, {}, "config_data.type"),
        ({"temperature": 9.0}, {}, "temperature"),
        ("search", {}, "config_data must be an object"),
    ],
)
async def test_seed_004_config_data_conflicts_are_refused(
    store: Store, config_data: object, extra: dict[str, object], needle: str
) -> None:
    with pytest.raises(ValidationError) as ei:
        await store.factory.register_agent({"name": "seed", "config_data": config_data, **extra})
    assert needle in str(ei.value)
    with pytest.raises(NotFoundError):
        await store.agents.get("seed")
