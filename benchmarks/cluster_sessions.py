"""Cluster sessions benchmark: get-or-start across ``netsuke serve --cluster`` node processes.

Figure:

* ``get-or-start across nodes`` (sessions/s): ``POST /api/v1/sessions`` for distinct users
  (one new session each), 32 requests in flight, spread round-robin over 3 node processes
  (``serve --cluster``, a real nats-server, one SQLite store file; 2 nodes with ``--quick``).
  Every start is placed (least-loaded, preferring the receiving node), claimed with the
  store's compare-and-set and answered by the owner. Floor: the same load against one node
  process of the same kind, in the same run. The ratio is cluster/single: on one 2-core
  machine the nodes share the cores and one SQLite writer, so it shows what the cluster
  path costs more than a speed-up (PostgreSQL and more machines would scale further).

``--quick`` finishes within a minute; ``--json`` prints the figures object as the last line.
"""

from __future__ import annotations

import sys

# This folder goes after the standard library on sys.path (see kernel.py).
sys.path.append(sys.path.pop(0))

import asyncio
import os
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from _harness import Figure, parse_args, run_and_report

EXE = str(Path(sys.executable).parent / "netsuke")
NAME = "get-or-start across nodes"


def _spawn(name: str, nats: str, env: dict[str, str], cwd: str) -> subprocess.Popen[str]:
    logs = os.environ.get("BENCH_NODE_LOGS")  # a folder: keep each node's stderr there
    return subprocess.Popen(
        # a 20 s lease: on one SQLite file under this write load a renewal can wait over
        # 3 s for the writer on a busy machine, which fences a node with the default 5 s
        [EXE, "serve", "--cluster", nats, "--node", name, "--port", "0", "--cluster-lease", "20"],
        stdout=subprocess.PIPE,
        stderr=open(Path(logs) / f"{name}.log", "w") if logs else subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=cwd,
    )


async def _start(name: str, nats: str, env: dict[str, str], cwd: str) -> tuple[Any, str, str]:
    proc = _spawn(name, nats, env, cwd)
    assert proc.stdout is not None
    first = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 120)
    if " running at " not in first:
        proc.kill()
        raise RuntimeError(f"node {name} did not start: {first!r}")
    url = first.split(" running at ")[1].split()[0]
    key = ""
    if env.get("NETSUKE_BOOTSTRAP_ADMIN") == "true":
        key = (
            (await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60))
            .rsplit(":", 1)[1]
            .strip()
        )
    return proc, url, key


def _stop(procs: list[Any]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(30)
        if p.stdout is not None:
            p.stdout.close()


async def _rate(nats: str, nodes: int, sessions: int, inflight: int) -> float:
    """Sessions/s of ``sessions`` get-or-starts over ``nodes`` fresh node processes."""
    import httpx

    from netsuke.store import upgrade

    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        await upgrade(db)
        agents = Path(tmp) / "agents"
        agents.mkdir()
        (agents / "helper.yaml").write_text("name: helper\nmodel: offline\n")
        clean = {k: v for k, v in os.environ.items() if not k.startswith("NETSUKE_")}
        common = {
            **clean,
            "NETSUKE_DATABASE_URL": db,
            "NETSUKE_AGENTS_DIR": str(agents),
            "NETSUKE_CLUSTER_PREFIX": f"b{uuid.uuid4().hex[:12]}",
            "NETSUKE_RATE_LIMIT_PER_MINUTE": "0",
            "NETSUKE_LOG_LEVEL": "warning",
        }
        procs: list[Any] = []
        try:
            first, url0, key = await _start(
                "n0", nats, {**common, "NETSUKE_BOOTSTRAP_ADMIN": "true"}, tmp
            )
            procs.append(first)
            rest = await asyncio.gather(
                *(
                    _start(f"n{i}", nats, {**common, "NETSUKE_BOOTSTRAP_ADMIN": "false"}, tmp)
                    for i in range(1, nodes)
                )
            )
            procs += [p for p, _, _ in rest]
            urls = [url0, *(u for _, u, _ in rest)]
            limits = httpx.Limits(max_connections=inflight * 2)
            async with httpx.AsyncClient(
                headers={"Authorization": f"Bearer {key}"}, timeout=120, limits=limits
            ) as http:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 60
                while True:  # every member visible before timing
                    r = await http.get(f"{url0}/api/v1/cluster/nodes")
                    if len(r.json()["nodes"]) >= nodes:
                        break
                    if loop.time() > deadline:
                        raise RuntimeError("the nodes did not all join")
                    await asyncio.sleep(0.2)
                for u in urls:  # warm each node's path once
                    r = await http.post(
                        f"{u}/api/v1/sessions", json={"agent": "helper", "user": f"warm-{u[-5:]}"}
                    )
                    r.raise_for_status()
                queue = iter(range(sessions))
                failures: list[str] = []

                async def worker() -> None:
                    for i in queue:
                        r = await http.post(
                            f"{urls[i % len(urls)]}/api/v1/sessions",
                            json={"agent": "helper", "user": f"u{i}"},
                        )
                        if r.status_code not in (200, 201):
                            failures.append(r.text[:200])

                t0 = time.perf_counter()
                await asyncio.gather(*(worker() for _ in range(inflight)))
                elapsed = time.perf_counter() - t0
                if failures:
                    raise RuntimeError(f"{len(failures)} starts failed: {failures[0]}")
                return sessions / elapsed
        finally:
            _stop(procs)


async def sessions_figure(nats: str, quick: bool) -> Figure:
    """The ``get-or-start across nodes`` figure over the nats-server at ``nats``."""
    sessions = 150 if quick else 600
    nodes = 2 if quick else 3
    single = await _rate(nats, 1, sessions, 32)
    multi = await _rate(nats, nodes, sessions, 32)
    return Figure(
        NAME,
        multi,
        "sessions/s",
        floor=single,
        floor_label=f"one node; {nodes} nodes measured",
        target="reported (ratio to one node)",
    )


async def run(quick: bool) -> list[Figure]:
    from netsuke.manager.testing import NatsServer

    with NatsServer() as url:
        return [await sessions_figure(url, quick)]


def main() -> None:
    args = parse_args((__doc__ or "").split("\n")[0])
    run_and_report("Netsuke cluster sessions", run, args, log_level="warning")


if __name__ == "__main__":
    main()
