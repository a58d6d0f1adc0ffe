"""Agent nodes as OS processes (``agent_node_main``), each behind its own TCP proxy to NATS,
and a chat load that records a history for the checker (``history.py``): shared by the
failover tests, the chaos soak and ``benchmarks/cluster_failover.py``."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netsuke.kernel import CallTimeoutError, NoProcessError, Pid, ProcessExitedError, Runtime
from netsuke.store import Store

from . import history as H
from . import procs as P
from .proxy import TcpProxy

# told the turn did not commit (nothing stored), as opposed to "unknown" (a call that died)
DEFINITE_FAILURES = frozenset({"SessionMovedError", "AgentBusyError", "TurnCancelledError"})


class AgentNode:
    """One agent node process: its name, current node id, controller pid, proxy, log file."""

    def __init__(self, name: str, proxy: TcpProxy, log: Path | None = None) -> None:
        self.name = name
        self.proxy = proxy
        self.log = log
        self.node = ""
        self.ctl = Pid("", 0)
        self.proc: subprocess.Popen[bytes] | None = None
        self.stopped = False

    def __repr__(self) -> str:
        return f"<agent node {self.node or self.name}>"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


async def spawn(
    nats_port: int,
    prefix: str,
    name: str,
    db: str,
    lease: float,
    fast: bool = True,
    logs: Path | None = None,
) -> AgentNode:
    proxy = TcpProxy(nats_port)
    await proxy.start()
    n = AgentNode(name, proxy, None if logs is None else logs / f"{name}.log")
    try:
        await start(n, prefix, db, lease, fast)
    except BaseException:
        reap([n])
        await proxy.close()
        raise
    return n


async def start(n: AgentNode, prefix: str, db: str, lease: float, fast: bool = True) -> None:
    """Start (again) the process of ``n``: a new incarnation."""
    reap([n])
    args = (n.proxy.url, prefix, n.name, db, str(lease), "1" if fast else "0")
    P.popen(n, "tests.cluster.agent_node_main", *args)
    assert n.proc is not None and n.proc.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(n.proc.stdout.readline), 120)
    node, ctl = line.decode().split()
    n.node, n.ctl = node, Pid(node, int(ctl))


kill = P.kill
reap = P.reap


def stop(n: AgentNode) -> None:
    os.kill(n.pid, signal.SIGSTOP)
    n.stopped = True


def cont(n: AgentNode) -> None:
    os.kill(n.pid, signal.SIGCONT)
    n.stopped = False


async def ctl(rt: Runtime, n: AgentNode, request: Any, timeout: float = 30) -> Any:
    return await rt.call(n.ctl, request, timeout=timeout)


async def until(check: Any, timeout: float = 60, what: str = "condition") -> Any:
    """Poll the coroutine function ``check`` until it returns a truthy value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            v = await check()
        except (NoProcessError, ProcessExitedError, CallTimeoutError, TimeoutError):
            v = None
        if v:
            return v
        if loop.time() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s")
        await asyncio.sleep(0.05)


@asynccontextmanager
async def agent_cluster(
    nats_port: int,
    prefix: str,
    names: list[str],
    db: str,
    lease: float,
    fast: bool = True,
) -> AsyncIterator[list[AgentNode]]:
    """One agent node process per name, each behind its own proxy, each logging (at info) to
    a file of its own; when the body fails, the tail of every node's log is printed."""
    nodes: list[AgentNode] = []
    with P.log_dir(nodes) as logs:  # type: ignore[arg-type]
        try:
            for n in await asyncio.gather(
                *(spawn(nats_port, prefix, name, db, lease, fast, logs) for name in names)
            ):
                nodes.append(n)
            yield nodes
        finally:
            reap(nodes)
            for n in nodes:
                await n.proxy.close()


def request_of(prompt: str) -> str | None:
    """The request id a load prompt carries (``"<rid> ..."``)."""
    head = prompt.split(" ", 1)[0]
    return head if head.startswith("r-") else None


