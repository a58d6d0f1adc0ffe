"""Cluster benchmarks: two node OS processes over a real nats-server (``netsuke.cluster``).

Figures:

* ``cluster call by name, sequential`` (calls/s): this process (node ``alpha``) calls a process
  registered as ``echo`` on node ``beta`` (another OS process) by ``("echo", beta)``, one call
  after another. Floor: raw nats-py request/reply between the same two processes, in the same
  run (a plain subscription in ``beta`` answering the same bytes). Both are measured in many
  short interleaved blocks (which of the two goes first alternates); the figure and the floor
  are the medians of their blocks' rates, so a burst of load from elsewhere moves one block,
  not the result. Target: ratio >= 0.80 and p99 <= 0.5 ms (the p99, over every call of every
  block, has its own row).
* ``cluster call by name, 100 in flight`` (calls/s): 100 callers at once, same floor with 100
  raw requests in flight; interleaved rounds, medians. Target: ratio >= 0.80.
* ``cluster call by global name (cached), sequential`` (calls/s): the same calls by the global
  name alone (``rt.call("echo-global")``, resolved by this node's names cache, no store round
  trip), same floor, interleaved the same way. Only with ``--case calls-global`` (it needs a
  store: a SQLite file in a temporary directory).
* ``node down detected after SIGKILL`` (p99, s): from ``kill -9`` of a node process until a
  ``wait_exit`` on one of its processes ends with ``noconnection`` (default transport
  settings: heartbeats every 0.5 s, ``down_after`` 3 s). Target: <= 1 s.
* ``node down detected after SIGSTOP`` (p99, s): the same after SIGSTOP. Target: <= 6 s.
* ``memory per idle process, remotely addressable`` (B): RSS per idle, named, hibernated
  process (100-byte state, as in the kernel's figure) in a node joined to the cluster, at
  100,000 processes (20,000 with ``--quick``); a sample of them is then called by name from
  another node. Floor: the same processes in a node without a transport. Target: <= 700 B.

Part 2's figures (issue 17), by ``--case``:

* ``--case part2``: ``get-or-start across nodes`` (sessions/s, see ``cluster_sessions.py``) and
  the failover figures of ``benchmarks/cluster_failover.py`` (callable again after SIGKILL and
  SIGSTOP of a session's node; the chaos counts).
* ``--case nodes``: ``chat turns/s, 2 nodes vs 1 node`` (``benchmarks/cluster_nodes.py``).
* ``--case all``: part 1, part 2 and ``nodes`` in one run (several minutes even with
  ``--quick``).

Cases: none (or ``part1``) runs part 1's figures above; ``calls`` and ``calls-global`` run only
the call figures. Every case but ``all`` finishes within a minute with ``--quick``; ``--json``
prints the figures object as the last line.
"""

from __future__ import annotations

import sys

# This folder goes after the standard library on sys.path (see kernel.py).
sys.path.append(sys.path.pop(0))

import asyncio
import gc
import json
import os
import random
import signal
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import _nodes
from _harness import STATE_BYTES, Figure, loop_name, meta, parse_args, report, settled_rss
from _nodes import end, node_ready

HERE = str(Path(__file__).resolve())


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ----------------------------------------------------------------- node processes


def _session_class() -> Any:
    from netsuke import From, Process

    class Session(Process):
        """A process with a 100-byte state; answers calls with the request."""

        __slots__ = ("state",)

        def init(self, arg: bytes) -> None:
            self.state = arg

        def handle_call(self, request: Any, from_: From) -> Any:
            return request

        def handle_cast(self, request: Any) -> None:
            return None

    return Session


