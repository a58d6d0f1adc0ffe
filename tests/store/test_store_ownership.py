"""Session ownership with an epoch, fenced commits and stored request ids (issue 17).

Two store handles on one database play two nodes: each claims as its own ``NodeIdentity``
and judges the other with its own liveness policy."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, TextPart, UserPromptPart

from netsuke.store import (
    DuplicateRequestError,
    FencedError,
    LivenessPolicy,
    NodeIdentity,
    OnlySelfLive,
    SessionOwnedError,
    Store,
    ValidationError,
)
from netsuke.store._observe import METRICS
from tests.cluster.history import Claim, Request, check, committed_from_history

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
A = NodeIdentity("alpha", 1)
B = NodeIdentity("beta", 1)


class Dead:
    """Every node is live except those named in ``dead``."""

    def __init__(self, *dead: str) -> None:
        self.dead = set(dead)

    async def is_live(self, node: str, incarnation: int) -> bool:
        return node not in self.dead


def turn(text: str) -> list[ModelMessage]:
    return [
        ModelRequest(parts=[UserPromptPart(text, timestamp=T0)]),
        ModelResponse(parts=[TextPart(f"re {text}")], timestamp=T0),
    ]


def request_of(prompt: str) -> str | None:
    return prompt.removeprefix("req:") if prompt.startswith("req:") else None


@pytest.fixture
async def second(migrated_url: str, store: Store) -> AsyncIterator[Store]:
    """A second handle on the store's database (another "node")."""
    async with Store.open(migrated_url, migrate=False) as opened:
        yield opened


def test_the_default_policy_only_knows_this_node_live() -> None:
    policy = OnlySelfLive(A)
    assert isinstance(policy, LivenessPolicy)
    assert asyncio.run(policy.is_live("alpha", 1))
    assert not asyncio.run(policy.is_live("alpha", 2))
    assert not asyncio.run(policy.is_live("beta", 1))


async def test_a_claim_records_node_incarnation_and_epoch(store: Store) -> None:
    conv = store.conversations
    conv.set_ownership(A)
    first = await conv.open("s", agent_name="helper", claim=True)
    assert (first.owner_node, first.owner_incarnation, first.incarnation) == ("alpha", 1, 1)
    again = await conv.open("s", agent_name="helper", claim=True)  # this node: another process
    assert again.incarnation == 2 and again.owner_node == "alpha"
    read = await conv.get("s")
    assert (read.owner_node, read.owner_incarnation, read.incarnation) == ("alpha", 1, 2)


async def test_a_live_owner_keeps_its_session_and_nothing_changes(
    store: Store, second: Store
) -> None:
    store.conversations.set_ownership(A, Dead())
    second.conversations.set_ownership(B, Dead())
    await store.conversations.open("s", agent_name="helper", claim=True)
    refused = METRICS.claims["refused"]
    with pytest.raises(SessionOwnedError) as ei:
        await second.conversations.open("s", agent_name="helper", claim=True)
    assert (ei.value.node, ei.value.incarnation, ei.value.epoch) == ("alpha", 1, 1)
    assert METRICS.claims["refused"] == refused + 1
    after = await second.conversations.get("s")
    assert (after.owner_node, after.incarnation) == ("alpha", 1)
    # a plain open (no claim) is not a claim: it reads
    assert (await second.conversations.open("s", agent_name="helper")).incarnation == 1


async def test_a_restarted_node_takes_over_its_predecessors_sessions(migrated_url: str) -> None:
    async with Store.open(migrated_url, migrate=True) as first:
        first.conversations.set_ownership(NodeIdentity("solo", 10))  # default policy
        await first.conversations.open("s", agent_name="helper", claim=True)
        await first.conversations.append_turn("s", turn("hello"), incarnation=1)
    async with Store.open(migrated_url) as restarted:
        restarted.conversations.set_ownership(NodeIdentity("solo", 11))
        before = METRICS.claims["takeover"]
        conv = await restarted.conversations.open("s", agent_name="helper", claim=True)
        assert METRICS.claims["takeover"] == before + 1
        assert (conv.owner_incarnation, conv.incarnation, conv.message_count) == (11, 2, 2)
        with pytest.raises(FencedError):  # the predecessor's epoch is over
            await restarted.conversations.append_turn("s", turn("late"), incarnation=1)
        assert (await restarted.conversations.get("s")).message_count == 2


