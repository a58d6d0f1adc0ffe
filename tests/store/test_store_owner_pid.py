"""The stored owner link of a session (migration 0014, ``conversations.owner_pid``), on SQLite
and PostgreSQL: every claim records the claiming process's owner in its own statement, an
owner attached later and an owner's exit write it fenced by the epoch, and a survivor reads it
back (``Agents.revive``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from netsuke.store import NodeIdentity, Store, ValidationError

pytestmark = pytest.mark.timeout(60)

A = NodeIdentity("alpha", 1)
B = NodeIdentity("beta", 1)
X = '{"$p":["web#17",42]}'
Y = '{"$p":["web#17",43]}'


class Dead:
    """Every node is live except those named."""

    def __init__(self, *dead: str) -> None:
        self.dead = set(dead)

    async def is_live(self, node: str, incarnation: int) -> bool:
        return node not in self.dead


@pytest.fixture
async def second(migrated_url: str, store: Store) -> AsyncIterator[Store]:
    """A second handle on the store's database (another node)."""
    async with Store.open(migrated_url, migrate=False) as opened:
        yield opened


async def test_a_claim_records_the_claiming_processes_owner_and_a_later_claim_keeps_it(
    store: Store,
) -> None:
    convs = store.conversations
    convs.set_ownership(A)
    created = await convs.open("s1", agent_name="chat", claim=True, owner_pid=X)
    assert created.owner_pid == X
    assert (await convs.get("s1")).owner_pid == X
    # a plain open writes nothing, a claim without an owner given keeps the stored one
    await convs.open("s1", agent_name="chat", owner_pid=Y)
    assert (await convs.get("s1")).owner_pid == X
    kept = await convs.open("s1", agent_name="chat", claim=True)
    assert (kept.owner_pid, kept.incarnation) == (X, 2)
    # a claim by a process with another owner, or none, records it
    moved = await convs.open("s1", agent_name="chat", claim=True, owner_pid=Y)
    assert moved.owner_pid == Y
    cleared = await convs.open("s1", agent_name="chat", claim=True, owner_pid=None)
    assert cleared.owner_pid is None
    # a session opened without a claim has no owner recorded
    plain = await convs.open("s2", agent_name="chat", owner_pid=X)
    assert plain.owner_pid is None and (await convs.get("s2")).owner_pid is None


async def test_a_takeover_by_another_node_keeps_the_owner_for_the_survivor(
    store: Store, second: Store
) -> None:
    store.conversations.set_ownership(A, Dead())
    await store.conversations.open("s", agent_name="chat", claim=True, owner_pid=X)
    second.conversations.set_ownership(B, Dead("alpha"))
    taken = await second.conversations.open("s", agent_name="chat", claim=True)
    assert (taken.owner_node, taken.incarnation, taken.owner_pid) == ("beta", 2, X)
    listed = await second.conversations.owned_by("beta", 1)
    assert [c.owner_pid for c in listed] == [X]


async def test_set_owner_pid_writes_only_at_the_writers_epoch(store: Store, second: Store) -> None:
    store.conversations.set_ownership(A, Dead())
    conv = await store.conversations.open("s", agent_name="chat", claim=True)
    assert conv.owner_pid is None
    assert await store.conversations.set_owner_pid("s", X, incarnation=conv.incarnation)
    assert (await store.conversations.get("s")).owner_pid == X
    # a successor's claim moved the epoch: the predecessor's write is refused
    second.conversations.set_ownership(B, Dead("alpha"))
    taken = await second.conversations.open("s", agent_name="chat", claim=True, owner_pid=Y)
    assert not await store.conversations.set_owner_pid("s", None, incarnation=conv.incarnation)
    assert (await store.conversations.get("s")).owner_pid == Y
    # before its first claim a process writes while its node holds the session, else not
    assert not await store.conversations.set_owner_pid("s", X, incarnation=None)
    assert await second.conversations.set_owner_pid("s", None, incarnation=None)
    got = await second.conversations.get("s")
    assert (got.owner_pid, got.incarnation) == (None, taken.incarnation)
    assert not await store.conversations.set_owner_pid("gone", X, incarnation=1)


async def test_stopping_with_the_owner_marks_stopped_and_clears_the_owner_in_one_write(
    store: Store,
) -> None:
    convs = store.conversations
    conv = await convs.open("s", agent_name="chat", claim=True, owner_pid=X)
    assert not await convs.set_host_state(
        "s", "stopped", incarnation=conv.incarnation - 1, clear_owner=True
    )
    assert (await convs.get("s")).owner_pid == X
    assert await convs.set_host_state("s", "evicted", incarnation=conv.incarnation)
    assert (await convs.get("s")).owner_pid == X  # not cleared unless asked
    assert await convs.set_host_state(
        "s", "stopped", incarnation=conv.incarnation, clear_owner=True
    )
    got = await convs.get("s")
    assert (got.host_state, got.owner_pid) == ("stopped", None)


async def test_a_malformed_owner_pid_is_refused_before_anything_is_written(
    store: Store,
) -> None:
    convs = store.conversations
    conv = await convs.open("s", agent_name="chat", claim=True)
    for bad in ("", "x" * 301):
        with pytest.raises(ValidationError) as e:
            await convs.open("s", agent_name="chat", claim=True, owner_pid=bad)
        assert e.value.field == "owner_pid"
        with pytest.raises(ValidationError):
            await convs.set_owner_pid("s", bad, incarnation=conv.incarnation)
    got = await convs.get("s")
    assert (got.incarnation, got.owner_pid) == (conv.incarnation, None)
