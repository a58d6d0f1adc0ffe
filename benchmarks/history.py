"""History length: what one chat turn costs as its conversation grows.

One session with the offline model (the default model) runs N turns (200; 100 with
``--quick``) one after another, committed to a SQLite store (WAL, synchronous=FULL; on the
tmpfs ``/dev/shm`` when writable, so the figure is the runtime's CPU, not the disk's). At
each mark (turn 1, 20, 100, 200) the turn is run under cProfile for its Python call count
(every call on the event loop's thread, C functions included: deterministic for a build,
whatever the load), then the next ``WINDOW`` turns unprofiled for their CPU time
(``time.process_time()``: every thread, the store's writer thread included; median). Two
paths:

* ``agents``: ``Agents.run`` on a started session;
* ``http``: ``POST /api/v1/sessions/{id}/messages`` straight into the ASGI app in this process
  (``create_app`` over a node opened like ``netsuke serve`` opens it; no HTTP server or
  client), as ``benchmarks/api_cost.py`` drives it.

Figures (lower is better; the floor is the same path's turn 1):

* ``agents turn CPU at N turns vs at 1 turn`` and ``http turn CPU at N turns vs at 1 turn``
  (ratio of the medians; target <= 1.2, informational: pydantic-ai's own per-run work on the
  history grows with it, see docs/benchmarks.md, "History length");
* ``agents turn calls at N turns vs at 1 turn`` (ratio of the call counts; deterministic).

The per-mark table (CPU µs and calls per turn) is printed, and is in the JSON's meta.

Usage: ``python benchmarks/history.py [--quick] [--json] [--turns N] [--side agents|http|both]``.
"""

from __future__ import annotations

import sys

sys.path.append(sys.path.pop(0))  # never shadow the standard library (benchmarks/queue.py)

import argparse
import asyncio
import cProfile
import gc
import json
import logging
import os
import pstats
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog

from _harness import Figure, meta, report

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

WINDOW = 5
"""Unprofiled turns timed after each mark (their median is the mark's CPU)."""

Turn = Callable[[int], Awaitable[None]]


def _dir() -> str | None:
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None


async def measure(turn: Turn, total: int, marks: list[int]) -> dict[int, dict[str, float]]:
    """Run turns 1..``total`` through ``turn``; at each mark its calls, then the CPU of the
    next ``WINDOW`` turns (median, µs)."""
    out: dict[int, dict[str, float]] = {}
    i = 1
    while i <= total:
        if i in marks:
            gc.collect()
            prof = cProfile.Profile()
            prof.enable()
            await turn(i)
            prof.disable()
            stats = pstats.Stats(prof)
            calls = sum(v[1] for v in stats.stats.values())  # type: ignore[attr-defined]
            cpus = []
            for j in range(i + 1, i + 1 + WINDOW):
                c0 = time.process_time()
                await turn(j)
                cpus.append((time.process_time() - c0) * 1e6)
            out[i] = {"calls": calls, "cpu_us": statistics.median(cpus)}
            i += 1 + WINDOW
        else:
            await turn(i)
            i += 1
    return out


async def agents_side(total: int, marks: list[int]) -> dict[int, dict[str, float]]:
    from netsuke import Runtime
    from netsuke.agents import AgentConfig, Agents
    from netsuke.store import Store

    with tempfile.TemporaryDirectory(dir=_dir()) as d:
        url = f"sqlite+aiosqlite:///{Path(d) / 'history.db'}"
        async with Runtime() as rt, Store.open(url) as store:
            agents = await Agents.start(rt, store)
            cfg = AgentConfig(name="history", idle_hibernate=None)
            await agents.start_agent("warm", cfg)
            for k in range(5):  # imports, caches, the first commit
                await agents.run("warm", f"warm {k}")
            await agents.start_agent("h", cfg)

            async def turn(i: int) -> None:
                await agents.run("h", f"message number {i}")

            return await measure(turn, total, marks)


async def http_side(total: int, marks: list[int]) -> dict[int, dict[str, float]]:
    from api_cost import Lifespan, asgi_call
    from netsuke.api import Settings, create_app, open_node

    with tempfile.TemporaryDirectory(dir=_dir()) as d:
        tmp = Path(d)
        agents_dir = tmp / "agents"
        agents_dir.mkdir()
        (agents_dir / "bench.yaml").write_text(
            "name: bench\nmodel: offline\nsystem_prompt: You are a helpful assistant.\n"
        )
        settings = Settings(
            database_url=f"sqlite:///{tmp}/history.db",
            agents_dir=agents_dir,
            rate_limit_per_minute=0,
            port=0,
        )
        async with open_node(settings) as node:
            key = (await node.store.api_keys.create("bench", "admin")).secret
            app = create_app(settings, store=node.store, runtime=node.runtime, extras=node.extras)
            headers = [(b"authorization", f"Bearer {key}".encode())]
            async with Lifespan(app):

                async def session() -> str:
                    body = json.dumps({"agent": "bench", "user": "u"}).encode()
                    status, out = await asgi_call(app, "POST", "/api/v1/sessions", body, headers)
                    assert status in (200, 201), out
                    sid: str = json.loads(out)["session_id"]
                    return sid

                async def post(sid: str, i: int) -> None:
                    body = json.dumps({"message": f"message number {i}"}).encode()
                    path = f"/api/v1/sessions/{sid}/messages"
                    status, out = await asgi_call(app, "POST", path, body, headers)
                    if status != 200:
                        raise RuntimeError(f"{status} {out[:300]!r}")

                warm = await session()
                for k in range(5):
                    await post(warm, k)
                sid = await session()

                async def turn(i: int) -> None:
                    await post(sid, i)

                return await measure(turn, total, marks)


def figures(side: str, res: dict[int, dict[str, float]], last: int) -> list[Figure]:
    first = res[1]
    end = res[last]
    cpu = end["cpu_us"] / first["cpu_us"]
    calls = end["calls"] / first["calls"]
    return [
        Figure(
            f"{side} turn CPU at {last} turns vs at 1 turn",
            cpu,
            "x",
            target="<= 1.2 (informational)",
            met=cpu <= 1.2,
            higher_is_better=False,
        ),
        Figure(
            f"{side} turn calls at {last} turns vs at 1 turn",
            calls,
            "x",
            target="informational",
            higher_is_better=False,
        ),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 turns, not 200")
    parser.add_argument("--json", action="store_true", help="one JSON object as the last line")
    parser.add_argument("--turns", type=int, default=0, help="turns in the session")
    parser.add_argument("--side", choices=("agents", "http", "both"), default="both")
    args = parser.parse_args()
    total = args.turns or (100 if args.quick else 200)
    marks = [m for m in (1, 20, 100, 200, 400, 1000) if m <= total]
    last = marks[-1]
    total = last + WINDOW
    from netsuke.agents._offline import OfflineModel  # noqa: F401  (import cost outside)

    out: list[Figure] = []
    table: dict[str, Any] = {}
    sides = ("agents", "http") if args.side == "both" else (args.side,)
    for side in sides:
        run = agents_side if side == "agents" else http_side
        res = asyncio.run(run(total, marks))
        out.extend(figures(side, res, last))
        table[side] = {str(m): res[m] for m in marks}
        for m in marks:
            print(
                f"{side:6} turn {m:4}: {res[m]['cpu_us']:8.0f} µs CPU  {res[m]['calls']:8.0f} calls"
            )
    extra = {**meta("asyncio"), "per_turn": table, "window": WINDOW, "db_dir": _dir() or "tmp"}
    report("history length", out, as_json=args.json, extra=extra)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