@dataclass
class Load:
    """A chat load over ``sessions``: each session a sequence of turns with request ids,
    each sent to the session's owner of record (read from the store) and retried with the
    same id until acknowledged or ``tries`` run out; records what each caller was told."""

    rt: Runtime
    store: Store
    nodes: list[AgentNode]
    sessions: list[str]
    tries: int = 300
    pause: float = 0.1
    think: float = 0.0  # between two turns of a session
    requests: dict[str, H.Request] = field(default_factory=dict)
    acked: int = 0
    _stop: bool = False

    def owner_node(self, owner: str | None) -> AgentNode | None:
        for n in self.nodes:
            if n.name == owner and n.proc is not None and not n.stopped:
                return n
        return None

    async def one(self, session: str, rid: str, text: str) -> None:
        ack = False
        told_failed = False
        for _ in range(self.tries):
            conv = await self.store.conversations.get(session)
            n = self.owner_node(conv.owner_node)
            if n is None:  # its owner is gone: any live node revives it on the call
                live = [x for x in self.nodes if x.proc is not None and not x.stopped]
                n = live[hash(rid) % len(live)] if live else None
            if n is None:
                await asyncio.sleep(0.2)
                continue
            try:
                r = await ctl(self.rt, n, ("run", session, f"{rid} {text}", rid), timeout=20)
            except (NoProcessError, ProcessExitedError, CallTimeoutError):
                told_failed = False  # unknown: it may have committed
                await asyncio.sleep(self.pause)
                continue
            if r[0] == "ok":
                ack = True
                break
            told_failed = r[1] in DEFINITE_FAILURES
            await asyncio.sleep(self.pause)
        self.requests[rid] = H.Request(rid, ack, failed=told_failed and not ack)
        if ack:
            self.acked += 1

    async def run(self, turns: int | None = None) -> None:
        async def session_loop(i: int, session: str) -> None:
            k = 0
            while not self._stop and (turns is None or k < turns):
                await self.one(session, f"r-{i}-{k}", "hello")
                k += 1
                if self.think:
                    await asyncio.sleep(self.think)

        await asyncio.gather(*(session_loop(i, s) for i, s in enumerate(self.sessions)))

    def stop(self) -> None:
        self._stop = True

    async def check(self) -> H.Report:
        """The history checker over every session (each checked on its own: commit order and
        epochs are per session), summed."""
        total = H.Report()
        for i, s in enumerate(self.sessions):
            committed = await H.committed_from_history(self.store, s, request_of)
            mine = [r for rid, r in self.requests.items() if rid.startswith(f"r-{i}-")]
            rep = H.check(mine, committed)
            total.acknowledged_lost += rep.acknowledged_lost
            total.committed_twice += rep.committed_twice
            total.stale_epoch += rep.stale_epoch
            total.failed_but_committed += rep.failed_but_committed
            total.wrong_reply += rep.wrong_reply
            total.details += [f"{s}: {d}" for d in rep.details]
        return total


CHAOS_FAULTS = ("sigkill", "sigstop", "blackhole", "drop")


async def _status(rt: Runtime, n: AgentNode) -> dict[str, Any] | None:
    try:
        st = await ctl(rt, n, "status", timeout=5)
    except (NoProcessError, ProcessExitedError, CallTimeoutError):
        return None
    return st if isinstance(st, dict) else None


async def chaos(
    rt: Runtime,
    store: Store,
    nodes: list[AgentNode],
    *,
    prefix: str,
    db: str,
    lease: float,
    rounds: int,
    rng: Any,
    sessions: int = 6,
    say: Any = print,
) -> tuple[H.Report, Load, dict[str, int]]:
    """Random faults (``CHAOS_FAULTS``), one node at a time, under a chat load over
    ``sessions`` sessions; after each fault the victim is healed or restarted (a new
    incarnation when it was killed or fenced itself) and the load must make progress again.
    Returns the history checker's report, the load and the faults by kind."""
    names = [f"chat-{i}" for i in range(sessions)]
    for i, s in enumerate(names):
        await ctl(rt, nodes[i % len(nodes)], ("start", "trans", s, None))
    load = Load(rt, store, nodes, names, think=0.1)
    running = asyncio.ensure_future(load.run())
    faults: dict[str, int] = {}

    async def progress(n: int) -> None:
        target = load.acked + n

        async def done() -> bool:
            return load.acked >= target

        await until(done, timeout=180, what="load progress")

    async def moved_off(victim: AgentNode) -> None:
        async def done() -> bool:
            for s in names:
                if (await store.conversations.get(s)).owner_node == victim.name:
                    return False
            return True

        await until(done, timeout=120, what=f"sessions moved off {victim.name}")

    try:
        await progress(len(names))
        for i in range(rounds):
            fault = rng.choice(CHAOS_FAULTS)
            victim = rng.choice(nodes)
            say(f"chaos round {i + 1}/{rounds}: {fault} of {victim.name} (acked {load.acked})")
            faults[fault] = faults.get(fault, 0) + 1
            if fault == "sigkill":
                kill(victim)
                await moved_off(victim)
                await start(victim, prefix, db, lease)
            else:
                if fault == "sigstop":
                    stop(victim)
                elif fault == "blackhole":
                    victim.proxy.blackhole()
                else:
                    victim.proxy.drop()
                if rng.random() < 0.75:  # long enough to be seen down: its sessions move
                    await moved_off(victim)
                await asyncio.sleep(rng.random())
                if fault == "sigstop":
                    cont(victim)
                else:
                    victim.proxy.heal()
                # a node whose lease was revoked fences itself at its next renewal
                await asyncio.sleep(lease / 5 + 1.0)
                st = await _status(rt, victim)
                if st is None or st["fenced"]:
                    await start(victim, prefix, db, lease)
            await progress(3)
    finally:
        load.stop()
        await asyncio.wait_for(running, 300)
    return await load.check(), load, faults
