"""History length: what one chat turn costs as its conversation grows.

One session with the offline model (the default model) runs N turns (200; 100 with
``--quick``) one after another, committed to a SQLite store (WAL, synchronous=FULL; on the
tmpfs ``/dev/shm`` when writable, so the figure is the runtime's CPU, not the disk's). At
each mark (turn 1, 20, 100, 200) the turn is run under cProfile for its Python call count
(every call on the event loop's thread, C functions included: deterministic for a build,
whatever the load), then the next ``WINDOW`` turns unprofiled for their CPU time
(``time.process_time()``: every thread, the store's writer thread included; the least of
them, the median is in the JSON). Two
paths:

* ``agents``: ``Agents.run`` on a started session;
* ``http``: ``POST /api/v1/sessions/{id}/messages`` straight into the ASGI app in this process
  (``create_app`` over a node opened like ``netsuke serve`` opens it; no HTTP server or
  client), as ``benchmarks/api_cost.py`` drives it;
* ``direct`` (the floor): pydantic-ai's ``Agent.run`` with the same offline model and the
  same growing ``message_history``, no runtime, no store: what pydantic-ai itself does per
  run with a history of that length.

Figures (lower is better):

* ``agents turn CPU at N turns vs at 1 turn`` and ``http turn CPU at N turns vs at 1 turn``
  (ratio of the CPU figures), each beside the ``direct`` path's ratio as its floor; target <= 1.2,
  informational: pydantic-ai's own per-run work on the history grows with it (the floor), see
  docs/benchmarks.md, "History length";
* ``agents turn calls at N turns vs at 1 turn`` (ratio of the call counts; deterministic),
  beside the ``direct`` path's.

The per-mark table (CPU µs and calls per turn) is printed, and is in the JSON's meta.

Usage: ``python benchmarks/history.py [--quick] [--json] [--turns N]
[--side agents|http|direct|all]``.
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

from _harness import Figure, bench_agents, meta, report

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

WINDOW = 7
"""Unprofiled turns timed after each mark; the least CPU of them is the mark's (on a shared
machine other work only ever adds to a turn's CPU time: caches, frequency)."""

Turn = Callable[[int], Awaitable[None]]


def _dir() -> str | None:
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None


async def measure(turn: Turn, total: int, marks: list[int]) -> dict[int, dict[str, float]]:
    """Run turns 1..``total`` through ``turn``; at each mark its calls, then the CPU of the
    next ``WINDOW`` turns (the least, µs)."""
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
            out[i] = {"calls": calls, "cpu_us": min(cpus), "cpu_median_us": statistics.median(cpus)}
            i += 1 + WINDOW
        else:
            await turn(i)
            i += 1
    return out


async def direct_side(total: int, marks: list[int]) -> dict[int, dict[str, float]]:
    from pydantic_ai import Agent
    from pydantic_ai.messages import ModelMessage

    from netsuke.agents._offline import OfflineModel

    agent: Agent[None, str] = Agent(OfflineModel(), name="history")
    history: list[ModelMessage] = []
    for k in range(5):
        await agent.run(f"warm {k}")

    async def turn(i: int) -> None:
        nonlocal history
        r = await agent.run(f"message number {i}", message_history=history, infer_name=False)
        history = r.all_messages()

    return await measure(turn, total, marks)


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
        agents_dir = bench_agents(tmp)
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


def _growth(res: dict[int, dict[str, float]], last: int, key: str) -> float:
    return res[last][key] / res[1][key]


def figures(
    side: str,
    res: dict[int, dict[str, float]],
    last: int,
    floor: dict[int, dict[str, float]] | None,
) -> list[Figure]:
    cpu = _growth(res, last, "cpu_us")
    calls = _growth(res, last, "calls")
    label = "direct pydantic-ai run, same history"
    return [
        Figure(
            f"{side} turn CPU at {last} turns vs at 1 turn",
            cpu,
            "x",
            floor=None if floor is None else _growth(floor, last, "cpu_us"),
            floor_label=label if floor is not None else "",
            target="<= 1.2 (informational)",
            met=cpu <= 1.2,
            higher_is_better=False,
        ),
        Figure(
            f"{side} turn calls at {last} turns vs at 1 turn",
            calls,
            "x",
            floor=None if floor is None else _growth(floor, last, "calls"),
            floor_label=label if floor is not None else "",
            target="informational",
            higher_is_better=False,
        ),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 turns, not 200")
    parser.add_argument("--json", action="store_true", help="one JSON object as the last line")
    parser.add_argument("--turns", type=int, default=0, help="turns in the session")
    parser.add_argument(
        "--side", choices=("agents", "http", "direct", "all"), default="all", help="paths to run"
    )
    args = parser.parse_args()
    total = args.turns or (100 if args.quick else 200)
    marks = [m for m in (1, 20, 100, 200, 400, 1000) if m <= total]
    last = marks[-1]
    total = last + WINDOW
    from netsuke.agents._offline import OfflineModel  # noqa: F401  (import cost outside)

    out: list[Figure] = []
    table: dict[str, Any] = {}
    sides = ("direct", "agents", "http") if args.side == "all" else (args.side,)
    runs = {"direct": direct_side, "agents": agents_side, "http": http_side}
    floor: dict[int, dict[str, float]] | None = None
    for side in sides:
        res = asyncio.run(runs[side](total, marks))
        if side == "direct":
            floor = res
        else:
            out.extend(figures(side, res, last, floor))
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
