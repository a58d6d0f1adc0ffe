"""Owner links that survive a takeover (issue 17), in one process: a node whose id is a
cluster id (``name#incarnation``) stores each session's owner pid with its claim, and a
session started from the store (``Agents.revive``: failover, lazy revival, adoption) monitors
that owner again, so its exit, or its absence, applies the agent's ``owner_policy`` as a
restarted server does on one node. The cross-node cases, with node OS processes and SIGKILL,
are in ``tests/cluster/test_owner_failover.py``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from netsuke import Runtime
from netsuke.agents import AgentConfig, Agents
from netsuke.agents._owners import decode_owner, encode_owner
from netsuke.cluster._codec import dumps, from_wire, read_json, to_wire
from netsuke.kernel import Pid, Process
from netsuke.store import NodeIdentity, Store

from .helpers import echo_model

pytestmark = pytest.mark.timeout(60)

ME = NodeIdentity("alpha", 1)
STOP = AgentConfig(name="owned", model=echo_model(), owner_policy="stop")
HIBERNATE = AgentConfig(name="kept", model=echo_model(), owner_policy="hibernate")


class Dead:
    """Every node is live except those named."""

    def __init__(self, *dead: str) -> None:
        self.dead = set(dead)

    async def is_live(self, node: str, incarnation: int) -> bool:
        return node not in self.dead


class Idle(Process):
    def handle_call(self, request: object, from_: object) -> object:
        return "ok"


@pytest.fixture
async def cstore(tmp_path: Path) -> AsyncIterator[Store]:
    async with Store.open(f"sqlite+aiosqlite:///{tmp_path / 'owners.db'}") as s:
        s.conversations.set_ownership(ME, Dead("beta"))
        yield s


@pytest.fixture
async def crt() -> AsyncIterator[Runtime]:
    async with Runtime(node=str(ME), shutdown_timeout=5.0) as node:
        yield node


@pytest.fixture
async def cagents(crt: Runtime, cstore: Store) -> Agents:
    agents = await Agents.start(crt, cstore)
    agents.define(STOP)
    agents.define(HIBERNATE)
    return agents


async def until(check: Callable[[], Awaitable[Any]], what: str, timeout: float = 20) -> Any:
    """Poll ``check`` until it returns a truthy value; the timeout only bounds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        v = await check()
        if v:
            return v
        assert loop.time() < deadline, f"{what} not met within {timeout} s"
        await asyncio.sleep(0.02)


async def _stored_owner(store: Store, session: str) -> str | None:
    return (await store.conversations.get(session)).owner_pid


async def _idle(rt: Runtime) -> Pid:
    pid = await rt.start(Idle)
    assert pid is not None
    return pid


def test_the_stored_owner_is_the_cluster_codecs_pid_encoding() -> None:
    pid = Pid("alpha#1765000000000000", 42)
    text = encode_owner(pid)
    assert text == dumps(to_wire(pid)).decode()
    assert read_json(text.encode(), from_wire) == pid  # type: ignore[union-attr]
    assert decode_owner(text) == pid
    # a single node's pids name no run of a node: never stored, never restored
    assert encode_owner(Pid("local", 7)) is None and encode_owner(None) is None
    for bad in (None, "", "{", "[]", '{"$p":["local",7]}', '{"$p":["a#1",-1]}', '{"$p":[1,2]}'):
        assert decode_owner(bad) is None, bad


async def test_the_owner_is_stored_with_the_claim_and_follows_attach_and_exit(
    cagents: Agents, crt: Runtime, cstore: Store
) -> None:
    first = await _idle(crt)
    sid, pid = await cagents.start_session("kept", "u1", HIBERNATE, owner=first)
    assert await _stored_owner(cstore, sid) == encode_owner(first)  # written by the claim
    assert (await cagents.status(sid))["owner"] == repr(first)
    second = await _idle(crt)
    await cagents.attach_owner(sid, second)  # answered once it is stored
    assert await _stored_owner(cstore, sid) == encode_owner(second)
    await crt.stop(second)  # hibernate: the session stays, without an owner
    await until(lambda: _is(_stored_owner(cstore, sid), None), "owner exit recorded")
    assert crt.alive(pid) and (await cagents.status(sid))["owner"] is None


