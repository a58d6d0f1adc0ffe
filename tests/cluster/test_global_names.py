"""Global names over a real nats-server and a real store (SQLite file, PostgreSQL): unique
cluster-wide, resolved, called and matched from any node; taken over only once the owner's
lease has run out (SIGKILL, SIGSTOP of the owner's node process); a resumed owner has fenced
itself. Every wait polls with a generous deadline; nothing asserts wall-clock durations."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from netsuke.cluster import ClusterNode, FencedError, join_cluster, split_node_id
from netsuke.kernel import AlreadyStartedError, NoProcessError, Pid
from netsuke.manager.testing import NatsServer
from netsuke.store import upgrade

from .helpers import FAST, Echo, eventually, prefix
from .procs import end

pytestmark = pytest.mark.timeout(240)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def store_url(migrated_url: str) -> str:
    await upgrade(migrated_url)
    return migrated_url


@asynccontextmanager
async def member(
    nats: NatsServer, p: str, name: str, url: str, lease: float = 30.0
) -> AsyncIterator[ClusterNode]:
    async with join_cluster(
        nats.url,
        name,
        url,
        lease=lease,
        membership_options={"renew_interval": lease / 10, "fence_after": lease / 2},
        transport_options={**FAST, "prefix": p},
    ) as node:
        yield node


def spawn_member(url: str, p: str, name: str, db: str, lease: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.cluster.member_main", url, p, name, db, str(lease)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )


async def start_member(
    url: str, p: str, name: str, db: str, lease: float
) -> tuple[subprocess.Popen[bytes], Pid]:
    proc = spawn_member(url, p, name, db, lease)
    assert proc.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 90)
    node, num = line.decode().split()
    return proc, Pid(node, int(num))


async def test_register_resolve_call_match_and_stop_across_nodes(
    nats_server: NatsServer, store_url: str
) -> None:
    p = prefix()
    async with (
        member(nats_server, p, "alpha", store_url) as a,
        member(nats_server, p, "beta", store_url) as b,
    ):
        pid = await a.runtime.start(Echo)
        assert pid is not None
        await a.names.register("chat:user:1", pid, {"model": "m1"})
        assert a.names.owns("chat:user:1")
        other = await b.runtime.start(Echo)
        assert other is not None
        with pytest.raises(AlreadyStartedError) as caught:
            await b.names.register("chat:user:1", other)
        assert caught.value.pid == pid
        assert await b.names.whereis("chat:user:1") == pid
        entry = await b.names.lookup("chat:user:1")
        assert entry is not None and entry.meta == {"model": "m1"}
        assert await b.names.call("chat:user:1", "hi", timeout=30) == ("echo", "hi")
        assert await b.names.send("chat:user:1", "m") is True
        assert await b.names.send("nobody", "m") is False
        with pytest.raises(NoProcessError):
            await b.names.call("nobody", "x")
        await b.names.register("chat:user:2", other)
        third = await a.runtime.start(Echo)
        assert third is not None
        await a.names.register("report:user:1", third)
        for n in (a.names, b.names):
            assert [e.name for e in await n.match()] == [
                "chat:user:1",
                "chat:user:2",
                "report:user:1",
            ]
            assert await n.count() == 3
            assert await n.count("chat:*") == 2
            assert await n.count(prefix="report:") == 1
            assert [e.name for e in await n.find("user:1")] == ["chat:user:1", "report:user:1"]
            assert [e.name for e in await n.find("chat:*:2")] == ["chat:user:2"]
        # stop-matching across the cluster: processes of both nodes stop, their names go
        assert await b.names.stop_matching("chat:") == 2
        assert not a.runtime.alive(pid) and not b.runtime.alive(other)

        async def freed() -> bool:
            return await a.names.count("chat:*") == 0

        await _until(freed)
        # the owner process's exit unregistered it: the name is free for anyone
        again = await b.runtime.start(Echo)
        assert again is not None
        await b.names.register("chat:user:1", again)
        assert await a.names.whereis("chat:user:1") == again
        assert await b.names.unregister("chat:user:1") is True
        assert await a.names.whereis("chat:user:1") is None
        assert await a.names.unregister("report:user:1") is True
        with pytest.raises(NoProcessError):
            await a.names.register("gone", Pid(b.node_id, again.id))  # not a local process


async def _until(check: Any, timeout: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.05)


async def test_100_concurrent_registrations_across_two_node_processes_give_one_owner(
    nats_server: NatsServer, store_url: str
) -> None:
    p = prefix()
    proc, ctl = await start_member(nats_server.url, p, "remote", store_url, 30.0)
    try:
        async with member(nats_server, p, "local", store_url) as a:
            await eventually(lambda: a.seen_alive(ctl.node), timeout=60)
            pids = [await a.runtime.start(Echo) for _ in range(50)]

            async def one(pid: Pid | None) -> Pid | None:
                assert pid is not None
                try:
                    await a.names.register("the-one", pid)
                except AlreadyStartedError:
                    return None
                return pid

            remote_wins, *local = await asyncio.gather(
                a.runtime.call(ctl, ("race", "the-one", 50), timeout=120),
                *(one(pid) for pid in pids),
                return_exceptions=True,  # no registration left running if one fails
            )
            errors = [x for x in (remote_wins, *local) if isinstance(x, BaseException)]
            assert not errors, errors
            winners = [*remote_wins, *(x for x in local if x is not None)]
            assert len(winners) == 1
            assert await a.names.whereis("the-one") == winners[0]
            assert await a.runtime.call(ctl, ("whereis", "the-one"), timeout=60) == winners[0]
            assert await a.names.count() == 1
    finally:
        end(proc)


async def test_a_name_is_taken_over_after_sigkill_of_its_owner_only_once_the_lease_expired(
    nats_server: NatsServer, store_url: str
) -> None:
    p = prefix()
    proc, ctl = await start_member(nats_server.url, p, "owner", store_url, 3.0)
    remote = split_node_id(ctl.node)
    assert remote is not None
    try:
        async with member(nats_server, p, "taker", store_url) as a:
            held = await a.runtime.call(ctl, ("own", "leader"), timeout=60)
            mine = await a.runtime.start(Echo)
            assert mine is not None
            with pytest.raises(AlreadyStartedError) as caught:  # its lease is live
                await a.names.register("leader", mine)
            assert caught.value.pid == held
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)
            assert set(await take_over(a, "leader", mine)) <= {held}
            # taken only once the database says the killed node's lease has run out
            assert not await a.membership.is_live(*remote)
            assert await a.names.whereis("leader") == mine
            assert a.names.owns("leader")
    finally:
        end(proc)


async def test_sigstop_past_the_lease_lets_another_node_take_over_and_the_resumed_owner_is_fenced(
    nats_server: NatsServer, store_url: str
) -> None:
    p = prefix()
    proc, ctl = await start_member(nats_server.url, p, "sleeper", store_url, 3.0)
    remote = split_node_id(ctl.node)
    assert remote is not None
    try:
        async with member(nats_server, p, "survivor", store_url) as a:
            held = await a.runtime.call(ctl, ("own", "leader"), timeout=60)
            status = await a.runtime.call(ctl, "status", timeout=60)
            assert status["owned"] == ["leader"] and status["fenced"] is False
            mine = await a.runtime.start(Echo)
            assert mine is not None
            os.kill(proc.pid, signal.SIGSTOP)
            assert set(await take_over(a, "leader", mine)) <= {held}
            assert not await a.membership.is_live(*remote)
            os.kill(proc.pid, signal.SIGCONT)
            # the resumed node answers again (over NATS), as a fenced non-member
            status = await _call_until_up(a, ctl, "status")
            assert status["fenced"] is True
            assert status["reason"] in ("renewal_overdue", "lease_lost")
            assert status["owned"] == [] and status["owns_leader"] is False
            assert await a.runtime.call(ctl, ("whereis", "leader"), timeout=60) == mine
            assert await a.names.whereis("leader") == mine
            # and it cannot register anything any more
            with pytest.raises(Exception, match="fenced"):
                await a.runtime.call(ctl, ("own", "other"), timeout=60)
    finally:
        end(proc)


async def take_over(node: ClusterNode, name: str, pid: Pid) -> list[Any]:
    """Register ``name`` until it succeeds; the holders named by the refusals before."""
    holders = []
    while True:
        try:
            await node.names.register(name, pid)
        except AlreadyStartedError as e:
            holders.append(e.pid)
            await asyncio.sleep(0.1)
        else:
            return holders


async def _call_until_up(node: ClusterNode, pid: Pid, request: Any) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 90
    while True:
        try:
            return await node.runtime.call(pid, request, timeout=10)
        except Exception:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.2)


async def test_a_fenced_node_refuses_to_register(nats_server: NatsServer, tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'c.db'}"
    await upgrade(url)
    async with member(nats_server, prefix(), "alpha", url, lease=30.0) as a:
        pid = await a.runtime.start(Echo)
        assert pid is not None
        await a.names.register("x", pid)
        sub = a.runtime.events.subscribe("cluster.*")
        a.membership._fence("test")
        event = await sub.get(timeout=30)
        assert event.topic == "cluster.node_fenced"
        assert event.data == {"node": a.node_id, "reason": "test", "names": 1}
        assert not a.names.owns("x") and a.names.owned() == []
        assert await a.names.whereis("x") is None  # a fenced node does not answer as owner
        with pytest.raises(FencedError):
            await a.names.register("y", pid)


async def test_a_restarted_node_does_not_keep_its_predecessors_names(
    nats_server: NatsServer, store_url: str
) -> None:
    p = prefix()
    proc, ctl = await start_member(nats_server.url, p, "phoenix", store_url, 3.0)
    procs = [proc]
    try:
        async with member(nats_server, p, "watcher", store_url) as a:
            held = await a.runtime.call(ctl, ("own", "kept"), timeout=60)
            assert await a.names.whereis("kept") == held
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)
            while True:  # refused (exits at once) while the predecessor's lease is live
                again = spawn_member(nats_server.url, p, "phoenix", store_url, 3.0)
                procs.append(again)
                assert again.stdout is not None
                line = await asyncio.wait_for(asyncio.to_thread(again.stdout.readline), 90)
                if line:
                    break
                assert await asyncio.to_thread(again.wait, 30) != 0
                await asyncio.sleep(0.2)
            new_node = line.decode().split()[0]
            assert split_node_id(new_node) > split_node_id(ctl.node)  # type: ignore[operator]
            rows = {n.node_id: n for n in await a.membership.nodes(include_gone=True)}
            assert rows[ctl.node].names == 0  # the predecessor's names were deleted at join
            assert await a.names.whereis("kept") is None
    finally:
        for each in procs:
            end(each)
