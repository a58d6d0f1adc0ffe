"""Random histories over three store handles ("nodes"): nodes are declared down and back up
at random while clients send turns with request ids to random nodes and retry on failure.
The history checker must find 0 acknowledged turns lost, 0 committed twice, 0 stale-epoch
commits and no failed request committed."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, TextPart, UserPromptPart

from netsuke.store import (
    DuplicateRequestError,
    FencedError,
    NodeIdentity,
    SessionOwnedError,
    Store,
)
from tests.cluster.history import Claim, CommittedTurn, Request, check, committed_from_history

from .test_store_ownership import T0


class Down:
    """A liveness policy over a shared set of nodes declared down."""

    def __init__(self, down: set[str]) -> None:
        self.down = down

    async def is_live(self, node: str, incarnation: int) -> bool:
        return node not in self.down


@dataclass
class Node:
    store: Store
    me: NodeIdentity
    epoch: int | None = None


def _turn(rid: str, epoch: int) -> list[ModelMessage]:
    """A turn whose prompt names its request id and the epoch its node believes it holds."""
    return [
        ModelRequest(parts=[UserPromptPart(f"req:{rid}@{epoch}", timestamp=T0)]),
        ModelResponse(parts=[TextPart(f"re {rid}")], timestamp=T0),
    ]


@pytest.fixture
async def handles(migrated_url: str, store: Store) -> AsyncIterator[list[Store]]:
    async with Store.open(migrated_url) as b, Store.open(migrated_url) as c:
        yield [store, b, c]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_random_takeovers_never_lose_duplicate_or_commit_stale_turns(
    handles: list[Store], seed: int
) -> None:
    rng = random.Random(seed)
    down: set[str] = set()
    nodes = []
    for i, handle in enumerate(handles):
        me = NodeIdentity(f"node{i}", 100 + i)
        handle.conversations.set_ownership(me, Down(down))
        nodes.append(Node(handle, me))
    await handles[0].conversations.open("s", agent_name="helper")
    claims: list[Claim] = []
    outcome: dict[str, Request] = {}

    async def attempt(node: Node, rid: str) -> str | None:
        """One try at request ``rid`` on ``node``: its reply, or None when it failed."""
        conv = node.store.conversations
        reply = json.dumps({"output": f"re {rid}"})
        epoch = node.epoch  # this attempt's: the node's may change while it awaits
        if epoch is None:
            try:
                claimed = await conv.open("s", agent_name="helper", claim=True)
            except SessionOwnedError:
                return None
            epoch = node.epoch = claimed.incarnation
            claims.append(Claim(claimed.incarnation, claimed.message_count))
        stored = await conv.find_request("s", rid)
        if stored is not None:
            return stored.reply
        try:
            await conv.append_turn_row(
                "s", _turn(rid, epoch), incarnation=epoch, request=(rid, "h", reply)
            )
        except FencedError:
            if node.epoch == epoch:
                node.epoch = None
            return None
        except DuplicateRequestError:
            stored = await conv.find_request("s", rid)
            assert stored is not None
            return stored.reply
        return reply

    async def client(rid: str) -> None:
        for _ in range(4):
            got = await attempt(rng.choice(nodes), rid)
            if got is not None:
                outcome[rid] = Request(rid, acknowledged=True, reply=got)
                return
            await asyncio.sleep(0)
        outcome[rid] = Request(rid, acknowledged=False, failed=True)

    for round_no in range(12):
        if round_no % 4 == 3:  # the owner is declared down: its session must move
            owner = (await handles[0].conversations.get("s")).owner_node
            down.clear()
            down.add(owner or "")
        elif rng.random() < 0.5:  # a node goes down or comes back
            victim = rng.choice(nodes).me.name
            down.symmetric_difference_update({victim})
        if len(down) == len(nodes):
            down.clear()
        rids = [f"r{round_no}-{k}" for k in range(rng.randint(3, 8))]
        await asyncio.gather(*(client(rid) for rid in rids))
        if rng.random() < 0.3:  # a client retries an acknowledged request elsewhere
            done = [r for r in outcome.values() if r.acknowledged]
            if done:
                again = rng.choice(done)
                got = await attempt(rng.choice(nodes), again.request_id)
                assert got in (None, again.reply)

    # the epoch of each committed turn is read from its prompt (what its node believed), not
    # from the store's bookkeeping, so the checker would see a commit that skipped the fence
    committed = [
        CommittedTurn(t.request_id.split("@")[0], t.seq, int(t.request_id.split("@")[1]), t.reply)
        for t in await committed_from_history(
            handles[1], "s", lambda p: p.removeprefix("req:") if p.startswith("req:") else None
        )
    ]
    report = check(outcome.values(), committed, claims)
    assert report.counts == (0, 0, 0), report.details
    assert report.ok, report.details
    assert any(r.acknowledged for r in outcome.values())
    assert len({c.epoch for c in claims}) > 1  # ownership did move
