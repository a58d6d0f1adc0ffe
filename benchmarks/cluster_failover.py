"""Cluster failover benchmarks: agent nodes as OS processes on one store and a real nats-server.

Figures:

* ``session callable again after SIGKILL of its node`` (p99, s): a node process (lease 5 s,
  heartbeats every 0.5 s, down after 3 s: the ``netsuke serve`` defaults) hosts a chat
  session with one committed turn; from ``kill -9`` of that node until a turn on the session
  succeeds on the surviving node (this process, retrying every 50 ms: the survivor revokes the
  dead node's lease, restarts the session from the store and answers with its memory).
  Floor: node-down detection in the same runs (``wait_exit`` of a process of the dead node
  ending with ``noconnection``): the ratio says how close failover comes to detection.
  Target: <= 2 s.
* ``session callable again after SIGSTOP of its node`` (p99, s): the same after SIGSTOP (the
  node is paused, not gone: only its silence tells). Target: <= 8 s.
* ``chaos: acknowledged turns lost / duplicated / stale-epoch commits`` (count): three agent
  nodes under a chat load (each request retried with its request id until acknowledged), with
  random faults (SIGKILL, SIGSTOP, NATS blackhole and drop, one node at a time, healed or
  restarted), then the history checker of ``tests/cluster/history.py``; the value is the sum
  of the three counts, the counts themselves are printed. Target: 0 / 0 / 0.

``--quick`` finishes within about a minute on a quiet machine (4 runs each, 2 faults); ``--json`` prints the
figures object as the last line. ``make chaos`` runs the long soak (>= 200 faults).
"""

from __future__ import annotations

import sys

# This folder goes after the standard library on sys.path (see kernel.py); when imported by
# benchmarks/cluster.py that is done already.
if __name__ == "__main__":
    sys.path.append(sys.path.pop(0))

import asyncio
import json
import os
import random
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import _nodes
from _harness import Figure, parse_args, run_and_report
from _nodes import end, node_ready

HERE = str(Path(__file__).resolve())
ROOT = Path(__file__).resolve().parents[1]
LEASE = 5.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ----------------------------------------------------------------- node processes


def _config() -> Any:
    from netsuke.agents import AgentConfig, MemoryPolicy

    return AgentConfig(name="bench", memory=MemoryPolicy(max_messages=20))