async def node_main(url: str, prefix: str, name: str) -> None:
    """A node process: ``echo`` registered, plus a raw nats-py responder on ``<prefix>.raw``.
    With ``BENCH_DB`` (a store URL) the node is a member and ``echo`` is also the global name
    ``echo-global``."""
    from contextlib import AsyncExitStack

    import nats

    from netsuke.cluster import join, join_cluster

    db = os.environ.get("BENCH_DB")
    async with AsyncExitStack() as stack:
        if db:
            node = await stack.enter_async_context(
                join_cluster(url, name, db, transport_options={"prefix": prefix})
            )
            rt = node.runtime
        else:
            rt = await stack.enter_async_context(
                join(url, name, transport_options={"prefix": prefix})
            )
        pid = await rt.start(_session_class(), b"", name="echo")
        assert pid is not None
        if db:
            await node.names.register("echo-global", pid)
        raw = await nats.connect(url)

        async def answer(msg: Any) -> None:
            await msg.respond(msg.data)

        await raw.subscribe(f"{prefix}.raw", cb=answer)
        await raw.flush()
        gc.collect()
        gc.freeze()  # what start-up made is not walked by every full collection (GC stays on)
        print(json.dumps({"node": rt.node, "echo": pid.id}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until EOF
        await raw.close()


def spawn_node(url: str, prefix: str, name: str, db: str = "") -> subprocess.Popen[str]:
    return _nodes.spawn_node(HERE, url, prefix, name, db, "--n", "0")


# -------------------------------------------------------------------- call figures


async def timed_calls(call: Callable[[int], Awaitable[Any]], n: int) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        await call(i)
        out.append(time.perf_counter() - t0)
    return out


async def in_flight(call: Callable[[int], Awaitable[Any]], n: int, width: int) -> float:
    per = n // width

    async def caller(k: int) -> None:
        for i in range(per):
            await call(k * per + i)

    t0 = time.perf_counter()
    await asyncio.gather(*(caller(k) for k in range(width)))
    return per * width / (time.perf_counter() - t0)


async def call_figures(url: str, quick: bool) -> list[Figure]:
    import nats

    from netsuke.cluster import join

    prefix = f"bench{os.getpid()}"
    proc = spawn_node(url, prefix, "beta")
    try:
        info = await node_ready(proc)
        beta = str(info["node"])
        async with join(url, "alpha", transport_options={"prefix": prefix}) as rt:
            raw = await nats.connect(url)
            subject = f"{prefix}.raw"
            target = ("echo", beta)

            async def ours(i: int) -> Any:
                return await rt.call(target, ["ping", i], timeout=10.0)

            async def theirs(i: int) -> Any:
                return await raw.request(subject, json.dumps(["ping", i]).encode(), timeout=10.0)

            assert await ours(1) == ["ping", 1]
            for _ in range(500):  # warm both paths
                await ours(0)
                await theirs(0)
            m = await measure_calls(ours, theirs, quick)
            await raw.close()
    finally:
        end(proc)
    return call_figure_rows(m)


async def measure_calls(
    ours: Callable[[int], Awaitable[Any]], theirs: Callable[[int], Awaitable[Any]], quick: bool
) -> dict[str, Any]:
    """Interleaved blocks of sequential calls and rounds of 100 in flight, both ways."""
    gc.collect()
    gc.freeze()  # start-up's objects out of the full collections of both paths (GC stays on)
    blocks, per = (12, 300) if quick else (30, 1000)
    mine: list[float] = []
    floor: list[float] = []
    seq_ours: list[float] = []
    seq_raw: list[float] = []
    for b in range(blocks):  # interleaved, the first of each pair alternating
        pair = [(ours, mine, seq_ours), (theirs, floor, seq_raw)]
        for fn, samples, rates in pair if b % 2 == 0 else pair[::-1]:
            took = await timed_calls(fn, per)
            samples += took
            rates.append(len(took) / sum(took))
    width = 100
    n_flight = 3_000 if quick else 10_000
    rates_ours: list[float] = []
    rates_raw: list[float] = []
    for r in range(6 if quick else 12):
        pair2 = [(ours, rates_ours), (theirs, rates_raw)]
        for fn, rates in pair2 if r % 2 == 0 else pair2[::-1]:
            rates.append(await in_flight(fn, n_flight, width))
    return {
        "seq": statistics.median(seq_ours),
        "seq_raw": statistics.median(seq_raw),
        "p99": percentile(mine, 0.99) * 1e3,
        "p99_raw": percentile(floor, 0.99) * 1e3,
        "p50": percentile(mine, 0.50) * 1e3,
        "p50_raw": percentile(floor, 0.50) * 1e3,
        "fl": statistics.median(rates_ours),
        "fl_raw": statistics.median(rates_raw),
    }


def call_figure_rows(m: dict[str, Any], label: str = "cluster call by name") -> list[Figure]:
    seq, seq_raw, p99, p99_raw = m["seq"], m["seq_raw"], m["p99"], m["p99_raw"]
    fl, fl_raw = m["fl"], m["fl_raw"]
    print(
        f"{label}: p50 {m['p50']:.3f} ms against raw {m['p50_raw']:.3f} ms",
        flush=True,
    )
    return [
        Figure(
            f"{label}, sequential",
            seq,
            "calls/s",
            seq_raw,
            "raw nats-py request/reply, same processes",
            target="ratio >= 0.80, p99 <= 0.5 ms",
            met=seq / seq_raw >= 0.80 and p99 <= 0.5,
        ),
        Figure(
            f"{label}, sequential, p99",
            p99,
            "ms",
            p99_raw,
            "raw nats-py p99",
            higher_is_better=False,
            target="<= 0.5 ms",
            met=p99 <= 0.5,
        ),
        Figure(
            f"{label}, 100 in flight",
            fl,
            "calls/s",
            fl_raw,
            "raw nats-py, 100 requests in flight",
            target="ratio >= 0.80",
            met=fl / fl_raw >= 0.80,
        ),
    ]


async def global_call_figures(url: str, quick: bool) -> list[Figure]:
    """The call figures by global name (``rt.call("echo-global")``): both nodes are members
    of one store (a SQLite file), the name resolved by the caller's names cache."""
    import tempfile

    import nats

    from netsuke.cluster import join_cluster
    from netsuke.store import upgrade

    prefix = f"gbench{os.getpid()}"
    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite+aiosqlite:///{tmp}/bench.db"
        await upgrade(db)
        proc = spawn_node(url, prefix, "beta", db)
        try:
            await node_ready(proc)
            async with join_cluster(url, "alpha", db, transport_options={"prefix": prefix}) as n:
                rt = n.runtime
                raw = await nats.connect(url)
                subject = f"{prefix}.raw"

                async def ours(i: int) -> Any:
                    return await rt.call("echo-global", ["ping", i], timeout=10.0)

                async def theirs(i: int) -> Any:
                    return await raw.request(
                        subject, json.dumps(["ping", i]).encode(), timeout=10.0
                    )

                assert await ours(1) == ["ping", 1]
                for _ in range(500):
                    await ours(0)
                    await theirs(0)
                m = await measure_calls(ours, theirs, quick)
                await raw.close()
        finally:
            end(proc)
    return call_figure_rows(m, "cluster call by global name (cached)")


# ------------------------------------------------------------------- node down


async def down_figures(url: str, quick: bool) -> list[Figure]:
    from netsuke.cluster import NOCONNECTION, join
    from netsuke.kernel import Pid

    runs = 5 if quick else 12
    prefix = f"down{os.getpid()}"
    figs = []
    async with join(url, "observer", transport_options={"prefix": prefix}) as rt:
        t = rt.transport
        assert t is not None
        for sig, label, target in (
            (signal.SIGKILL, "SIGKILL", 1.0),
            (signal.SIGSTOP, "SIGSTOP", 6.0),
        ):
            procs = [spawn_node(url, prefix, f"n{sig}x{i}") for i in range(runs)]
            try:
                infos = [await node_ready(p) for p in procs]
                pids = [Pid(str(i["node"]), int(i["echo"])) for i in infos]
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 60
                while not all(p.node in t.nodes() for p in pids):
                    if loop.time() > deadline:
                        raise RuntimeError("nodes did not join")
                    await asyncio.sleep(0.05)
                for pid in pids:
                    assert await rt.call(pid, "warm", timeout=10) == "warm"

                async def one(
                    proc: subprocess.Popen[str], pid: Pid, delay: float, sig: int = sig
                ) -> float:
                    await asyncio.sleep(delay)
                    waiter = asyncio.ensure_future(rt.wait_exit(pid, timeout=60))
                    await asyncio.sleep(0)
                    t0 = time.perf_counter()
                    os.kill(proc.pid, sig)
                    reason = await waiter
                    took = time.perf_counter() - t0
                    assert reason == NOCONNECTION, reason
                    return took

                # Staggered by a step that is no divisor of the heartbeat interval, so the
                # kills fall at every phase of the peers' heartbeats.
                took = await asyncio.gather(
                    *(
                        one(p, pid, i * 0.37)
                        for i, (p, pid) in enumerate(zip(procs, pids, strict=True))
                    )
                )
            finally:
                for p in procs:
                    end(p)
            worst = percentile(list(took), 0.99)
            figs.append(
                Figure(
                    f"node down detected after {label}",
                    worst,
                    "s",
                    None,
                    higher_is_better=False,
                    target=f"<= {target:g} s (p99 of {runs} runs)",
                    met=worst <= target,
                )
            )
            print(f"{label}: " + ", ".join(f"{x:.2f}" for x in sorted(took)) + " s", flush=True)
    return figs


# ---------------------------------------------------------------------- memory


async def _case_memory(n: int, clustered: bool) -> None:
    """Child process: n named idle processes, RSS per process; with ``clustered`` the node
    is joined and waits for the parent to call a sample by name before it exits."""
    from netsuke import ChildSpec, DynamicSupervisor, DynamicSupervisorSpec, Runtime
    from netsuke.cluster import NatsTransport

    spec = ChildSpec(_session_class(), id="session")
    transport = None
    node = "local"
    if clustered:
        transport = NatsTransport(
            os.environ["BENCH_NATS"], "mem", prefix=os.environ["BENCH_PREFIX"]
        )
        await transport.connect()
        node = transport.node_id
    async with Runtime(node=node, transport=transport, hibernate_sweep=3600) as rt:
        sup = await rt.start(DynamicSupervisor, DynamicSupervisorSpec(), name="sessions")
        assert sup is not None
        base = settled_rss()
        for i in range(n):
            state = i.to_bytes(4, "little") * (STATE_BYTES // 4)
            await DynamicSupervisor.start_child(
                "sessions", spec, arg=state, name=f"session-{i}", runtime=rt
            )
        gc.freeze()
        for lo in range(0, n, 1000):
            for i in range(lo, min(n, lo + 1000)):
                rt.cast(f"session-{i}", "wake")
            await asyncio.sleep(0)
            await rt.hibernate_idle()
        assert rt.active_count() == 0
        per = (settled_rss() - base) / n
        print(json.dumps({"bytes_per_process": per, "node": rt.node}), flush=True)
        if clustered:
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        gc.unfreeze()
    if transport is not None:
        await transport.close()


async def memory_figure(url: str, quick: bool) -> Figure:
    from netsuke.cluster import join

    n = 20_000 if quick else 100_000
    prefix = f"mem{os.getpid()}"
    env = {**os.environ, "BENCH_NATS": url, "BENCH_PREFIX": prefix}

    def child(case: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, HERE, "--case", case, "--n", str(n)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )

    local = child("memory-local")
    try:
        floor = float((await node_ready(local))["bytes_per_process"])
    finally:
        end(local)
    proc = child("memory-cluster")
    try:
        info = await node_ready(proc)
        async with join(url, "caller", transport_options={"prefix": prefix}) as rt:
            for i in random.Random(1).sample(range(n), 100):  # addressable from another node
                assert await rt.call((f"session-{i}", info["node"]), i, timeout=30) == i
    finally:
        end(proc)
    value = float(info["bytes_per_process"])
    return Figure(
        "memory per idle process, remotely addressable",
        value,
        "B",
        floor,
        "same processes, node without a transport",
        higher_is_better=False,
        target=f"<= 700 B (at {n:,} processes)",
        met=value <= 700,
    )


# ------------------------------------------------------------------------ main


async def run(quick: bool, part1: bool = True, part2: bool = False) -> list[Figure]:
    """Part 1's figures (calls, node down, memory) and/or part 2's (sessions, failover)."""
    from netsuke.manager.testing import NatsServer

    figs: list[Figure] = []
    with NatsServer() as url:
        if part1:
            figs += await call_figures(url, quick)
            figs += await down_figures(url, quick)
            figs.append(await memory_figure(url, quick))
        if part2:
            from cluster_sessions import sessions_figure  # get-or-start across nodes

            figs.append(await sessions_figure(url, quick))
    if part2:
        from cluster_failover import run as failover  # callable again after SIGKILL/SIGSTOP

        figs += await failover(quick)
    return figs


def main() -> None:
    args = parse_args((__doc__ or "").split("\n")[0])
    loop = loop_name()
    if args.case == "node":
        asyncio.run(
            node_main(
                os.environ["BENCH_NATS"], os.environ["BENCH_PREFIX"], os.environ["BENCH_NAME"]
            )
        )
        return
    if args.case in ("memory-local", "memory-cluster"):
        asyncio.run(_case_memory(args.n, args.case == "memory-cluster"))
        return
    from netsuke.observability import configure_logging

    configure_logging(level="warning")
    t0 = time.perf_counter()
    if args.case in ("calls", "calls-global"):  # only the call figures (by name, by global name)
        from netsuke.manager.testing import NatsServer

        async def calls() -> list[Figure]:
            with NatsServer() as url:
                if args.case == "calls":
                    return await call_figures(url, args.quick)
                return await global_call_figures(url, args.quick)

        figs = asyncio.run(calls())
        nodes_meta = None
    elif args.case in (None, "part1", "part2", "all"):
        part1 = args.case in (None, "part1", "all")
        part2 = args.case in ("part2", "all")
        figs = asyncio.run(run(args.quick, part1, part2))
        nodes_meta = None
        if args.case == "all":
            from cluster_nodes import figures as nodes_figures  # serve --nodes 2 vs 1

            more, nodes_meta = nodes_figures(args.quick)
            figs += more
    elif args.case == "nodes":
        from cluster_nodes import figures as nodes_figures  # serve --nodes 2 vs 1 (issue 17.5)

        figs, nodes_meta = nodes_figures(args.quick)
    else:
        raise SystemExit(
            f"unknown --case {args.case!r}: part1, part2, nodes, all, calls, calls-global"
        )
    extra = {**meta(loop), "quick": args.quick, "seconds": round(time.perf_counter() - t0, 1)}
    extra["serve --nodes"] = nodes_meta
    report(f"Netsuke cluster ({loop})", figs, as_json=args.json, extra=extra)


if __name__ == "__main__":
    main()
