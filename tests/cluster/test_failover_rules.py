"""Failover rules in one process (fast): the OTP restart table, placement (rendezvous over
the live nodes, agents' required labels), lease revocation in the store, lazy revival from the store, and a graceful leave moving only the
permanent sessions with a ``cluster.sessions_moved`` event (two nodes joined over a real
nats-server in this process, on one SQLite file)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from netsuke import Runtime
from netsuke.agents import AgentConfig, AgentNotFoundError, Agents
from netsuke.cluster import FencedError, Membership, join_cluster, restarts_on_failover
from netsuke.cluster._failover import SESSIONS_MOVED, Failover, takeover_target
from netsuke.cluster._placement import Candidate, NoNodeAvailableError
from netsuke.manager.testing import NatsServer
from netsuke.store import AgentDraft, Conversation, NodeIdentity, Store, upgrade

from .helpers import FAST, eventually, prefix


@asynccontextmanager
async def _survivor(
    nats_server: NatsServer, store: Store, lease: float, **options: Any
) -> AsyncIterator[tuple[Any, Agents, Failover]]:
    """Node ``beta`` joined on ``store`` (its sessions owned by it), its agents and a running
    ``Failover(**options)``."""
    async with join_cluster(
        nats_server.url,
        "beta",
        store.database,
        lease=lease,
        transport_options={**FAST, "prefix": prefix()},
    ) as b:
        mb = b.membership
        assert mb.incarnation is not None
        store.conversations.set_ownership(NodeIdentity("beta", mb.incarnation), mb)
        agents = await Agents.start(b.runtime, store)
        async with Failover(b, agents, **options) as failover:
            yield b, agents, failover


def _conv(restart: str | None, state: str | None) -> Conversation:
    now = datetime.now(UTC)
    return Conversation(
        session_id="s",
        agent_name="a",
        user_id=None,
        message_count=0,
        created_at=now,
        updated_at=now,
        restart=restart,
        host_state=state,
    )


@pytest.mark.parametrize(
    ("restart", "state", "death", "graceful"),
    [
        ("permanent", "active", True, True),
        ("transient", "active", True, False),  # noconnection is abnormal, shutdown is not
        (None, None, True, False),  # rows from before 0013: transient, active
        ("temporary", "active", False, False),
        ("permanent", "evicted", False, False),  # lazily, on the next call
        ("transient", "evicted", False, False),
        ("permanent", "stopped", False, False),  # stopped for good
        ("transient", "stopped", False, False),
    ],
)
def test_otp_restart_rules(
    restart: str | None, state: str | None, death: bool, graceful: bool
) -> None:
    conv = _conv(restart, state)
    assert restarts_on_failover(conv, "no_responders") is death
    assert restarts_on_failover(conv, "heartbeat_timeout") is death
    assert restarts_on_failover(conv, "left") is graceful


def test_takeover_target_spreads_by_placement_and_moves_only_the_gone_nodes_sessions() -> None:
    nodes = [Candidate("a#1"), Candidate("b#2"), Candidate("c#3")]
    sessions = [f"chat-{i}" for i in range(3000)]
    picked = {s: takeover_target(s, nodes, "a#1") for s in sessions}
    counts = Counter(picked.values())
    assert set(counts) == {"a#1", "b#2", "c#3"}
    assert all(800 < c < 1200 for c in counts.values()), counts
    survivors = [nodes[2], nodes[0]]
    for s in sessions:  # only b's sessions move; every survivor computes the same node
        again = takeover_target(s, survivors, "a#1")
        assert again == takeover_target(s, survivors, "c#3")
        assert again == (picked[s] if picked[s] != "b#2" else again)
        assert again in ("a#1", "c#3")


def test_takeover_target_honours_the_labels_an_agent_requires() -> None:
    gpu = {"gpu": "a100"}
    nodes = [Candidate("a#1"), Candidate("b#2", 0, gpu)]
    assert {takeover_target(f"s{i}", nodes, "a#1", gpu) for i in range(50)} == {"b#2"}
    # the sweep's force claims here only if this node carries the labels
    assert takeover_target("s", nodes, "a#1", gpu, force=True) == "b#2"
    assert takeover_target("s", nodes, "b#2", gpu, force=True) == "b#2"
    assert {takeover_target(f"s{i}", nodes, "a#1", force=True) for i in range(50)} == {"a#1"}
    with pytest.raises(NoNodeAvailableError):
        takeover_target("s", [Candidate("a#1")], "a#1", gpu)


async def test_a_live_member_revokes_another_whose_next_renewal_fences_it(tmp_path: Path) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    await upgrade(db)
    async with Store.open(db) as store:
        a = Membership(store.database, "a", lease=30.0)
        b = Membership(store.database, "b", lease=30.0)
        await a.join()
        await b.join()
        try:
            assert b.incarnation is not None and a.incarnation is not None
            assert await a.is_live("b", b.incarnation)
            assert await a.revoke("b", b.incarnation, "no_responders") is True
            assert await a.revoke("b", b.incarnation, "no_responders") is False  # once
            assert not await a.is_live("b", b.incarnation)
            assert await b.renew() is False  # its lease is gone: it fences itself
            assert b.fenced and b.fence_reason == "lease_lost"
            with pytest.raises(FencedError):  # a fenced node judges nobody
                await b.revoke("a", a.incarnation)
            assert await a.is_live("a", a.incarnation)
        finally:
            await a.leave()
            await b.leave()


async def test_evicted_sessions_come_back_from_the_store_stopped_ones_do_not(
    tmp_path: Path,
) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'e.db'}"
    async with Runtime() as rt, Store.open(db) as store:
        agents = await Agents.start(rt, store)
        cfg = AgentConfig(name="ev", idle_hibernate=None, idle_evict=0.2)
        await agents.start_agent("ev-1", cfg)
        await agents.run("ev-1", "remember tokyo")
        await eventually(lambda: agents.whereis("ev-1") is None)

        async def evicted() -> bool:
            return (await store.conversations.get("ev-1")).host_state == "evicted"

        for _ in range(200):
            if await evicted():
                break
            await asyncio.sleep(0.02)
        assert await evicted()
        agents._evicted.clear()  # as on another node, which never saw it
        agents.define(cfg)
        out = await agents.run("ev-1", "where?")
        assert "remember tokyo" in str(out) and "(turn 2)" in str(out), out
        assert await agents.stop_agent("ev-1")
        assert (await store.conversations.get("ev-1")).host_state == "stopped"
        with pytest.raises(AgentNotFoundError):
            await agents.run("ev-1", "hello?")
        with pytest.raises(AgentNotFoundError):
            await agents.run("never-was", "hello?")


@pytest.mark.timeout(120)
async def test_a_graceful_leave_moves_permanent_sessions_only_with_an_event(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'c.db'}"
    await upgrade(db)
    p = prefix()
    perm = AgentConfig(name="perm", restart="permanent")
    trans = AgentConfig(name="trans")
    topt = {**FAST, "prefix": p}
    async with (
        Store.open(db) as store_b,
        join_cluster(
            nats_server.url, "beta", store_b.database, lease=3.0, transport_options=topt
        ) as b,
    ):
        mb = b.membership
        assert mb.incarnation is not None
        store_b.conversations.set_ownership(NodeIdentity("beta", mb.incarnation), mb)
        agents_b = await Agents.start(b.runtime, store_b)
        agents_b.define(perm)
        agents_b.define(trans)
        sub = b.runtime.events.subscribe("cluster.sessions_moved")
        before = SESSIONS_MOVED.labels(b.node_id)._value.get()
        async with Failover(b, agents_b) as failover:
            async with (
                Store.open(db) as store_a,
                join_cluster(
                    nats_server.url, "alpha", store_a.database, lease=3.0, transport_options=topt
                ) as a,
            ):
                ma = a.membership
                assert ma.incarnation is not None
                store_a.conversations.set_ownership(NodeIdentity("alpha", ma.incarnation), ma)
                agents_a = await Agents.start(a.runtime, store_a)
                await agents_a.start_agent("perm-1", perm)
                await agents_a.start_agent("trans-1", trans)
                await agents_a.run("perm-1", "remember osaka")
                alpha = a.node_id
            # alpha left gracefully: its sessions ended with shutdown
            event = await asyncio.wait_for(sub.get(), 60)
            assert event.data == {
                "node": b.node_id,
                "from": alpha,
                "to": b.node_id,
                "count": 1,
                "cause": "left",
            }
            assert failover.moved == 1
            assert agents_b.whereis("perm-1") is not None  # permanent: restarted
            assert agents_b.whereis("trans-1") is None  # transient after shutdown: not
            assert SESSIONS_MOVED.labels(b.node_id)._value.get() == before + 1
            out = await agents_b.run("perm-1", "where?")
            assert "remember osaka" in str(out), out
            conv = await store_b.conversations.get("perm-1")
            assert (conv.owner_node, conv.restart) == ("beta", "permanent")
            # the transient one comes back lazily on its next call, here
            assert "(turn 1)" in str(await agents_b.run("trans-1", "hi"))


@pytest.mark.timeout(120)
async def test_the_sweep_restarts_sessions_of_a_node_whose_lease_ran_out_unseen(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    """A member that never showed up over NATS (so no node-down event) stops renewing: once
    its lease has run out, the survivor's sweep restarts its transient sessions."""
    db = f"sqlite+aiosqlite:///{tmp_path / 's.db'}"
    await upgrade(db)
    async with Store.open(db) as store:
        ghost = Membership(store.database, "ghost", lease=1.0, renew_interval=0.1, fence_after=0.5)
        inc = await ghost.join()
        me = NodeIdentity("ghost", inc)
        for s in ("g-1", "g-2"):
            await store.conversations.open(s, agent_name="trans", claim=True, node=me)
        await store.conversations.open(
            "g-3", agent_name="temp", claim=True, node=me, restart="temporary"
        )
        for t in ghost._tasks:  # it stops renewing, as if it froze (no goodbye, no leave)
            t.cancel()
        async with _survivor(nats_server, store, 3.0, sweep_interval=0.3) as (_, agents, failover):
            await eventually(lambda: failover.moved == 2, timeout=60)
            assert agents.whereis("g-1") is not None and agents.whereis("g-2") is not None
            assert agents.whereis("g-3") is None  # temporary: not restarted
            conv = await store.conversations.get("g-1")
            assert conv.owner_node == "beta"