async def node_main(url: str, prefix: str, name: str, db: str) -> None:
    """An agent node: ``ctl`` answers ``("start", session)`` (start it, run one turn)."""
    from netsuke.agents import Agents
    from netsuke.cluster import Failover, join_cluster
    from netsuke.kernel import From, Process
    from netsuke.store import NodeIdentity, Store

    async with (
        Store.open(db) as store,
        join_cluster(
            url, name, store.database, lease=LEASE, transport_options={"prefix": prefix}
        ) as node,
    ):
        m = node.membership
        assert m.incarnation is not None
        store.conversations.set_ownership(NodeIdentity(m.name, m.incarnation), m)
        agents = await Agents.start(node.runtime, store)
        cfg = agents.define(_config())

        class Ctl(Process):
            async def handle_call(self, request: Any, from_: From) -> Any:
                session = request[1]
                await agents.start_agent(session, cfg)
                await agents.run(session, "remember me")
                return "ok"

        async with Failover(node, agents):
            pid = await node.runtime.start(Ctl, name="ctl")
            assert pid is not None
            print(json.dumps({"node": node.node_id, "ctl": pid.id}), flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until EOF


def spawn_node(url: str, prefix: str, name: str, db: str) -> subprocess.Popen[str]:
    return _nodes.spawn_node(HERE, url, prefix, name, db)


# --------------------------------------------------------------- callable again


async def callable_again_figures(url: str, db: str, quick: bool) -> list[Figure]:
    from netsuke.agents import Agents
    from netsuke.cluster import NOCONNECTION, Failover, join_cluster
    from netsuke.kernel import Pid
    from netsuke.store import NodeIdentity, Store

    runs, batch = (4, 4) if quick else (20, 5)
    prefix = f"fo{os.getpid()}"
    figs: list[Figure] = []
    async with (
        Store.open(db) as store,
        join_cluster(
            url, "survivor", store.database, lease=LEASE, transport_options={"prefix": prefix}
        ) as node,
    ):
        m = node.membership
        assert m.incarnation is not None
        store.conversations.set_ownership(NodeIdentity(m.name, m.incarnation), m)
        agents = await Agents.start(node.runtime, store)
        agents.define(_config())
        rt = node.runtime
        async with Failover(node, agents):
            for sig, label, target in (
                (signal.SIGKILL, "SIGKILL", 2.0),
                (signal.SIGSTOP, "SIGSTOP", 8.0),
            ):
                took: list[float] = []
                detected: list[float] = []
                for b in range(0, runs, batch):
                    names = [f"v{int(sig)}x{i}" for i in range(b, min(b + batch, runs))]
                    procs = [spawn_node(url, prefix, n, db) for n in names]
                    try:
                        infos = [await node_ready(p) for p in procs]
                        ctls = [Pid(str(i["node"]), int(i["ctl"])) for i in infos]
                        sessions = [f"s-{n}" for n in names]
                        for c, s in zip(ctls, sessions, strict=True):
                            assert await rt.call(c, ("start", s), timeout=60) == "ok"

                        async def one(
                            proc: subprocess.Popen[str],
                            ctl: Pid,
                            session: str,
                            delay: float,
                            sig: int = sig,
                        ) -> tuple[float, float]:
                            await asyncio.sleep(delay)
                            waiter = asyncio.ensure_future(rt.wait_exit(ctl, timeout=60))
                            await asyncio.sleep(0)
                            seen: list[float] = []
                            waiter.add_done_callback(lambda _: seen.append(time.perf_counter()))
                            t0 = time.perf_counter()
                            os.kill(proc.pid, sig)
                            while True:  # a client retrying every 50 ms
                                try:
                                    out = await agents.run(session, "again")
                                    break
                                except Exception as e:
                                    if time.perf_counter() - t0 > 60 or m.fenced:
                                        raise RuntimeError(
                                            f"{session} not callable again within 60 s "
                                            f"(survivor fenced: {m.fenced}): {e!r}"
                                        ) from e
                                    await asyncio.sleep(0.05)
                            t1 = time.perf_counter()
                            assert "remember me" in str(out), out  # the memory came along
                            assert await waiter == NOCONNECTION
                            return t1 - t0, seen[0] - t0

                        # staggered by a step that is no divisor of the heartbeat interval
                        got = await asyncio.gather(
                            *(
                                one(p, c, s, i * 0.37)
                                for i, (p, c, s) in enumerate(
                                    zip(procs, ctls, sessions, strict=True)
                                )
                            )
                        )
                        took += [g[0] for g in got]
                        detected += [g[1] for g in got]
                    finally:
                        for p in procs:
                            end(p)
                worst = percentile(took, 0.99)
                floor = percentile(detected, 0.99)
                figs.append(
                    Figure(
                        f"session callable again after {label} of its node",
                        worst,
                        "s",
                        floor,
                        "node down detected (p99, same runs)",
                        higher_is_better=False,
                        target=f"<= {target:g} s (p99 of {runs} runs)",
                        met=worst <= target,
                    )
                )
                print(
                    f"{label}: callable again "
                    + ", ".join(f"{x:.2f}" for x in sorted(took))
                    + " s; detected "
                    + ", ".join(f"{x:.2f}" for x in sorted(detected))
                    + " s",
                    flush=True,
                )
    return figs


# ----------------------------------------------------------------------- chaos


async def chaos_figure(server: Any, quick: bool) -> Figure:
    sys.path.insert(0, str(ROOT))
    from tests.cluster import failover_harness as FH
    from tests.cluster.helpers import FAST

    from netsuke.cluster import join
    from netsuke.store import Store, upgrade

    rounds = 2 if quick else 20
    seed = random.randrange(2**32)
    lease = 6.0
    with tempfile.TemporaryDirectory(prefix="netsuke-chaos-") as tmp:
        db = f"sqlite+aiosqlite:///{Path(tmp) / 'shared.db'}"
        await upgrade(db)
        p = f"chaos{os.getpid()}"
        async with (
            Store.open(db) as store,
            FH.agent_cluster(server.port, p, ["alpha", "beta", "gamma"], db, lease) as nodes,
            join(server.url, "client", transport_options={**FAST, "prefix": p}) as rt,
        ):
            rep, load, faults = await FH.chaos(
                rt,
                store,
                nodes,
                prefix=p,
                db=db,
                lease=lease,
                rounds=rounds,
                rng=random.Random(seed),
                say=lambda _: None,
            )
    lost, twice, stale = rep.counts
    print(
        f"chaos: seed {seed}, faults {dict(sorted(faults.items()))}, {len(load.requests)} "
        f"requests, {load.acked} acknowledged: lost {lost}, duplicated {twice}, stale-epoch "
        f"{stale}",
        flush=True,
    )
    return Figure(
        "chaos: acknowledged turns lost / duplicated / stale-epoch commits",
        float(lost + twice + stale),
        "turns",
        None,
        higher_is_better=False,
        target=f"0 / 0 / 0 (got {lost} / {twice} / {stale} over {rounds} faults, "
        f"{load.acked} acknowledged turns)",
        met=(lost, twice, stale) == (0, 0, 0),
    )


# ------------------------------------------------------------------------ main


async def run(quick: bool) -> list[Figure]:
    from netsuke.manager.testing import NatsServer
    from netsuke.store import upgrade

    with tempfile.TemporaryDirectory(prefix="netsuke-failover-") as tmp:
        db = f"sqlite+aiosqlite:///{Path(tmp) / 'shared.db'}"
        await upgrade(db)
        server = NatsServer(workdir=Path(tmp), start_timeout=30.0)
        server.start()
        try:
            figs = await callable_again_figures(server.url, db, quick)
            figs.append(await chaos_figure(server, quick))
        finally:
            server.stop()
    return figs


def main() -> None:
    args = parse_args((__doc__ or "").split("\n")[0])
    if args.case == "node":
        e = os.environ
        asyncio.run(node_main(e["BENCH_NATS"], e["BENCH_PREFIX"], e["BENCH_NAME"], e["BENCH_DB"]))
        return
    run_and_report("Netsuke cluster failover", run, args, log_level="error")


if __name__ == "__main__":
    main()