@pytest.mark.timeout(60)
@pytest.mark.parametrize("existing", [False, True], ids=["new", "takeover"])
async def test_of_100_concurrent_claimers_on_two_handles_exactly_one_wins(
    store: Store, second: Store, existing: bool
) -> None:
    if existing:  # owned by a node that is gone: every claimant may take it over
        await store.conversations.open("s", agent_name="helper", claim=True, node=A)
    policy = Dead("alpha")
    store.conversations.set_ownership(A, policy)
    second.conversations.set_ownership(B, policy)
    handles = (store, second)
    claimers = [NodeIdentity(f"n{i}", i) for i in range(100)]
    results = await asyncio.gather(
        *(
            handles[i % 2].conversations.open("s", agent_name="helper", claim=True, node=n)
            for i, n in enumerate(claimers)
        ),
        return_exceptions=True,
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    others = [r for r in results if isinstance(r, BaseException)]
    assert len(winners) == 1, [type(r).__name__ for r in results]
    assert all(isinstance(r, SessionOwnedError) for r in others), others[:3]
    epoch = 2 if existing else 1
    won = winners[0]
    assert won.incarnation == epoch
    stored = await second.conversations.get("s")
    assert (stored.owner_node, stored.incarnation) == (won.owner_node, epoch)
    assert all(e.node == won.owner_node and e.epoch == epoch for e in others)  # type: ignore[union-attr]


def _reply(text: str) -> str:
    return json.dumps({"output": f"re {text}"})


async def test_a_request_id_is_stored_with_its_turn_and_never_committed_twice(
    store: Store, second: Store
) -> None:
    conv = store.conversations
    await conv.open("s", agent_name="helper", claim=True, node=A)
    receipt = await conv.append_turn_row(
        "s", turn("req:k1"), incarnation=1, request=("k1", "h1", _reply("k1"))
    )
    found = await second.conversations.find_request("s", "k1")
    assert found is not None
    assert (found.body_hash, found.reply, found.epoch, found.first_seq) == (
        "h1",
        _reply("k1"),
        1,
        receipt.first_seq,
    )
    assert await conv.find_request("s", "other") is None
    assert await conv.find_request("t", "k1") is None  # a key is scoped to its session
    with pytest.raises(DuplicateRequestError) as ei:  # a second turn with the key: refused
        await second.conversations.append_turn_row(
            "s", turn("req:k1"), incarnation=1, request=("k1", "h1", _reply("k1"))
        )
    assert ei.value.request_key == "k1"
    assert (await conv.get("s")).message_count == 2  # nothing of it was written
    # concurrent duplicates in one batch: one commits, the others fail alone
    results = await asyncio.gather(
        *(
            conv.append_turn_row("s", turn("req:k2"), request=("k2", "h", _reply("k2")))
            for _ in range(5)
        ),
        conv.append_turn_row("s", turn("plain"), incarnation=1),
        return_exceptions=True,
    )
    assert sum(isinstance(r, DuplicateRequestError) for r in results[:5]) == 4
    assert not isinstance(results[5], BaseException)
    assert (await conv.get("s")).message_count == 6
    for bad in ("", "x" * 201, "has space", "tab\t", "é"):
        with pytest.raises(ValidationError) as bad_key:
            await conv.find_request("s", bad)
        assert bad_key.value.field == "request_id"
    assert await conv.forget_requests(datetime.now(UTC) - timedelta(days=1)) == 0
    assert await conv.forget_requests(datetime.now(UTC) + timedelta(days=1)) == 2
    assert await conv.find_request("s", "k1") is None
    await conv.delete("s")


@pytest.mark.timeout(60)
async def test_a_node_declared_down_cannot_commit_after_the_takeover(
    store: Store, second: Store
) -> None:
    """Node A owns the session at epoch 1 and has turns in flight; node B takes it over once A
    is declared not live. Every turn of A either committed before the takeover or fails
    fencing; B answers the retries. The history checker finds 0 lost / 0 twice / 0 stale."""
    a, b = store.conversations, second.conversations
    a.set_ownership(A, Dead())  # A sees B live
    b.set_ownership(B, Dead("alpha"))  # B has been told A is gone
    owned = await a.open("s", agent_name="helper", claim=True)
    assert owned.incarnation == 1
    records: dict[str, Request] = {}

    async def on_a(rid: str) -> None:
        try:
            await a.append_turn_row(
                "s", turn(f"req:{rid}"), incarnation=1, request=(rid, "h", _reply(rid))
            )
        except FencedError:
            records[rid] = Request(rid, acknowledged=False, failed=True)
        else:
            records[rid] = Request(rid, acknowledged=True, reply=_reply(rid))

    await on_a("r0")
    in_flight = [asyncio.ensure_future(on_a(f"r{i}")) for i in range(1, 40)]
    await asyncio.sleep(0)
    taken = await b.open("s", agent_name="helper", claim=True)
    await asyncio.gather(*in_flight)
    assert taken.incarnation == 2 and taken.owner_node == "beta"
    with pytest.raises(SessionOwnedError):  # A may not take it back while B is live
        await a.open("s", agent_name="helper", claim=True)
    with pytest.raises(FencedError):  # and anything A still tries is refused
        await a.append_turn_row("s", turn("req:late"), incarnation=1)
    # the callers A failed retry on B with the same request id: B runs the turn once
    for rid, rec in sorted(records.items()):
        if rec.failed:
            assert await b.find_request("s", rid) is None  # never committed by A
            await b.append_turn_row(
                "s", turn(f"req:{rid}"), incarnation=2, request=(rid, "h", _reply(rid))
            )
            records[rid] = Request(rid, acknowledged=True, reply=_reply(rid))
    committed = await committed_from_history(second, "s", request_of)
    report = check(records.values(), committed, [Claim(2, taken.message_count)])
    assert report.counts == (0, 0, 0), report.details
    assert report.ok, report.details
    assert len(committed) == 40
    assert {t.epoch for t in committed if t.seq >= taken.message_count} <= {2}


async def test_owner_counts_groups_sessions_by_node_run(store: Store, second: Store) -> None:
    """The cluster page's load: sessions per owner ``(node, incarnation)``, ``None`` for those
    never claimed; a takeover moves the count."""
    assert await store.conversations.owner_counts() == {}
    store.conversations.set_ownership(A, Dead("beta"))
    second.conversations.set_ownership(B, Dead("alpha"))
    await store.conversations.open("a1", agent_name="helper", claim=True)
    await store.conversations.open("a2", agent_name="helper", claim=True)
    await second.conversations.open("b1", agent_name="helper", claim=True)
    await store.conversations.open("plain", agent_name="helper")  # not claimed
    assert await store.conversations.owner_counts() == {("alpha", 1): 2, ("beta", 1): 1, None: 1}
    await second.conversations.open("a1", agent_name="helper", claim=True)  # alpha is dead
    assert await second.conversations.owner_counts() == {
        ("alpha", 1): 1,
        ("beta", 1): 2,
        None: 1,
    }
