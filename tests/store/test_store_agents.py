from __future__ import annotations

import asyncio

import pytest

from netsuke.store import (
    AlreadyExistsError,
    ConflictError,
    NotFoundError,
    Store,
    ValidationError,
)

from .helpers import agent


async def test_create_stores_version_one_with_every_field(store: Store) -> None:
    created = await store.agents.create(
        agent(
            "search",
            delegates=[],
            max_chain_depth=5,
            chain_strategy="parallel",
            output_schema={"type": "object"},
            config={"k": [1, 2]},
        ),
        actor="alice",
    )
    assert created.version == 1
    stored = await store.agents.get("search")
    assert stored == created
    assert stored.model == "openai:gpt-4o"
    assert stored.model_settings.temperature == 0.2
    assert stored.model_settings.max_tokens == 512
    assert stored.max_chain_depth == 5
    assert stored.chain_strategy == "parallel"
    assert stored.config == {"k": [1, 2]}
    assert stored.created_by == "alice"
    assert stored.created_at.tzinfo is not None


async def test_each_update_is_a_new_version_and_old_versions_are_kept(store: Store) -> None:
    v1 = await store.agents.create(agent("a"))
    v2 = await store.agents.update(agent("a", system_prompt="second"), expected_version=1)
    v3 = await store.agents.update(agent("a", system_prompt="third"), expected_version=2)
    assert [v.version for v in (v1, v2, v3)] == [1, 2, 3]
    history = await store.agents.versions("a")
    assert [v.system_prompt for v in history] == ["You are a.", "second", "third"]
    assert (await store.agents.get("a", 2)).system_prompt == "second"
    assert (await store.agents.get("a")).version == 3


async def test_update_with_unchanged_content_makes_no_new_version(store: Store) -> None:
    await store.agents.create(agent("a"))
    again = await store.agents.update(agent("a"), expected_version=1)
    assert again.version == 1
    assert len(await store.agents.versions("a")) == 1


async def test_rollback_writes_a_new_version_with_the_old_content(store: Store) -> None:
    await store.agents.create(agent("a", system_prompt="one", capabilities=["x"]))
    await store.agents.update(
        agent("a", system_prompt="two", capabilities=["y"]), expected_version=1
    )
    rolled = await store.agents.rollback("a", 1, expected_version=2, actor="bob")
    assert rolled.version == 3
    assert rolled.system_prompt == "one"
    assert rolled.comment == "rollback to version 1"
    assert (await store.agents.get("a", 1)).content_hash == rolled.content_hash
    assert [a.name for a in (await store.agents.list(capability="x")).items] == ["a"]
    assert (await store.agents.list(capability="y")).items == []
    with pytest.raises(NotFoundError):
        await store.agents.rollback("a", 99)


async def test_stale_update_is_a_conflict_carrying_the_current_version(store: Store) -> None:
    await store.agents.create(agent("a"))
    await store.agents.update(agent("a", system_prompt="mine"), expected_version=1)
    with pytest.raises(ConflictError) as caught:
        await store.agents.update(agent("a", system_prompt="theirs"), expected_version=1)
    assert caught.value.current_version == 2
    assert caught.value.expected_version == 1
    assert (await store.agents.get("a")).system_prompt == "mine"
    assert len(await store.agents.versions("a")) == 2


async def test_concurrent_updates_from_the_same_version_let_exactly_one_win(
    store: Store,
) -> None:
    await store.agents.create(agent("a"))
    results = await asyncio.gather(
        *[
            store.agents.update(agent("a", system_prompt=f"writer {i}"), expected_version=1)
            for i in range(8)
        ],
        return_exceptions=True,
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    losers = [r for r in results if isinstance(r, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(r, ConflictError) and r.current_version == 2 for r in losers)
    assert (await store.agents.get("a")).system_prompt == winners[0].system_prompt


async def test_create_of_a_taken_name_is_refused(store: Store) -> None:
    await store.agents.create(agent("a"))
    with pytest.raises(AlreadyExistsError) as caught:
        await store.agents.create(agent("a", system_prompt="other"))
    assert caught.value.current_version == 1


async def test_concurrent_creates_of_one_name_make_one_agent(store: Store) -> None:
    results = await asyncio.gather(
        *[store.agents.create(agent("same")) for _ in range(6)], return_exceptions=True
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, AlreadyExistsError) for r in results if isinstance(r, BaseException))
    assert await store.agents.count() == 1


async def test_delegates_must_exist_and_self_delegation_is_allowed(store: Store) -> None:
    await store.agents.create(agent("helper"))
    boss = await store.agents.create(agent("boss", delegates=["helper", "boss"]))
    assert boss.delegates == ["helper", "boss"]
    with pytest.raises(ValidationError) as caught:
        await store.agents.create(agent("lost", delegates=["helper", "ghost"]))
    assert caught.value.field == "delegates[1]"
    assert "ghost" in caught.value.reason
    assert not await store.agents.exists("lost")


async def test_delete_is_refused_while_delegated_to(store: Store) -> None:
    await store.agents.create(agent("helper"))
    await store.agents.create(agent("boss", delegates=["helper"]))
    with pytest.raises(ValidationError) as caught:
        await store.agents.delete("helper", expected_version=1)
    assert caught.value.field == "name"
    assert "boss" in caught.value.reason
    await store.agents.delete("boss", expected_version=1)
    await store.agents.delete("helper", expected_version=1)
    assert await store.agents.count() == 0
    with pytest.raises(NotFoundError):
        await store.agents.get("helper")


async def test_list_pages_by_name_with_filters(store: Store) -> None:
    for i in range(7):
        await store.agents.create(
            agent(
                f"agent{i}",
                model="anthropic:claude-sonnet-4-5" if i % 2 else "openai:gpt-4o",
                capabilities=["odd" if i % 2 else "even", "all"],
            )
        )
    await store.agents.create(agent("zz_under", capabilities=["a_b"]))
    await store.agents.create(agent("zzz", capabilities=["axb"]))
    names: list[str] = []
    cursor = None
    while True:
        page = await store.agents.list(limit=3, cursor=cursor, name_prefix="agent")
        names += [a.name for a in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert names == [f"agent{i}" for i in range(7)]
    odd = await store.agents.list(capability="odd")
    assert [a.name for a in odd.items] == ["agent1", "agent3", "agent5"]
    anthropic = await store.agents.list(model="anthropic:")
    assert [a.name for a in anthropic.items] == ["agent1", "agent3", "agent5"]
    exact = await store.agents.list(model="openai:gpt-4o", capability="all")
    assert len(exact.items) == 4
    # "_" is not a wildcard in capability filters
    assert [a.name for a in (await store.agents.list(capability="a_b")).items] == ["zz_under"]
    with pytest.raises(ValidationError):
        await store.agents.list(limit=0)


async def test_changes_are_audited_with_actor_and_version(store: Store) -> None:
    await store.agents.create(agent("a"), actor="alice")
    await store.agents.update(agent("a", description="d2"), expected_version=1, actor="bob")
    await store.agents.rollback("a", 1, actor="carol")
    entries = (await store.audit.list(target="agent:a")).items
    assert [(e.actor, e.action, e.details["version"]) for e in entries] == [
        ("carol", "agent.rollback", 3),
        ("bob", "agent.update", 2),
        ("alice", "agent.create", 1),
    ]
    assert all(e.outcome == "ok" for e in entries)