async def _is(got: Awaitable[Any], want: Any) -> bool:
    return (await got) == want


async def test_a_revived_session_monitors_its_stored_owner_and_stops_with_it(
    cagents: Agents, crt: Runtime, cstore: Store
) -> None:
    owner = await _idle(crt)
    # stored by another node (beta#1, gone) whose session had this owner
    await cstore.conversations.open(
        "s1",
        agent_name="owned",
        claim=True,
        node=NodeIdentity("beta", 1),
        owner_pid=encode_owner(owner),
    )
    pid = await cagents.revive("s1", claim=True)  # failover's takeover
    st = await cagents.status("s1")
    assert st["owner"] == repr(owner)
    assert "echo hi" in await cagents.run("s1", "hi")
    await crt.stop(owner)
    await asyncio.wait_for(crt.wait_exit(pid), 10)
    await until(lambda: _host_state(cstore, "s1", "stopped"), "marked stopped")
    assert await _stored_owner(cstore, "s1") is None
    with pytest.raises(Exception) as e:  # stopped for good: not revived
        await cagents.run("s1", "again?")
    assert type(e.value).__name__ == "AgentNotFoundError"


async def _host_state(store: Store, session: str, state: str) -> bool:
    return (await store.conversations.get(session)).host_state == state


@pytest.mark.parametrize("claim", [True, False], ids=["takeover", "lazy"])
async def test_a_session_revived_after_its_owner_exited_stops_at_once_and_is_marked(
    cagents: Agents, crt: Runtime, cstore: Store, claim: bool
) -> None:
    """As a restarted server on one node whose owner is dead: the monitor says ``noproc`` at
    once and ``stop`` applies; a lazily revived process, which has not claimed the session
    yet, claims it to record the stop."""
    owner = await _idle(crt)
    await crt.stop(owner)
    await cstore.conversations.open(
        "s2",
        agent_name="owned",
        claim=True,
        node=NodeIdentity("beta", 1),
        owner_pid=encode_owner(owner),
    )
    pid = await cagents.revive("s2", claim=claim)
    await asyncio.wait_for(crt.wait_exit(pid), 10)
    await until(lambda: _host_state(cstore, "s2", "stopped"), "marked stopped")
    got = await cstore.conversations.get("s2")
    assert (got.owner_node, got.owner_pid) == ("alpha", None)


async def test_an_owner_on_the_node_the_session_is_taken_from_is_gone_with_it(
    cagents: Agents, crt: Runtime, cstore: Store
) -> None:
    """Owner and session on beta#1, which is gone: the survivor's process sees its owner
    exit with ``noconnection`` at once. ``stop`` stops the session for good; ``hibernate``
    keeps it, without an owner."""
    gone = encode_owner(Pid("beta#1", 9))
    for session, agent in (("s3", "owned"), ("s4", "kept")):
        await cstore.conversations.open(
            session, agent_name=agent, claim=True, node=NodeIdentity("beta", 1), owner_pid=gone
        )
    pid = await cagents.revive("s3", claim=True)
    await asyncio.wait_for(crt.wait_exit(pid), 10)
    await until(lambda: _host_state(cstore, "s3", "stopped"), "s3 marked stopped")
    kept = await cagents.revive("s4", claim=True)
    await until(lambda: _is(_stored_owner(cstore, "s4"), None), "s4 owner cleared")
    assert crt.alive(kept) and (await cagents.status("s4"))["owner"] is None
    assert "echo still here" in await cagents.run("s4", "still here")


async def test_a_single_node_stores_no_owner(agents: Agents, rt: Runtime, store: Store) -> None:
    """A single node's pids (``local.7``) are not unique across its runs: never stored."""
    owner = await _idle(rt)
    sid, _ = await agents.start_session("kept", "u1", HIBERNATE, owner=owner)
    assert (await agents.status(sid))["owner"] == repr(owner)
    assert await _stored_owner(store, sid) is None
