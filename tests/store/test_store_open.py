from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydantic_ai.messages import ModelRequest, UserPromptPart

from netsuke.store import ENV_URL, Store, StoreClosedError, ValidationError, resolve_url

from .helpers import agent


async def test_url_comes_from_the_environment_when_not_given(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_URL, db_url)
    async with Store.open(migrate=True) as store:
        assert store.url == resolve_url(db_url)
        await store.agents.create(agent("a"))
    async with Store.open(db_url, migrate=True) as again:
        assert await again.agents.exists("a")


async def test_default_is_an_embedded_sqlite_file_under_dot_netsuke(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV_URL, raising=False)
    monkeypatch.chdir(tmp_path)
    async with Store.open() as store:
        assert store.dialect == "sqlite"
        await store.agents.create(agent("embedded"))
    assert (tmp_path / ".netsuke" / "netsuke.db").is_file()


def test_urls_get_async_drivers_and_other_databases_are_refused() -> None:
    assert resolve_url("sqlite:///x.db") == "sqlite+aiosqlite:///x.db"
    assert resolve_url("postgresql://u@h/db") == "postgresql+asyncpg://u@h/db"
    with pytest.raises(ValidationError) as caught:
        resolve_url("mysql://host/db")
    assert caught.value.field == "url"


@pytest.mark.parametrize("url", ["sqlite:///:memory:", "sqlite+aiosqlite://"])
async def test_in_memory_sqlite_is_refused(url: str) -> None:
    with pytest.raises(ValidationError) as caught:
        await Store.open(url)
    assert caught.value.field == "url"


async def test_two_stores_on_one_database_write_concurrently(db_url: str) -> None:
    async with Store.open(db_url, migrate=True) as one, Store.open(db_url) as two:
        await one.conversations.open("s", agent_name="a")
        message = [ModelRequest(parts=[UserPromptPart("hi")])]

        async def turns(store: Store) -> None:
            for _ in range(20):
                await store.conversations.append_turn("s", message)

        async def definitions(store: Store, prefix: str) -> None:
            for i in range(10):
                await store.agents.create(agent(f"{prefix}{i}"))

        await asyncio.gather(
            turns(one), turns(two), definitions(one, "agent"), definitions(two, "other")
        )
        assert (await two.conversations.get("s")).message_count == 40
        assert await one.agents.count() == 20


async def test_a_closed_store_refuses_work(db_url: str) -> None:
    store = await Store.open(db_url, migrate=True)
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(StoreClosedError):
        await store.agents.get("a")
    with pytest.raises(StoreClosedError):
        await store.conversations.append_turn("s", [])


async def test_append_after_close_is_refused_without_group_commit(db_url: str) -> None:
    store = await Store.open(db_url, migrate=True, group_commit=False)
    await store.conversations.open("s", agent_name="a")
    await store.close()
    with pytest.raises(StoreClosedError):
        await store.conversations.append_turn("s", [])