@pytest.mark.timeout(120)
async def test_a_survivor_busy_when_it_saw_a_node_down_revokes_it_once_healthy(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    """alpha loses NATS but keeps its store (it keeps renewing its lease): only a revocation
    lets anyone take its sessions. beta sees it down while beta's own loop has just stalled
    (not healthy: it defers), and revokes once healthy, while alpha stays down."""
    db = f"sqlite+aiosqlite:///{tmp_path / 'r.db'}"
    await upgrade(db)
    p = prefix()
    topt = {**FAST, "prefix": p}
    async with (
        Store.open(db) as store,
        join_cluster(
            nats_server.url, "beta", store.database, lease=3.0, transport_options=topt
        ) as b,
        join_cluster(
            nats_server.url, "alpha", store.database, lease=3.0, transport_options=topt
        ) as a,
    ):
        mb = b.membership
        assert mb.incarnation is not None
        store.conversations.set_ownership(NodeIdentity("beta", mb.incarnation), mb)
        agents = await Agents.start(b.runtime, store)
        ma = a.membership
        assert ma.incarnation is not None
        await store.conversations.open(
            "a-1", agent_name="trans", claim=True, node=NodeIdentity("alpha", ma.incarnation)
        )
        await eventually(lambda: a.node_id in b.transport.nodes(), timeout=30)
        sub = b.runtime.events.subscribe("cluster.node_down")
        async with Failover(b, agents) as failover:
            loop = asyncio.get_running_loop()
            quiet = 3.0  # beta counts as stalled for this long from now, then healthy
            failover._stalled_at = loop.time() + quiet
            assert a.transport.nc is not None
            await a.transport.nc.close()  # no goodbye: alpha is cut off NATS, not the store
            down = await asyncio.wait_for(sub.get(), 30)
            assert down.data["peer"] == a.node_id
            assert loop.time() < failover._stalled_at + 2.0  # seen down while not healthy
            assert await mb.is_live("alpha", ma.incarnation)  # deferred, not revoked yet
            await eventually(lambda: failover.moved == 1, timeout=60)
            assert not await mb.is_live("alpha", ma.incarnation)  # revoked once healthy
            assert agents.whereis("a-1") is not None
            assert (await store.conversations.get("a-1")).owner_node == "beta"
            assert await ma.renew() is False  # alpha's next renewal fails: it fences itself


@pytest.mark.timeout(120)
async def test_a_member_cut_off_nats_before_the_survivor_ever_heard_it_is_revoked(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    """The flaky chaos test's cause: alpha restarted and beta was cut off NATS before alpha
    heard beta's first heartbeat, so alpha never saw beta go down; beta kept its store and
    renewed its lease, and its sessions stayed its own for good. Now a live member of the
    store that this node does not hear within ``down_after`` is down here (``unheard``): its
    lease is revoked (long before it could run out) and its sessions restart here. ghost is
    on another subject prefix, so no heartbeat of it ever reaches beta; a subscription that
    never answers holds its subject there, as a cut-off node's lingering connection does (a
    probe gets no "no responders")."""
    db = f"sqlite+aiosqlite:///{tmp_path / 'u.db'}"
    await upgrade(db)
    p = prefix()
    async with (
        Store.open(db) as store,
        join_cluster(
            nats_server.url,
            "ghost",
            store.database,
            lease=30.0,
            transport_options={**FAST, "prefix": prefix()},
        ) as g,
        join_cluster(
            nats_server.url,
            "beta",
            store.database,
            lease=30.0,
            transport_options={**FAST, "prefix": p},
        ) as b,
    ):
        mg, mb = g.membership, b.membership
        assert b.transport.nc is not None
        await b.transport.nc.subscribe(f"{p}.node.{g.node_id}.>", cb=_ignore)
        assert mg.incarnation is not None and mb.incarnation is not None
        ghost = NodeIdentity("ghost", mg.incarnation)
        await store.conversations.open("u-1", agent_name="trans", claim=True, node=ghost)
        store.conversations.set_ownership(NodeIdentity("beta", mb.incarnation), mb)
        agents = await Agents.start(b.runtime, store)
        sub = b.runtime.events.subscribe("cluster.node_down")
        async with Failover(b, agents, members_interval=0.2, join_grace=0.5) as failover:
            down = await asyncio.wait_for(sub.get(), 30)
            assert (down.data["peer"], down.data["cause"]) == (g.node_id, "unheard")
            await eventually(lambda: failover.moved == 1, timeout=60)
            assert not await mb.is_live("ghost", mg.incarnation)  # revoked, 30 s lease
            assert agents.whereis("u-1") is not None
            assert (await store.conversations.get("u-1")).owner_node == "beta"
            assert await mg.renew() is False  # ghost's next renewal fails: it fences itself
            assert mg.fenced


async def _ignore(msg: object) -> None:
    pass


@pytest.mark.timeout(120)
async def test_a_survivor_whose_loop_keeps_stalling_still_revokes_after_the_defer_limit(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    """A survivor on a loaded machine whose event loop stalls again and again is never
    "healthy" by the stall rule; it still revokes a peer that stays down once the peer has
    been down here for ``defer_limit``, its own NATS connection answering."""
    db = f"sqlite+aiosqlite:///{tmp_path / 'd.db'}"
    await upgrade(db)
    topt = {**FAST, "prefix": prefix()}
    async with (
        Store.open(db) as store,
        join_cluster(
            nats_server.url, "beta", store.database, lease=30.0, transport_options=topt
        ) as b,
        join_cluster(
            nats_server.url, "alpha", store.database, lease=30.0, transport_options=topt
        ) as a,
    ):
        mb, ma = b.membership, a.membership
        assert mb.incarnation is not None and ma.incarnation is not None
        store.conversations.set_ownership(NodeIdentity("beta", mb.incarnation), mb)
        agents = await Agents.start(b.runtime, store)
        await store.conversations.open(
            "d-1", agent_name="trans", claim=True, node=NodeIdentity("alpha", ma.incarnation)
        )
        await eventually(lambda: a.node_id in b.transport.nodes(), timeout=30)
        async with Failover(b, agents, defer_limit=2.0) as failover:
            loop = asyncio.get_running_loop()
            failover._stalled_at = loop.time() + 1e6  # stalled for good, as far as it knows
            assert await failover.unhealthy() == "stalled"
            assert a.transport.nc is not None
            await a.transport.nc.close()  # alpha cut off NATS, not the store: it renews
            await eventually(lambda: failover.moved == 1, timeout=60)
            assert not await mb.is_live("alpha", ma.incarnation)
            assert (await store.conversations.get("d-1")).owner_node == "beta"


@pytest.mark.timeout(120)
async def test_a_session_whose_labels_no_survivor_carries_is_recorded_not_restarted(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    """Failover places through the placement module: a gone node's session whose agent
    definition requires ``gpu=a100`` is not restarted on a survivor without that label; it is
    recorded (``unplaced``, counted ``no_node``) and stays the gone node's in the store. Its
    other sessions restart; once a node with the label is live, the sweep places the rest."""
    db = f"sqlite+aiosqlite:///{tmp_path / 'l.db'}"
    await upgrade(db)
    async with Store.open(db) as store:
        await store.agents.create(
            AgentDraft(name="gpu", model="offline", config={"node_labels": {"gpu": "a100"}})
        )
        ghost = Membership(store.database, "ghost", lease=30.0)
        inc = await ghost.join()
        gone = NodeIdentity("ghost", inc)
        await store.conversations.open("g-plain", agent_name="trans", claim=True, node=gone)
        await store.conversations.open("g-gpu", agent_name="gpu", claim=True, node=gone)
        for t in ghost._tasks:  # it stops renewing (no goodbye): a dead node
            t.cancel()
        async with _survivor(nats_server, store, 30.0) as (b, agents, failover):
            mb = b.membership
            assert await mb.revoke("ghost", inc, "no_responders")
            moved = await failover.take_over("ghost", inc, "no_responders", revoked=True)
            assert moved == 1
            assert agents.whereis("g-plain") is not None
            assert agents.whereis("g-gpu") is None
            assert failover.unplaced == {"g-gpu": {"gpu": "a100"}}
            assert (await store.conversations.get("g-gpu")).owner_node == "ghost"
            # a node with the label joins: the next look places the session there, not here
            gpu = Membership(store.database, "gpu-node", lease=30.0, labels={"gpu": "a100"})
            await gpu.join()
            try:
                assert await failover.take_over("ghost", inc, "no_responders") == 0
                assert failover.unplaced == {}
                assert agents.whereis("g-gpu") is None  # gpu-node's to claim
            finally:
                await gpu.leave()
