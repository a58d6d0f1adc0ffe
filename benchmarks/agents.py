"""Agents benchmark: turn overhead, idle-session memory, concurrent turn throughput.

Figures (each beside its floor measured in the same run):

* ``turn_cpu_us``: the CPU time (``time.process_time()``: every thread, the store's writer
  thread included) of one turn on an agent session with an instant ``FunctionModel``,
  committed to a SQLite store (WAL, synchronous=FULL) before the reply, 10 turns per
  conversation, with the database on a tmpfs (``/dev/shm``). Floor: a direct pydantic-ai
  ``Agent.run`` with the same model and the same growing history. Interleaved rounds in a
  rotating order, each phase after a full collection; the medians are reported. Target: at
  most 1.2x the floor. CPU time, not wall time, because wall time on a shared machine mostly
  measures the other tenants. On a tmpfs the commit is every bit of SQLite's work (statements,
  WAL frames, checksums, the fsync call) without the device, so the figure is what Netsuke
  costs; the device's cost is the next figure's business.
* ``turn_cpu_us_disk``: the same on the system's temporary directory (``BENCH_DIR``
  overrides), where each commit waits for an fsync. Beside it, ``saved_turn_cpu_us_disk``
  (and ``saved_turn_cpu_us`` on tmpfs): the *durable floor*, a direct run followed by the
  least a durable turn can do, one ``sqlite3`` INSERT of its new messages in pydantic-ai's
  JSON, committed (WAL, FULL), on the same file system in the same run. Where the floor itself
  is above 1.2x the direct run, the disk, not the runtime, decides the disk figure.
* ``turn_wall_us`` (no target): the wall time of the same turns beside the direct run's, and
  ``sqlite_commit_us``: the raw latency of one fsync'd commit (``sqlite3`` INSERT + COMMIT, WAL,
  synchronous=FULL) on the same directory in the same run, so a reader sees which part of a
  turn's wall time is the disk and which is Netsuke. The JSON's meta also carries the
  diagnostic ratio with the store's append made a no-op (kernel, server and turn alone).
* ``hibernated_bytes_per_session`` / ``evicted_bytes_per_session``: Python memory (tracemalloc;
  RSS growth is printed beside it) per idle session
  at N sessions (100k; 2k with ``--quick``), each with a 10-message history in the store,
  measured in a fresh interpreter. Targets: 2 KB and 200 bytes.
* ``turns_per_s``: 1,000 sessions (500 with ``--quick``) each running turns at once on SQLite,
  every reply committed before it returns. Floor: direct ``Agent.run`` calls at the same concurrency. Target: 80%.

Usage: ``python benchmarks/agents.py [--quick] [--json]``. ``BENCH_DIR`` puts the ``_disk``
figures' databases (and the memory and throughput cases') somewhere else than the system's
temporary directory; the report names each directory and its file system. Without a writable
tmpfs at ``/dev/shm`` the tmpfs figures are skipped (and said to be).
"""

from __future__ import annotations

import sys

# This folder goes after the standard library on sys.path, so benchmarks/queue.py never
# shadows the standard library's queue (used by asyncio, aiosqlite and the store's writer).
sys.path.append(sys.path.pop(0))

import asyncio
import gc
import json
import logging
import os
import sqlite3
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

