"""The webhooks repository on SQLite and PostgreSQL: registration, secrets kept out of
listings, deliveries written pending before any attempt, attempts recorded, cascade delete."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from netsuke.store import NotFoundError, Store, ValidationError


async def test_create_list_get_and_targets_carry_the_secret_only_for_the_dispatcher(
    store: Store,
) -> None:
    issued = await store.webhooks.create(
        "https://example.com/hook", ["agent.*"], secret="s" * 20, actor="admin:1"
    )
    assert issued.secret == "s" * 20
    got = await store.webhooks.get(issued.webhook.id)
    assert got == issued.webhook and not hasattr(got, "secret")
    page = await store.webhooks.list()
    assert [w.id for w in page.items] == [issued.webhook.id]
    (target,) = await store.webhooks.targets()
    assert target.secret == "s" * 20
    audit = await store.audit.list(action="webhook.create")
    assert audit.items[0].actor == "admin:1"


@pytest.mark.parametrize(
    ("url", "topics", "secret", "field"),
    [
        ("ftp://x/y", ["a"], "s" * 20, "url"),
        ("https://x/" + "y" * 2000, ["a"], "s" * 20, "url"),
        ("https://x/y", [], "s" * 20, "topics"),
        ("https://x/y", ["Bad Topic"], "s" * 20, "topics[0]"),
        ("https://x/y", ["a"], "short", "secret"),
    ],
)
async def test_bad_registrations_are_refused_and_nothing_is_written(
    store: Store, url: str, topics: list[str], secret: str, field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        await store.webhooks.create(url, topics, secret=secret)
    assert caught.value.field == field
    assert (await store.webhooks.list()).items == []


async def test_deliveries_are_pending_then_record_each_attempt(store: Store) -> None:
    hook = (await store.webhooks.create("https://x/y", ["a.*"], secret="s" * 20)).webhook
    (d,) = await store.webhooks.enqueue([(hook.id, "n-1", "a.b", '{"x":1}')])
    assert (d.status, d.attempts) == ("pending", 0)
    assert [x.id for x in await store.webhooks.due()] == [d.id]
    later = datetime.now(UTC) + timedelta(seconds=5)
    await store.webhooks.record_attempt(
        d.id,
        status="pending",
        attempts=1,
        response_status=500,
        error="HTTP 500",
        next_attempt_at=later,
    )
    await store.webhooks.record_attempt(
        d.id, status="succeeded", attempts=2, response_status=200, error=None, next_attempt_at=None
    )
    (logged,) = (await store.webhooks.deliveries(hook.id)).items
    assert (logged.status, logged.attempts, logged.response_status) == ("succeeded", 2, 200)
    assert await store.webhooks.due() == []
    assert (await store.webhooks.deliveries(hook.id, status="failed")).items == []


async def test_deliveries_paginate_newest_first(store: Store) -> None:
    hook = (await store.webhooks.create("https://x/y", ["a.*"], secret="s" * 20)).webhook
    await store.webhooks.enqueue([(hook.id, f"n-{i}", "a.b", "{}") for i in range(5)])
    first = await store.webhooks.deliveries(hook.id, limit=3)
    assert [d.event_id for d in first.items] == ["n-4", "n-3", "n-2"]
    rest = await store.webhooks.deliveries(hook.id, limit=3, cursor=first.next_cursor)
    assert [d.event_id for d in rest.items] == ["n-1", "n-0"] and rest.next_cursor is None
    with pytest.raises(ValidationError):
        await store.webhooks.deliveries(hook.id, cursor="nope")


async def test_delete_removes_the_webhook_and_its_deliveries(store: Store) -> None:
    hook = (await store.webhooks.create("https://x/y", ["a.*"], secret="s" * 20)).webhook
    await store.webhooks.enqueue([(hook.id, "n-1", "a.b", "{}")])
    await store.webhooks.delete(hook.id, actor="admin:1")
    with pytest.raises(NotFoundError):
        await store.webhooks.get(hook.id)
    with pytest.raises(NotFoundError):
        await store.webhooks.deliveries(hook.id)
    with pytest.raises(NotFoundError):
        await store.webhooks.delete(hook.id)
    assert await store.webhooks.due() == []
