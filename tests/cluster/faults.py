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
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from netsuke.cluster import NOCONNECTION, NatsTransport
from netsuke.kernel import NoProcessError, Pid, ProcessExitedError, Runtime

from . import procs as P
from .proxy import TcpProxy

SETTLE = 3.0  # after a heal: long enough for a second (wrong) firing to show up


class Node:
    """A node: the test's own (``proc is None``) or an OS process behind a proxy."""

    def __init__(self, name: str, log: Path | None = None) -> None:
        self.name = name
        self.log = log
        self.node = ""
        self.echo: Pid | None = None
        self.rec: Pid = Pid("", 0)
        self.proc: subprocess.Popen[bytes] | None = None
        self.proxy: TcpProxy | None = None
        self.stopped = False

    def __repr__(self) -> str:
        return f"<node {self.node or self.name}>"


async def spawn(nats_port: int, prefix: str, name: str, logs: Path | None = None) -> Node:
    n = Node(name, None if logs is None else logs / f"{name}.log")
    n.proxy = TcpProxy(nats_port)
    await n.proxy.start()
    try:
        await restart(n, prefix)
    except BaseException:
        reap([n])
        await n.proxy.close()
        raise
    return n


async def restart(n: Node, prefix: str) -> None:
    """Start (again) the OS process of ``n``: a new incarnation, new pids."""
    assert n.proxy is not None
    reap([n])  # the predecessor's pipe (killed by kill(), or still running: killed now)
    P.popen(n, "tests.cluster.node_main", n.proxy.url, prefix, n.name)
    assert n.proc is not None and n.proc.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(n.proc.stdout.readline), 90)
    node, echo, rec = line.decode().split()
    n.node, n.echo, n.rec = node, Pid(node, int(echo)), Pid(node, int(rec))


async def local(rt: Runtime, name: str) -> Node:
    n = Node(name)
    n.node = rt.node
    await local_rec(rt, n)
    return n


kill = P.kill
reap = P.reap


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


FAULTS = ("sigkill", "sigstop", "blackhole", "drop", "nats_restart")


async def fresh(a: Runtime, nodes: list[Node]) -> None:
    """A new recorder on every node (no links, monitors or node watches from earlier rounds)."""
    for n in nodes:
        if n.proc is None:
            await local_rec(a, n)
        else:
            n.rec = await rec_call(a, n, ("spawn",))


async def local_rec(a: Runtime, n: Node) -> None:
    from .helpers import Recorder

    pid = await a.start(Recorder)
    assert pid is not None
    n.rec = pid


async def fault_round(
    a: Runtime,
    nodes: list[Node],
    fault: str,
    victim: Node,
    *,
    server: Any,
    prefix: str,
) -> Counter[str]:
    """One fault, healed, checked; returns the signals seen by kind (``exit``, ``down``,
    ``nodedown``). ``nodes[0]`` is the test's own node (never the victim); ``server`` is the
    ``NatsServer`` (restarted on its port for ``nats_restart``, then ``victim`` is ignored)."""
    assert fault in FAULTS, fault
    await fresh(a, nodes)
    await wire(a, nodes)
    cut: dict[Node, list[Node]]
    if fault == "nats_restart":
        cut = {n: [o for o in nodes if o is not n] for n in nodes}
        port = server.port
        server.stop()
        server.start(port)
    else:
        assert victim is not nodes[0] and victim.proc is not None and victim.proxy is not None
        others = [n for n in nodes if n is not victim]
        predecessor = Node(victim.name)
        predecessor.node, predecessor.rec, predecessor.echo = victim.node, victim.rec, victim.echo
        cut = {n: [predecessor] for n in others}
        if fault == "sigkill":
            kill(victim)
        elif fault == "sigstop":
            os.kill(victim.proc.pid, signal.SIGSTOP)
            victim.stopped = True
        elif fault == "blackhole":
            victim.proxy.blackhole()
        else:
            victim.proxy.drop()
        # Everybody else sees the victim go down, once, and keeps serving the others.
        for n in others:
            await wait_seen(a, n, expected(n, [predecessor]))
        for x in others:
            for y in others:
                if x is not y:
                    assert await via(a, x, y) == ("echo", "ping"), (x, y)
        try:
            await a.call(predecessor.rec, "while down", timeout=30)
            raise AssertionError(f"{predecessor} answered while down")
        except (NoProcessError, ProcessExitedError):
            pass
        if fault == "sigkill":
            await restart(victim, prefix)  # same name, new incarnation, new pids
            assert victim.node != predecessor.node
            cut[victim] = []
        else:
            if fault == "sigstop":
                os.kill(victim.proc.pid, signal.SIGCONT)
                victim.stopped = False
            else:
                victim.proxy.heal()
            cut[victim] = others  # the cut-off side fires too
    for n, lost in cut.items():
        await wait_seen(a, n, expected(n, lost), timeout=90)
    await wait_joined(a, nodes, timeout=90)
    if fault == "sigkill":
        # Pids of the killed incarnation never reach its successor, from any node.
        assert predecessor.echo is not None
        assert a.send(predecessor.rec, ("stale", 1)) is False
        assert a.cast(predecessor.echo, ("stale", 2)) is False
        for n in nodes[1:]:
            if n is not victim:
                got = await rec_call(a, n, ("call", predecessor.rec, "stale", 20), timeout=40)
                assert got == ("error", "NoProcessError"), (n, got)
    await asyncio.sleep(SETTLE)
    counts: Counter[str] = Counter()
    for n in nodes:
        got = await take(a, n)
        assert got == expected(n, cut[n]), f"{fault}: {n} recorded {got}"
        counts.update(g.split(",", 1)[0].strip("('") for g in got)
    if fault == "sigkill":
        assert victim.echo is not None
        assert await a.call(victim.echo, "seen", timeout=30) == []
    return counts


async def quiet_round(a: Runtime, nodes: list[Node]) -> None:
    """Links and monitors made after a heal work and fire nothing on their own."""
    await fresh(a, nodes)
    await wire(a, nodes)
    await asyncio.sleep(SETTLE)
    for n in nodes:
        assert await take(a, n) == [], n


@asynccontextmanager
async def cluster(server: Any, names: list[str]) -> AsyncIterator[tuple[Runtime, list[Node], str]]:
    """The test's node ``alpha`` plus one OS process per name (each behind its own proxy), all
    calling each other; yields the runtime, the nodes (``alpha`` first) and the prefix."""
    from netsuke.cluster import join

    from .helpers import FAST
    from .helpers import prefix as new_prefix

    p = new_prefix()
    spawned: list[Node] = []
    with P.log_dir(spawned) as logs:  # type: ignore[arg-type]
        try:
            for n in await asyncio.gather(*(spawn(server.port, p, name, logs) for name in names)):
                spawned.append(n)
            async with join(server.url, "alpha", transport_options={**FAST, "prefix": p}) as a:
                nodes = [await local(a, "alpha"), *spawned]
                await wait_joined(a, nodes)
                yield a, nodes, p
        finally:
            reap(spawned)
            for n in spawned:
                if n.proxy is not None:
                    await n.proxy.close()