import structlog
from pydantic_ai import Agent
from pydantic_ai.messages import (
    ModelMessage,
    ModelMessagesTypeAdapter,
    ModelRequest,
    ModelResponse,
    TextPart,
    UserPromptPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel

from _harness import Figure, parse_args, report, rss_bytes, run_case
from netsuke import ChildSpec, DynamicSupervisor, Runtime
from netsuke.agents import AgentConfig, Agents, AgentServer
from netsuke.agents._server import SessionArg
from netsuke.store import Store

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


async def _instant(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    return ModelResponse(parts=[TextPart("ok")])


def instant_model() -> FunctionModel:
    return FunctionModel(_instant, model_name="instant")


def _url(d: str) -> str:
    return f"sqlite+aiosqlite:///{Path(d) / 'bench.db'}"


def bench_dir() -> tempfile.TemporaryDirectory[str]:
    """A fresh directory for the databases, under ``BENCH_DIR`` when set."""
    return tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR") or None)


def fs_type(path: str) -> str:
    """The file system ``path`` is on (from /proc/mounts), or ``?``."""
    where = os.path.realpath(path)
    fs, best = "?", ""
    try:
        with open("/proc/mounts", encoding="utf-8") as fh:
            for line in fh:
                parts = line.split()
                mnt = parts[1]
                inside = where == mnt or where.startswith(mnt.rstrip("/") + "/")
                if inside and len(mnt) >= len(best):
                    best, fs = mnt, parts[2]
    except OSError:
        pass
    return fs


def dir_label(path: str | None) -> str:
    """The directory the databases go to and its file system."""
    where = os.path.realpath(path or tempfile.gettempdir())
    return f"{where} ({fs_type(where)})"


def raw_commit_us(d: str, n: int) -> tuple[float, float]:
    """One INSERT + COMMIT with the store's pragmas (WAL, FULL): (median wall µs, mean CPU
    µs; the CPU includes the kernel's work for the fsync)."""
    conn = sqlite3.connect(Path(d) / "raw.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, payload TEXT)")
    times = []
    c0 = time.process_time()
    for _ in range(n):
        t0 = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t (payload) VALUES (?)", ("x" * 600,))
        conn.execute("COMMIT")
        times.append(time.perf_counter() - t0)
    cpu = (time.process_time() - c0) / n * 1e6
    conn.close()
    return statistics.median(times) * 1e6, cpu


def _saver(d: str) -> sqlite3.Connection:
    """The durable floor's database: one table, the store's pragmas (WAL, FULL)."""
    conn = sqlite3.connect(Path(d) / "saved.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS turns (id INTEGER PRIMARY KEY, session TEXT, payload BLOB)"
    )
    return conn


async def turn_overhead(
    n_convs: int, rounds: int, directory: str | None, turns: int = 10
) -> dict[str, float]:
    """CPU and wall time per turn in interleaved rounds (medians; round 0 warms up), with the
    databases in ``directory`` (``None``: the system's temporary directory). Four phases:

    * ``netsuke``: ``agents.run`` on sessions of an agent with the instant model;
    * ``direct``: pydantic-ai's ``Agent.run`` with the same model and growing history;
    * ``saved``: the durable floor: a direct run, then its new messages in pydantic-ai's JSON
      INSERTed with ``sqlite3`` (autocommit: one statement, one fsync'd commit) into one
      table, WAL, synchronous=FULL, in the same directory. The least any runtime that commits
      each turn before answering pays on this file system;
    * ``diagnostic``: Netsuke with the store's append made a no-op (not durable; it shows
      what the kernel, the agent server and the turn cost without the write).
    """
    cpu: dict[str, list[float]] = {p: [] for p in ("netsuke", "direct", "saved", "diagnostic")}
    wall: dict[str, list[float]] = {p: [] for p in cpu}
    with tempfile.TemporaryDirectory(dir=directory) as d:
        async with Runtime() as rt, Store.open(_url(d)) as store:
            agents = await Agents.start(rt, store)
            cfg = AgentConfig(name="bench", model=instant_model(), idle_hibernate=None)
            direct = Agent(instant_model())
            saver = _saver(d)
            n = n_convs * turns
            conv = store.conversations
            append = conv.append_turn_row

            async def no_append(*_: object, **__: object) -> None:
                return None

            async def netsuke_phase(ids: list[str]) -> None:
                for sid in ids:
                    for _ in range(turns):
                        await agents.run(sid, "hello")

            async def direct_phase(save: bool) -> None:
                for c in range(n_convs):
                    history: list[ModelMessage] = []
                    for _ in range(turns):
                        r = await direct.run("hello", message_history=history)
                        history = r.all_messages()
                        if save:
                            saver.execute(
                                "INSERT INTO turns (session, payload) VALUES (?, ?)",
                                (f"c{c}", ModelMessagesTypeAdapter.dump_json(r.new_messages())),
                            )

            phases = list(cpu)
            for rnd in range(rounds + 1):
                sids = [
                    (await agents.start_session("bench", f"r{rnd}u{i}", cfg)).session_id
                    for i in range(n_convs)
                ]
                xids = [
                    (await agents.start_session("bench", f"x{rnd}u{i}", cfg)).session_id
                    for i in range(n_convs)
                ]
                # The phases run in a rotating order, each after a full collection, so neither
                # the order nor a collection of the whole heap (which costs in proportion to
                # everything the interpreter holds, not to the phase) favours one of them.
                k = rnd % len(phases)
                for phase in phases[k:] + phases[:k]:
                    gc.collect()
                    conv.append_turn_row = (  # type: ignore[method-assign]
                        no_append if phase == "diagnostic" else append  # type: ignore[assignment]
                    )
                    c0, w0 = time.process_time(), time.perf_counter()
                    if phase in ("direct", "saved"):
                        await direct_phase(save=phase == "saved")
                    else:
                        await netsuke_phase(sids if phase == "netsuke" else xids)
                    if rnd:  # round 0 warms up
                        cpu[phase].append((time.process_time() - c0) / n * 1e6)
                        wall[phase].append((time.perf_counter() - w0) / n * 1e6)
                conv.append_turn_row = append  # type: ignore[method-assign]
            saver.close()
        commit, commit_cpu = raw_commit_us(d, 200)
    med = statistics.median
    out = {f"cpu_{p}": med(v) for p, v in cpu.items()}
    out.update({f"wall_{p}": med(v) for p, v in wall.items()})
    for p in ("netsuke", "saved", "diagnostic"):
        out[f"ratio_{p}"] = med([a / b for a, b in zip(cpu[p], cpu["direct"], strict=True)])
    out["commit"], out["commit_cpu"] = commit, commit_cpu
    return out


def tmpfs_dir() -> str | None:
    """``/dev/shm`` when it is a writable tmpfs (where a commit's fsync costs nothing)."""
    if not os.access("/dev/shm", os.W_OK):
        return None
    return "/dev/shm" if fs_type("/dev/shm") == "tmpfs" else None


async def throughput(sessions: int, turns: int) -> tuple[float, float]:
    """(netsuke turns/s, direct runs/s) with ``sessions`` concurrent conversations."""
    with bench_dir() as d:
        async with Runtime() as rt, Store.open(_url(d)) as store:
            agents = await Agents.start(rt, store)
            cfg = AgentConfig(name="bench", model=instant_model(), idle_hibernate=None)
            sids = [
                (await agents.start_session("bench", f"u{i}", cfg)).session_id
                for i in range(sessions)
            ]
            direct = Agent(instant_model())

            async def one_session(sid: str) -> None:
                for _ in range(turns):
                    await agents.run(sid, "hello")

            async def one_direct() -> None:
                history: list[ModelMessage] = []
                for _ in range(turns):
                    r = await direct.run("hello", message_history=history)
                    history = r.all_messages()

            best_n = best_d = 0.0
            for _ in range(2):
                t0 = time.perf_counter()
                await asyncio.gather(*(one_session(s) for s in sids))
                best_n = max(best_n, sessions * turns / (time.perf_counter() - t0))
                t0 = time.perf_counter()
                await asyncio.gather(*(one_direct() for _ in range(sessions)))
                best_d = max(best_d, sessions * turns / (time.perf_counter() - t0))
            counts = await store.conversations.history(sids[0])
            assert len(counts) == 4 * turns, "every reply committed"
    return best_n, best_d


def _history(i: int) -> list[ModelMessage]:
    out: list[ModelMessage] = []
    for t in range(5):
        out.append(ModelRequest(parts=[UserPromptPart(f"question {t} from {i}")]))
        out.append(ModelResponse(parts=[TextPart(f"answer {t} to {i}")]))
    return out


async def memory_case(n: int, evict: bool) -> dict[str, float]:
    """Fresh interpreter: N sessions with 10-message histories; RSS per session idle."""
    with bench_dir() as d:
        async with Runtime() as rt, Store.open(_url(d)) as store:
            agents = await Agents.start(rt, store)
            cfg = AgentConfig(
                name="idle",
                model=instant_model(),
                idle_hibernate=None,
                idle_evict=1.0 if evict else None,
            )
            sids = [f"idle-u{i}" for i in range(n)]
            for k in range(0, n, 500):  # conversations and their histories in the store
                chunk = sids[k : k + 500]
                for sid in chunk:
                    await store.conversations.open(sid, agent_name="idle", user_id=sid[5:])
                await asyncio.gather(
                    *(
                        store.conversations.append_turn(s, _history(k + j))
                        for j, s in enumerate(chunk)
                    )
                )
            spec = ChildSpec(AgentServer, restart="transient", id="agent")
            # warm the paths once, then measure
            await agents.start_session("idle", "warm", cfg)
            await agents.run("idle-warm", "hi")
            await rt.hibernate_idle()
            gc.collect()
            before = rss_bytes()
            tracemalloc.start()
            traced_before = tracemalloc.get_traced_memory()[0]
            for sid in sids:
                await DynamicSupervisor.start_child(
                    agents.supervisor,
                    spec,
                    arg=SessionArg(agents, cfg, sid, sid[5:], known=True),
                    name=sid,
                    runtime=rt,
                )
            await rt.hibernate_idle()
            if evict:
                deadline = time.monotonic() + 60
                while agents.count_agents() > 0 and time.monotonic() < deadline:  # noqa: ASYNC110
                    await asyncio.sleep(0.2)
                assert agents.count_evicted() >= n
                # the runtime's sweep gives back the capacity of its tables (process table,
                # names, the supervisor's link set): let a few sweeps run
                await asyncio.sleep(4 * rt.hibernate_sweep)
            gc.collect()
            after = rss_bytes()
            traced = tracemalloc.get_traced_memory()[0] - traced_before
            tracemalloc.stop()
            # the sessions still answer, from their store memory
            reply_ok = await agents.run(sids[n // 2], "still there?") == "ok"
            hist = await store.conversations.history(sids[n // 2])
            return {
                "bytes_per_session": traced / n,
                "rss_bytes_per_session": (after - before) / n,
                "ok": float(reply_ok and len(hist) == 12),
                "alive": float(agents.count_agents()),
                "compactions": float(rt.stats.compactions),
            }


def main() -> int:
    args = parse_args(__doc__.split("\n")[0] if __doc__ else "agents")
    if args.case:
        out = asyncio.run(memory_case(args.n, args.case == "evicted"))
        print(json.dumps(out))
        return 0
    quick = args.quick
    n_convs, rounds = (5, 5) if quick else (20, 15)
    mem_n = 2_000 if quick else 100_000
    sessions, turns = (500, 1) if quick else (1000, 5)

    disk_dir = os.environ.get("BENCH_DIR") or None
    shm = tmpfs_dir()
    turn = asyncio.run(turn_overhead(n_convs, rounds, shm)) if shm else None
    disk = asyncio.run(turn_overhead(n_convs, rounds, disk_dir))
    tps, direct_tps = asyncio.run(throughput(sessions, turns))
    script = str(Path(__file__).resolve())
    hib = run_case(script, "hibernated", mem_n, timeout=1200)
    ev = run_case(script, "evicted", mem_n, timeout=1200)
    assert hib["ok"] == 1.0
    assert ev["ok"] == 1.0

    def turn_figures(t: dict[str, float], suffix: str, where: str) -> list[Figure]:
        return [
            Figure(
                f"turn_cpu_us{suffix}",
                t["cpu_netsuke"],
                "us CPU/turn",
                floor=t["cpu_direct"],
                floor_label=f"pydantic-ai Agent.run (CPU); store on {where}",
                higher_is_better=False,
                target="<= 1.2x direct",
                met=t["cpu_netsuke"] <= 1.2 * t["cpu_direct"],
            ),
            Figure(
                f"saved_turn_cpu_us{suffix}",
                t["cpu_saved"],
                "us CPU/turn",
                floor=t["cpu_direct"],
                floor_label=f"pydantic-ai Agent.run (CPU); durable floor on {where}",
                higher_is_better=False,
                target="info: direct run + its messages INSERTed and COMMITted raw",
            ),
            Figure(
                f"turn_wall_us{suffix}",
                t["wall_netsuke"],
                "us/turn",
                floor=t["wall_direct"],
                floor_label=f"pydantic-ai Agent.run (wall); store on {where}",
                higher_is_better=False,
                target="info: includes the commit's fsync",
            ),
            Figure(
                f"sqlite_commit_us{suffix}",
                t["commit"],
                "us",
                higher_is_better=False,
                target="info: raw INSERT+COMMIT, WAL, FULL",
            ),
        ]

    figures = []
    if turn is not None:
        figures += turn_figures(turn, "", "tmpfs")
    figures += turn_figures(disk, "_disk", fs_type(disk_dir or tempfile.gettempdir()))
    figures += [
        Figure(
            "hibernated_bytes_per_session",
            hib["bytes_per_session"],
            "bytes",
            higher_is_better=False,
            target="<= 2048",
            met=hib["bytes_per_session"] <= 2048,
        ),
        Figure(
            "evicted_bytes_per_session",
            ev["bytes_per_session"],
            "bytes",
            higher_is_better=False,
            target="<= 200",
            met=ev["bytes_per_session"] <= 200,
        ),
        Figure(
            "turns_per_s",
            tps,
            "turns/s",
            floor=direct_tps,
            floor_label="pydantic-ai Agent.run at the same concurrency",
            target=">= 80% of direct",
            met=tps >= 0.8 * direct_tps,
        ),
    ]
    report(
        "agents",
        figures,
        as_json=args.json,
        extra={
            "tmpfs_dir": dir_label(shm) if shm else "none: the tmpfs figures were skipped",
            "disk_dir": dir_label(disk_dir),
            **{
                f"{label}_{key}": round(t[key], 3)
                for label, t in (("tmpfs", turn), ("disk", disk))
                if t is not None
                for key in (
                    "ratio_netsuke",
                    "ratio_saved",
                    "ratio_diagnostic",
                    "cpu_diagnostic",
                    "commit_cpu",
                )
            },
            "turn_rounds": rounds,
            "sessions_for_memory": mem_n,
            "evicted_case_compactions": ev.get("compactions"),
            "rss_bytes_per_session": {
                "hibernated": round(hib["rss_bytes_per_session"]),
                "evicted": round(ev["rss_bytes_per_session"]),
            },
            "concurrent_sessions": sessions,
            "turns_per_session": turns,
            "python": sys.version.split()[0],
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
