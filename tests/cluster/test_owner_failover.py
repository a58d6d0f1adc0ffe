"""Owner links across a failover (issue 17): agent nodes as real OS processes on one store and
a real nats-server, the test's own node a plain client. A session taken over from a killed
node monitors its stored owner again (``conversations.owner_pid``), as a restarted server does
on one node: the owner's exit then applies the agent's ``owner_policy``, an owner that exited
while the node was down applies it as soon as the session is taken over, and an owner that
lived on the dead node is gone with it (``noconnection``).

Leases are long (30 s), as in ``test_failover.py``: the takeovers come from the revocation.
Every wait only bounds (a busy machine makes them slower, never wrong)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest

from netsuke.agents._owners import decode_owner
from netsuke.cluster import join, list_nodes
from netsuke.kernel import NoProcessError, Pid, ProcessExitedError, Runtime
from netsuke.manager.testing import NatsServer
from netsuke.store import Store, upgrade

from . import failover_harness as FH
from .helpers import FAST, prefix

pytestmark = pytest.mark.timeout(300)

LEASE = 30.0
WAIT = 90.0


async def _db(tmp_path: Path) -> str:
    db = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    await upgrade(db)
    return db


async def test_a_session_taken_over_from_a_killed_node_is_linked_to_its_owner_again(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    """Owner on alpha, its session on beta; SIGKILL beta: the session restarts on alpha or
    gamma and monitors the same owner again, whose exit then stops it (marked ``stopped``,
    not revived). Owner and session both on beta: the owner is gone with beta, so the
    taken-over session applies ``owner_policy`` at once (``stop``: stopped for good;
    ``hibernate``: it runs on, without an owner, its memory intact)."""
    db = await _db(tmp_path)
    p = prefix()
    async with (
        Store.open(db) as store,
        FH.agent_cluster(nats_server.port, p, ["alpha", "beta", "gamma"], db, LEASE) as nodes,
        join(nats_server.url, "client", transport_options={**FAST, "prefix": p}) as rt,
    ):
        a, b, c = nodes
        oa = await FH.ctl(rt, a, ("owner",))
        ob = await FH.ctl(rt, b, ("owner",))
        for session, agent, owner in (
            ("own-live", "owned", oa),
            ("own-dead", "owned", ob),
            ("kept-dead", "kept", ob),
        ):
            await FH.ctl(rt, b, ("start", agent, session, owner))
            r = await FH.ctl(rt, b, ("run", session, f"remember {session}", f"k-{session}"))
            assert r[0] == "ok", r
            # stored with the start's claim, in the transport's pid encoding
            assert decode_owner((await store.conversations.get(session)).owner_pid) == owner
        assert await FH.ctl(rt, b, ("owner_of", "own-live")) == repr(oa)

        FH.kill(b)  # SIGKILL: the survivors see it gone and revoke its lease
        here = await FH.until(
            lambda: _running_on(rt, [a, c], "own-live"), timeout=WAIT, what="own-live taken over"
        )
        got = await FH.until(
            lambda: _owner_on(rt, here, "own-live"), timeout=WAIT, what="own-live owner"
        )
        assert got == repr(oa)  # linked to the same owner, over the transport
        conv = await store.conversations.get("own-live")
        assert conv.owner_node == here.name and decode_owner(conv.owner_pid) == oa

        # the owner was on beta: gone with it, its session stops when taken over
        await FH.until(
            lambda: _host_state(store, "own-dead", "stopped"), timeout=WAIT, what="own-dead"
        )
        conv = await store.conversations.get("own-dead")
        assert conv.owner_node in ("alpha", "gamma") and conv.owner_pid is None, conv
        # under "hibernate" it runs on without an owner
        kept = await FH.until(
            lambda: _running_on(rt, [a, c], "kept-dead"), timeout=WAIT, what="kept-dead"
        )
        await FH.until(
            lambda: _stored_owner_is(store, "kept-dead", None), timeout=WAIT, what="cleared"
        )
        assert await FH.ctl(rt, kept, ("owner_of", "kept-dead")) is None
        r = await FH.ctl(rt, kept, ("run", "kept-dead", "and now?", "k2-kept"))
        assert r[0] == "ok" and "remember kept-dead" in str(r[1]), r

        # the owner's exit now stops the taken-over session, for good
        with contextlib.suppress(NoProcessError, ProcessExitedError):
            await rt.call(oa, "stop", timeout=10)
        await FH.until(
            lambda: _host_state(store, "own-live", "stopped"), timeout=WAIT, what="own-live"
        )
        await FH.until(lambda: _gone(rt, here, "own-live"), timeout=WAIT, what="own-live gone")
        for n in (a, c):
            for session in ("own-live", "own-dead"):
                r = await FH.ctl(rt, n, ("run", session, "hello?", f"k3-{n.name}-{session}"))
                assert r[:2] == ("error", "AgentNotFoundError"), (n, session, r)


async def test_an_owner_that_exits_while_its_sessions_node_is_down_stops_it_on_takeover(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    """Owner on alpha, its sessions on beta; beta is frozen (SIGSTOP, so it never hears of
    the exit), the owner exits, beta is killed. The transient session, restarted on a
    survivor, finds its owner gone (``noproc`` from alpha) and stops, marked ``stopped`` by
    the survivor; the temporary one (not restarted) does the same when a call revives it."""
    db = await _db(tmp_path)
    p = prefix()
    async with (
        Store.open(db) as store,
        FH.agent_cluster(nats_server.port, p, ["alpha", "beta", "gamma"], db, LEASE) as nodes,
        join(nats_server.url, "client", transport_options={**FAST, "prefix": p}) as rt,
    ):
        a, b, c = nodes
        oa = await FH.ctl(rt, a, ("owner",))
        for session, agent in (("own-early", "owned"), ("temp-early", "owned-temp")):
            await FH.ctl(rt, b, ("start", agent, session, oa))
            r = await FH.ctl(rt, b, ("run", session, f"remember {session}", f"k-{session}"))
            assert r[0] == "ok", r

        FH.stop(b)  # frozen: the owner's exit never reaches it
        with contextlib.suppress(NoProcessError, ProcessExitedError):
            await rt.call(oa, "stop", timeout=10)
        await FH.until(lambda: _dead(rt, oa), timeout=WAIT, what="owner gone")
        FH.kill(b)

        # taken over by failover, then stopped by the survivor at its own epoch
        await FH.until(
            lambda: _host_state(store, "own-early", "stopped"), timeout=WAIT, what="own-early"
        )
        conv = await store.conversations.get("own-early")
        assert conv.owner_node in ("alpha", "gamma") and conv.owner_pid is None, conv
        # temporary: not restarted; once beta is revoked the next call revives it, and it
        # stops with its gone owner (that call may be served before the monitor's answer)
        await FH.until(lambda: _revoked(store, "beta"), timeout=WAIT, what="beta revoked")
        assert (await store.conversations.get("temp-early")).host_state == "active"
        await FH.ctl(rt, c, ("run", "temp-early", "anyone?", "k2-temp"))
        await FH.until(
            lambda: _host_state(store, "temp-early", "stopped"), timeout=WAIT, what="temp-early"
        )
        for n in (a, c):
            for session in ("own-early", "temp-early"):
                await FH.until(lambda n=n, s=session: _gone(rt, n, s), timeout=WAIT, what=session)
                r = await FH.ctl(rt, n, ("run", session, "hello?", f"k3-{n.name}-{session}"))
                assert r[:2] == ("error", "AgentNotFoundError"), (n, session, r)


async def _running_on(rt: Runtime, nodes: list[FH.AgentNode], session: str) -> Any:
    for n in nodes:
        if await FH.ctl(rt, n, ("whereis", session)) is not None:
            return n
    return None


async def _owner_on(rt: Runtime, n: FH.AgentNode, session: str) -> Any:
    got = await FH.ctl(rt, n, ("owner_of", session))
    return got if isinstance(got, str) else None


async def _gone(rt: Runtime, n: FH.AgentNode, session: str) -> bool:
    return await FH.ctl(rt, n, ("whereis", session)) is None


async def _dead(rt: Runtime, pid: Pid) -> bool:
    try:
        await rt.call(pid, "ping", timeout=5)
    except (NoProcessError, ProcessExitedError):
        return True
    return False


async def _host_state(store: Store, session: str, state: str) -> bool:
    return (await store.conversations.get(session)).host_state == state


async def _stored_owner_is(store: Store, session: str, want: str | None) -> bool:
    return (await store.conversations.get(session)).owner_pid == want


async def _revoked(store: Store, name: str) -> bool:
    nodes = await list_nodes(store.database, include_gone=True)
    return any(n.name == name and n.state == "down" for n in nodes)
