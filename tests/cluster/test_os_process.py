"""A second node as a real OS process: calls across processes, and SIGKILL of that node fires
every link and monitor on its processes once, with ``noconnection``."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from netsuke.cluster import NOCONNECTION, NodeDown, join
from netsuke.kernel import Down, Exit, NoProcessError, Pid, ProcessExitedError
from netsuke.manager.testing import NatsServer

from .helpers import FAST, eventually, prefix

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[2]


def spawn_node(url: str, p: str, name: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.cluster.node_main", url, p, name],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )


async def start_node(url: str, p: str, name: str) -> tuple[subprocess.Popen[bytes], Pid]:
    proc = spawn_node(url, p, name)
    assert proc.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 90)
    node, num, _rec = line.decode().split()
    return proc, Pid(node, int(num))


def reap(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(30)
    if proc.stdout is not None:
        proc.stdout.close()


async def test_sigkill_of_a_node_process_fires_down_and_exit_once(
    nats_server: NatsServer,
) -> None:
    p = prefix()
    proc, remote = await start_node(nats_server.url, p, "beta")
    try:
        async with join(nats_server.url, "alpha", transport_options={**FAST, "prefix": p}) as a:
            t = a.transport
            await eventually(lambda: remote.node in t.nodes(), timeout=60)  # type: ignore[union-attr]
            assert await a.call(remote, ("over", "processes"), timeout=30) == (
                "echo",
                ("over", "processes"),
            )
            async with a.scope(trap_exit=True) as me:
                me.link(remote)
                ref = me.monitor(remote)
                t.monitor_node(me.pid, remote.node)  # type: ignore[union-attr]
                # The link is known on the other side once a call after it is answered
                # (frames between two nodes keep their order).
                await a.call(remote, "sync", timeout=30)
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(30)
                got = [await me.receive(timeout=60) for _ in range(3)]
                assert sorted(map(repr, got)) == sorted(
                    map(
                        repr,
                        [
                            Exit(remote, NOCONNECTION),
                            Down(ref, remote, NOCONNECTION),
                            NodeDown(remote.node),
                        ],
                    )
                )
                with pytest.raises(TimeoutError):
                    await me.receive(timeout=1.0)
                with pytest.raises((NoProcessError, ProcessExitedError)):
                    await a.call(remote, "x", timeout=30)
                assert remote.node not in t.nodes()  # type: ignore[union-attr]
    finally:
        reap(proc)


async def test_call_in_flight_to_a_killed_node_fails_instead_of_hanging(
    nats_server: NatsServer,
) -> None:
    p = prefix()
    proc, remote = await start_node(nats_server.url, p, "gamma")
    try:
        async with join(nats_server.url, "alpha", transport_options={**FAST, "prefix": p}) as a:
            await a.call(remote, "warm", timeout=30)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)
            # No timeout: only node-down detection (no responders, or missed heartbeats) ends it.
            with pytest.raises((NoProcessError, ProcessExitedError)):
                await asyncio.wait_for(a.call(remote, "never answered", timeout=None), 60)
    finally:
        reap(proc)


async def test_a_call_to_a_node_never_heard_from_fails_once_it_stays_silent(
    nats_server: NatsServer,
) -> None:
    """The node is stopped (its subscription stays at the server, so no "no responders")
    before this node ever heard its heartbeat: the call still ends, by node-down, instead of
    hanging (it did when only links and monitors made a node tracked)."""
    p = prefix()
    proc, remote = await start_node(nats_server.url, p, "delta")
    try:
        os.kill(proc.pid, signal.SIGSTOP)
        async with join(nats_server.url, "alpha", transport_options={**FAST, "prefix": p}) as a:
            with pytest.raises((NoProcessError, ProcessExitedError)):
                await asyncio.wait_for(a.call(remote, "never answered", timeout=None), 60)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        reap(proc)


async def test_sigkill_is_seen_at_once_through_no_responders_not_after_down_after(
    nats_server: NatsServer,
) -> None:
    """A killed node's subscription is gone from the server: an overdue heartbeat makes the
    observer probe it, and "no responders" brings it down long before ``down_after`` (here an
    hour: only the probe can end this wait)."""
    p = prefix()
    proc, remote = await start_node(nats_server.url, p, "kappa")
    try:
        slow = {"heartbeat_interval": 0.2, "down_after": 3600.0, "prefix": p}
        async with join(nats_server.url, "alpha", transport_options=slow) as a:
            t = a.transport
            await eventually(lambda: remote.node in t.nodes(), timeout=60)  # type: ignore[union-attr]
            async with a.scope() as me:
                ref = me.monitor(remote)
                await a.call(remote, "sync", timeout=30)
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(30)
                assert await me.receive(timeout=60) == Down(ref, remote, NOCONNECTION)
    finally:
        reap(proc)
