"""Fault harness for the cluster tests: nodes as real OS processes (``node_main``), each behind
its own :class:`TcpProxy`, plus the test's own node; links, monitors and ``monitor_node`` between
every pair; faults (SIGKILL, SIGSTOP/SIGCONT, proxy blackhole or drop, nats-server restart);
and the check that each pair that was cut fired every signal exactly once, on both sides.

Each node runs a ``Recorder`` (``rec``, trapping exits) that records signals as tuples. Per pair
``{X, Y}``: ``X.rec`` and ``Y.rec`` are linked, each monitors the other, and each node watches
the other with ``monitor_node``. When the pair is cut, each live side must record exactly::

    ("exit", other.rec, "noconnection"), ("down", other.rec, "noconnection"),
    ("nodedown", other.node)

and no ``("info", ...)``: nothing is ever sent to a rec as a plain message except stale frames
to a predecessor's pid, which must never reach a successor.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from netsuke.cluster import NOCONNECTION, NatsTransport
from netsuke.kernel import NoProcessError, Pid, ProcessExitedError, Runtime

from .proxy import TcpProxy

ROOT = Path(__file__).resolve().parents[2]
SETTLE = 3.0  # after a heal: long enough for a second (wrong) firing to show up


class Node:
    """A node: the test's own (``proc is None``) or an OS process behind a proxy."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.node = ""
        self.echo: Pid | None = None
        self.rec: Pid = Pid("", 0)
        self.proc: subprocess.Popen[bytes] | None = None
        self.proxy: TcpProxy | None = None
        self.stopped = False

    def __repr__(self) -> str:
        return f"<node {self.node or self.name}>"


async def spawn(nats_port: int, prefix: str, name: str) -> Node:
    n = Node(name)
    n.proxy = TcpProxy(nats_port)
    await n.proxy.start()
    await restart(n, prefix)
    return n


async def restart(n: Node, prefix: str) -> None:
    """Start (again) the OS process of ``n``: a new incarnation, new pids."""
    assert n.proxy is not None
    if n.proc is not None and n.proc.stdout is not None:
        n.proc.stdout.close()  # the predecessor's, reaped by kill()
    n.proc = _popen(n.proxy.url, prefix, n.name)
    assert n.proc.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(n.proc.stdout.readline), 90)
    node, echo, rec = line.decode().split()
    n.node, n.echo, n.rec = node, Pid(node, int(echo)), Pid(node, int(rec))
    n.stopped = False


def _popen(url: str, prefix: str, name: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.cluster.node_main", url, prefix, name],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )


async def local(rt: Runtime, name: str) -> Node:
    from .helpers import Recorder

    n = Node(name)
    n.node = rt.node
    pid = await rt.start(Recorder)
    assert pid is not None
    n.rec = pid
    return n


def kill(n: Node) -> None:
    assert n.proc is not None
    os.kill(n.proc.pid, signal.SIGKILL)
    n.proc.wait(30)


def reap(nodes: Iterable[Node]) -> None:
    for n in nodes:
        p = n.proc
        if p is None:
            continue
        if p.poll() is None:
            if n.stopped:
                os.kill(p.pid, signal.SIGCONT)
            p.kill()
            p.wait(30)
        if p.stdout is not None:
            p.stdout.close()


async def rec_call(a: Runtime, n: Node, request: Any, timeout: float = 30) -> Any:
    return await a.call(n.rec, request, timeout=timeout)


async def via(a: Runtime, frm: Node, to: Node, request: Any = "ping") -> Any:
    """``frm.rec`` calls ``to.rec`` (from ``frm``'s node), driven by the test's node."""
    if frm.node == a.node:
        return await a.call(to.rec, request, timeout=30)
    r = await rec_call(a, frm, ("call", to.rec, request, 20), timeout=40)
    if type(r) is tuple and len(r) == 2 and r[0] == "error":
        if r[1] == "NoProcessError":
            raise NoProcessError(to.rec)
        raise TimeoutError(f"{frm} calling {to}: {r[1]}")
    return r


async def wait_joined(a: Runtime, nodes: list[Node], timeout: float = 60) -> None:
    """Every node calls every other one successfully (all pairs are up both ways)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    for x in nodes:
        for y in nodes:
            if x is y:
                continue
            while True:
                try:
                    assert await via(a, x, y) == ("echo", "ping")
                    break
                except (NoProcessError, ProcessExitedError, TimeoutError):
                    if loop.time() > deadline:
                        raise AssertionError(f"{x} cannot call {y} within {timeout} s") from None
                    await asyncio.sleep(0.2)


async def wire(a: Runtime, nodes: list[Node]) -> None:
    """Between every pair: a link, a monitor each way, ``monitor_node`` each way; then a call
    each way, which arrives after those frames (frames between two nodes keep their order)."""
    for i, x in enumerate(nodes):
        for y in nodes[i + 1 :]:
            assert await rec_call(a, x, ("link", y.rec)) == "ok"
        for y in nodes:
            if y is not x:
                await rec_call(a, x, ("monitor", y.rec))
                assert await rec_call(a, x, ("monitor_node", y.node)) == "ok"
    for x in nodes:
        for y in nodes:
            if y is not x:
                await via(a, x, y)


def expected(x: Node, cut_from: Iterable[Node]) -> list[str]:
    out = []
    for y in cut_from:
        out += [
            repr(("exit", y.rec, NOCONNECTION)),
            repr(("down", y.rec, NOCONNECTION)),
            repr(("nodedown", y.node)),
        ]
    return sorted(out)


async def seen(a: Runtime, n: Node) -> list[str]:
    return sorted(repr(e) for e in await rec_call(a, n, ("seen",)))


async def take(a: Runtime, n: Node) -> list[str]:
    return sorted(repr(e) for e in await rec_call(a, n, ("take",)))


async def wait_seen(a: Runtime, n: Node, want: list[str], timeout: float = 60) -> None:
    """``n``'s recorder has at least the ``want`` entries; fails at once on a duplicate."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            got = await seen(a, n)
        except (NoProcessError, ProcessExitedError, TimeoutError):
            got = None  # not up again yet in this node's view
        if got is None:
            if loop.time() > deadline:
                raise AssertionError(f"{n} does not answer within {timeout} s")
            await asyncio.sleep(0.2)
            continue
        extra = Counter(got) - Counter(want)
        assert not extra, f"{n} recorded unexpected or duplicate signals: {sorted(extra)}"
        if got == want:
            return
        if loop.time() > deadline:
            raise AssertionError(f"{n} recorded {got}, wanted {want}")
        await asyncio.sleep(0.1)


def transport(a: Runtime) -> NatsTransport:
    t = a.transport
    assert isinstance(t, NatsTransport)
    return t
