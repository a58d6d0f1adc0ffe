"""Store benchmark: conversation turns persisted per second, beside the raw driver.

A turn is one user message and one assistant message (pydantic-ai ``ModelRequest`` and
``ModelResponse``) plus its execution row, committed before the call returns. Every store
figure is measured in the same run as raw-driver code persisting the same turns into the same
rows: put the messages after the conversation's last (``UPDATE ... RETURNING`` of its message
count), insert the execution row, insert the two message rows, commit.

Raw baselines start, like the store, from the pydantic-ai message objects and serialise them
with ``ModelMessagesTypeAdapter`` inside the timed loop (that is part of persisting a turn).
An ``insert_only`` baseline is also shown: rows serialised before the clock starts, the
ceiling of the driver alone. The ratio of a store figure is against the fastest raw baseline
that does the same work (serialising); on every raw line, ``ratio`` is store / that line.

* ``sequential``: one writer, one commit per turn.
* ``concurrent``: 64 sessions writing at once. The store batches their commits (group commit,
  the default on both engines; each caller still returns only after its own turn is
  committed). Raw SQLite baselines commit the same turns in batches of the size the store's
  group commit reached (the same number of fsyncs). Raw PostgreSQL baselines: 64 writers with
  one transaction per turn on a 10-connection asyncpg pool (what a plain asyncpg application
  does), and one connection committing batches of the store's batch size. An informational
  figure shows the store with group commit off.
* Raw SQLite drivers: aiosqlite, and stdlib sqlite3 on one worker thread (one thread hop per
  commit, as the store's turn writer does).

SQLite runs with ``synchronous=FULL`` (a commit survives power loss), PostgreSQL with its
defaults (``fsync=on``, ``synchronous_commit=on``) on a throwaway cluster.

Targets: the store at >= 70% of the raw driver; >= 2,000 turns/s on SQLite concurrent.

Each figure is the best of N timed runs (3, or 1 with ``--quick``) after one untimed warm-up.

Usage: ``python benchmarks/store.py [--quick] [--json]``; with ``--json`` the last line is one
JSON object ``{"figures": {name: {value, unit, floor, ratio, target, met}}}``.
"""

from __future__ import annotations

import sys

# This folder goes after the standard library on sys.path, so benchmarks/queue.py never
# shadows the standard library's queue (used by asyncio, aiosqlite and the store's writer).
sys.path.append(sys.path.pop(0))

import argparse
import asyncio
import json
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite
from pydantic_ai.messages import (
    ModelMessage,
    ModelMessagesTypeAdapter,
    ModelRequest,
    ModelResponse,
    TextPart,
    UserPromptPart,
)

from netsuke.observability import configure_logging
from netsuke.store import Execution, Store, upgrade
from netsuke.store._observe import METRICS
from netsuke.store.testing import PostgresUnavailableError, TemporaryPostgres, find_bindir

RATIO_TARGET = 0.70
SQLITE_CONCURRENT_FLOOR = 2000.0
CONCURRENCY = 64
Payloads = list[tuple[str, str]]


def turn_messages(i: int) -> list[ModelMessage]:
    return [
        ModelRequest(parts=[UserPromptPart(f"What is the weather in city {i}?")]),
        ModelResponse(
            parts=[TextPart(f"It is sunny in city {i}, 21 degrees, light wind from the west.")],
            model_name="offline",
        ),
    ]


def serialise(messages: Sequence[ModelMessage]) -> Payloads:
    """What raw code does to store pydantic-ai messages: one JSON document per message."""
    return [(m.kind, ModelMessagesTypeAdapter.dump_json([m])[1:-1].decode()) for m in messages]


class Turns:
    """The turns of one run: message objects, and their rows serialised ahead if asked."""

    def __init__(self, count: int, *, insert_only: bool) -> None:
        self.messages = [turn_messages(i) for i in range(count)]
        self.ready = [serialise(m) for m in self.messages] if insert_only else None

    def payloads(self, i: int) -> Payloads:
        return self.ready[i] if self.ready is not None else serialise(self.messages[i])


def execution_row(session_id: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    return Execution(
        kind="agent_turn", agent_name="bench", session_id=session_id, started_at=now,
        ended_at=now, tokens_in=12, tokens_out=20,
    ).model_dump()  # fmt: skip


# -- the store --------------------------------------------------------------------------------


async def store_run(store: Store, sessions: list[str], turns: int, concurrency: int) -> float:
    """Turns/s for ``turns`` turns spread over ``concurrency`` writers."""
    per_writer = turns // concurrency
    messages = [turn_messages(i) for i in range(per_writer)]

    async def writer(session: str) -> None:
        for i in range(per_writer):
            now = datetime.now(UTC)
            execution = Execution(
                agent_name="bench", started_at=now, ended_at=now, tokens_in=12, tokens_out=20
            )
            await store.conversations.append_turn(session, messages[i], execution)

    start = time.perf_counter()
    await asyncio.gather(*[writer(sessions[w]) for w in range(concurrency)])
    return per_writer * concurrency / (time.perf_counter() - start)


async def open_sessions(store: Store, prefix: str, count: int) -> list[str]:
    sessions = [f"{prefix}-{i}" for i in range(count)]
    for session in sessions:
        await store.conversations.open(session, agent_name="bench", user_id="u")
    return sessions


# -- raw SQLite -------------------------------------------------------------------------------

SQLITE_BUMP = (
    "UPDATE conversations SET message_count = message_count + ?, updated_at = ? "
    "WHERE session_id = ? RETURNING id, message_count"
)
SQLITE_EXEC = (
    "INSERT INTO executions (id, kind, status, agent_name, function_name, session_id, parent_id,"
    " started_at, ended_at, duration_ms, tokens_in, tokens_out, error, details) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
SQLITE_MSG = (
    "INSERT INTO messages (conversation_id, seq, kind, payload, execution_id, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
SQLITE_PRAGMAS = ("journal_mode=WAL", "busy_timeout=10000", "foreign_keys=ON", "synchronous=FULL")


def sqlite_stamp(value: datetime) -> str:
    return value.replace(tzinfo=None).isoformat(" ", "microseconds")


def sqlite_exec_params(row: dict[str, Any]) -> tuple[Any, ...]:
    ts = sqlite_stamp(row["started_at"])
    return (
        row["id"], row["kind"], row["status"], row["agent_name"], row["function_name"],
        row["session_id"], row["parent_id"], ts, ts, row["duration_ms"], row["tokens_in"],
        row["tokens_out"], row["error"], json.dumps(row["details"]),
    )  # fmt: skip


async def raw_aiosqlite_run(
    path: Path, sessions: list[str], count: int, batch: int, *, insert_only: bool = False
) -> float:
    """aiosqlite: ``count`` turns over ``sessions``, ``batch`` turns per commit."""
    turns = Turns(count, insert_only=insert_only)
    conn = await aiosqlite.connect(path, isolation_level=None)
    for pragma in SQLITE_PRAGMAS:
        await conn.execute(f"PRAGMA {pragma}")
    try:
        start = time.perf_counter()
        for done in range(0, count, batch):
            size = min(batch, count - done)
            await conn.execute("BEGIN IMMEDIATE")
            exec_params = []
            msg_params = []
            for k in range(size):
                session = sessions[(done + k) % len(sessions)]
                payloads = turns.payloads(done + k)
                now = sqlite_stamp(datetime.now(UTC))
                async with conn.execute(SQLITE_BUMP, (len(payloads), now, session)) as cursor:
                    conversation_id, total = await cursor.fetchone()  # type: ignore[misc]
                row = execution_row(session)
                exec_params.append(sqlite_exec_params(row))
                first = total - len(payloads)
                for j, (kind, payload) in enumerate(payloads):
                    msg_params.append((conversation_id, first + j, kind, payload, row["id"], now))
            await conn.executemany(SQLITE_EXEC, exec_params)
            await conn.executemany(SQLITE_MSG, msg_params)
            await conn.execute("COMMIT")
        return count / (time.perf_counter() - start)
    finally:
        await conn.close()


async def raw_sqlite3_run(
    path: Path, sessions: list[str], count: int, batch: int, *, insert_only: bool = False
) -> float:
    """stdlib sqlite3 on one worker thread: each commit is one thread hop; messages are
    serialised on the event loop before the hop."""
    turns = Turns(count, insert_only=insert_only)
    executor = ThreadPoolExecutor(1)
    loop = asyncio.get_running_loop()

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for pragma in SQLITE_PRAGMAS:
            conn.execute(f"PRAGMA {pragma}")
        return conn

    conn = await loop.run_in_executor(executor, connect)

    def commit(work: list[tuple[str, Payloads]]) -> None:
        conn.execute("BEGIN IMMEDIATE")
        exec_params = []
        msg_params = []
        for session, payloads in work:
            now = sqlite_stamp(datetime.now(UTC))
            conversation_id, total = conn.execute(
                SQLITE_BUMP, (len(payloads), now, session)
            ).fetchone()
            row = execution_row(session)
            exec_params.append(sqlite_exec_params(row))
            first = total - len(payloads)
            for j, (kind, payload) in enumerate(payloads):
                msg_params.append((conversation_id, first + j, kind, payload, row["id"], now))
        conn.executemany(SQLITE_EXEC, exec_params)
        conn.executemany(SQLITE_MSG, msg_params)
        conn.execute("COMMIT")

    try:
        start = time.perf_counter()
        for done in range(0, count, batch):
            size = min(batch, count - done)
            work = [
                (sessions[(done + k) % len(sessions)], turns.payloads(done + k))
                for k in range(size)
            ]
            await loop.run_in_executor(executor, commit, work)
        return count / (time.perf_counter() - start)
    finally:
        await loop.run_in_executor(executor, conn.close)
        executor.shutdown()


# -- raw PostgreSQL (asyncpg) -----------------------------------------------------------------

PG_BUMP = (
    "UPDATE conversations SET message_count = message_count + $1, updated_at = $2 "
    "WHERE session_id = $3 RETURNING id, message_count"
)
PG_EXEC = (
    "INSERT INTO executions (id, kind, status, agent_name, function_name, session_id, parent_id,"
    " started_at, ended_at, duration_ms, tokens_in, tokens_out, error, details) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14::jsonb)"
)
PG_MSG = (
    "INSERT INTO messages (conversation_id, seq, kind, payload, execution_id, created_at) "
    "VALUES ($1, $2, $3, $4, $5, $6)"
)


def pg_exec_params(row: dict[str, Any]) -> tuple[Any, ...]:
    return (
        row["id"], row["kind"], row["status"], row["agent_name"], row["function_name"],
        row["session_id"], row["parent_id"], row["started_at"], row["ended_at"],
        row["duration_ms"], row["tokens_in"], row["tokens_out"], row["error"],
        json.dumps(row["details"]),
    )  # fmt: skip


async def pg_turns(conn: Any, work: list[tuple[str, Payloads]]) -> None:
    """One transaction for ``work`` on an asyncpg connection."""
    async with conn.transaction():
        now = datetime.now(UTC)
        exec_params = []
        msg_params = []
        for session, payloads in work:
            conversation_id, total = await conn.fetchrow(PG_BUMP, len(payloads), now, session)
            row = execution_row(session)
            exec_params.append(pg_exec_params(row))
            first = total - len(payloads)
            for j, (kind, payload) in enumerate(payloads):
                msg_params.append((conversation_id, first + j, kind, payload, row["id"], now))
        await conn.executemany(PG_EXEC, exec_params)
        await conn.executemany(PG_MSG, msg_params)


async def raw_asyncpg_pool_run(
    dsn: str, sessions: list[str], count: int, writers: int, *, insert_only: bool = False
) -> float:
    """asyncpg: ``writers`` concurrent writers on a pool of up to 10, one transaction each turn."""
    import asyncpg

    pool = await asyncpg.create_pool(dsn, min_size=min(writers, 10), max_size=min(writers, 10))
    per_writer = count // writers
    turns = Turns(per_writer, insert_only=insert_only)

    async def writer(session: str) -> None:
        for i in range(per_writer):
            payloads = turns.payloads(i)
            async with pool.acquire() as conn:
                await pg_turns(conn, [(session, payloads)])

    try:
        start = time.perf_counter()
        await asyncio.gather(*[writer(sessions[w]) for w in range(writers)])
        return per_writer * writers / (time.perf_counter() - start)
    finally:
        await pool.close()


async def raw_asyncpg_batched_run(
    dsn: str, sessions: list[str], count: int, batch: int, *, insert_only: bool = False
) -> float:
    """asyncpg, one connection, ``batch`` turns per transaction (hand-made group commit)."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    turns = Turns(count, insert_only=insert_only)
    try:
        start = time.perf_counter()
        for done in range(0, count, batch):
            size = min(batch, count - done)
            work = [
                (sessions[(done + k) % len(sessions)], turns.payloads(done + k))
                for k in range(size)
            ]
            await pg_turns(conn, work)
        return count / (time.perf_counter() - start)
    finally:
        await conn.close()


# -- figures ----------------------------------------------------------------------------------


def figure(value: float, *, baseline: float, floor: float | None) -> dict[str, Any]:
    ratio = value / baseline
    met = ratio >= RATIO_TARGET and (floor is None or value >= floor)
    return {"value": round(value, 1), "unit": "turns/s", "floor": floor,
            "ratio": round(ratio, 3), "target": RATIO_TARGET, "met": met}  # fmt: skip


def raw_figure(value: float, store_value: float) -> dict[str, Any]:
    return {"value": round(value, 1), "unit": "turns/s", "floor": None,
            "ratio": round(store_value / value, 3), "target": None, "met": None}  # fmt: skip


def info_figure(value: float, unit: str) -> dict[str, Any]:
    return {"value": round(value, 1), "unit": unit, "floor": None, "ratio": None,
            "target": None, "met": None}  # fmt: skip


async def best_of(rounds: int, run: Callable[[], Awaitable[float]]) -> float:
    """Best of ``rounds`` timed runs after one untimed warm-up run (every store and raw figure
    alike: it grows the WAL file and warms caches, so no figure pays for that alone)."""
    await run()
    return max([await run() for _ in range(rounds)])


class Batches:
    """The average group-commit batch size over a block of store turns."""

    def __enter__(self) -> Batches:
        self._turns, self._batches = METRICS.turns_committed, METRICS.commit_batches
        return self

    def __exit__(self, *exc: object) -> None:
        batches = max(1, METRICS.commit_batches - self._batches)
        self.average = (METRICS.turns_committed - self._turns) / batches


def add(
    figures: dict[str, dict[str, Any]],
    prefix: str,
    store_value: float,
    raws: dict[str, float],
    insert_only: dict[str, float],
    floor: float | None = None,
) -> None:
    """The store figure (ratio against the fastest serialising raw baseline) and each raw."""
    figures[f"{prefix}_turns_per_s"] = figure(store_value, baseline=max(raws.values()), floor=floor)
    for name, value in raws.items():
        figures[f"{prefix}_raw_{name}_turns_per_s"] = raw_figure(value, store_value)
    for name, value in insert_only.items():
        figures[f"{prefix}_raw_{name}_insert_only_turns_per_s"] = raw_figure(value, store_value)


async def bench_sqlite(
    work: Path, seq_turns: int, conc_turns: int, rounds: int
) -> dict[str, dict[str, Any]]:
    raw_path = work / "raw.db"
    raw_url = f"sqlite+aiosqlite:///{raw_path}"
    await upgrade(raw_url)
    figures: dict[str, dict[str, Any]] = {}
    async with (
        Store.open(f"sqlite+aiosqlite:///{work / 'store.db'}") as store,
        Store.open(raw_url, group_commit=False) as raw_setup,
    ):
        seq = await open_sessions(store, "seq", 1)
        conc = await open_sessions(store, "conc", CONCURRENCY)
        await open_sessions(raw_setup, "seq", 1)
        await open_sessions(raw_setup, "conc", CONCURRENCY)

        value = await best_of(rounds, lambda: store_run(store, seq, seq_turns, 1))
        raws = {
            "aiosqlite": await best_of(
                rounds, lambda: raw_aiosqlite_run(raw_path, seq, seq_turns, 1)
            ),
            "sqlite3": await best_of(rounds, lambda: raw_sqlite3_run(raw_path, seq, seq_turns, 1)),
        }
        only = {
            "sqlite3": await best_of(
                rounds, lambda: raw_sqlite3_run(raw_path, seq, seq_turns, 1, insert_only=True)
            )
        }
        add(figures, "sqlite_sequential", value, raws, only)

        with Batches() as batches:
            value = await best_of(rounds, lambda: store_run(store, conc, conc_turns, CONCURRENCY))
        size = max(1, round(batches.average))
        raws = {
            "aiosqlite": await best_of(
                rounds, lambda: raw_aiosqlite_run(raw_path, conc, conc_turns, size)
            ),
            "sqlite3": await best_of(
                rounds, lambda: raw_sqlite3_run(raw_path, conc, conc_turns, size)
            ),
        }
        only = {
            "sqlite3": await best_of(
                rounds,
                lambda: raw_sqlite3_run(raw_path, conc, conc_turns, size, insert_only=True),
            )
        }
        add(figures, "sqlite_concurrent", value, raws, only, floor=SQLITE_CONCURRENT_FLOOR)
        figures["sqlite_concurrent_avg_batch"] = info_figure(batches.average, "turns/commit")
    return figures


async def bench_postgres(seq_turns: int, conc_turns: int, rounds: int) -> dict[str, dict[str, Any]]:
    figures: dict[str, dict[str, Any]] = {}
    with TemporaryPostgres(durable=True) as server:
        store_url = server.create_database("bench_store")
        raw_url = server.create_database("bench_raw")
        raw_dsn = server.dsn("bench_raw")
        await upgrade(store_url)
        await upgrade(raw_url)
        async with Store.open(raw_url, group_commit=False) as raw_setup:
            await open_sessions(raw_setup, "seq", 1)
            await open_sessions(raw_setup, "conc", CONCURRENCY)
        async with Store.open(store_url) as store:
            seq = await open_sessions(store, "seq", 1)
            conc = await open_sessions(store, "conc", CONCURRENCY)
            value = await best_of(rounds, lambda: store_run(store, seq, seq_turns, 1))
            with Batches() as batches:
                conc_value = await best_of(
                    rounds, lambda: store_run(store, conc, conc_turns, CONCURRENCY)
                )
        async with Store.open(store_url, group_commit=False) as ungrouped:
            ungrouped_value = await best_of(
                rounds, lambda: store_run(ungrouped, conc, conc_turns, CONCURRENCY)
            )
        raws = {"asyncpg": await best_of(rounds, lambda: raw_asyncpg_pool_run(
            raw_dsn, seq, seq_turns, 1))}  # fmt: skip
        only = {"asyncpg": await best_of(rounds, lambda: raw_asyncpg_pool_run(
            raw_dsn, seq, seq_turns, 1, insert_only=True))}  # fmt: skip
        add(figures, "postgres_sequential", value, raws, only)

        size = max(1, round(batches.average))
        raws = {
            "asyncpg_pool": await best_of(rounds, lambda: raw_asyncpg_pool_run(
                raw_dsn, conc, conc_turns, CONCURRENCY)),
            "asyncpg_batched": await best_of(rounds, lambda: raw_asyncpg_batched_run(
                raw_dsn, conc, conc_turns, size)),
        }  # fmt: skip
        only = {"asyncpg_batched": await best_of(rounds, lambda: raw_asyncpg_batched_run(
            raw_dsn, conc, conc_turns, size, insert_only=True))}  # fmt: skip
        add(figures, "postgres_concurrent", conc_value, raws, only)
        figures["postgres_concurrent_avg_batch"] = info_figure(batches.average, "turns/commit")
        # Informational: the same load with group commit off (one transaction per turn over
        # the SQLAlchemy pool); not a target, group commit is the default.
        figures["postgres_concurrent_no_group_commit_turns_per_s"] = {
            **figure(ungrouped_value, baseline=max(raws.values()), floor=None),
            "target": None,
            "met": None,
        }
    return figures


def print_table(figures: dict[str, dict[str, Any]]) -> None:
    print(f"{'figure':64} {'value':>9} {'unit':>13} {'ratio':>6} {'target':>6} {'floor':>6} met")
    for name, f in figures.items():
        ratio = "" if f["ratio"] is None else f"{f['ratio']:.2f}"
        target = "" if f["target"] is None else f"{f['target']:.2f}"
        floor = "" if f["floor"] is None else f"{f['floor']:.0f}"
        met = "" if f["met"] is None else ("yes" if f["met"] else "NO")
        print(
            f"{name:64} {f['value']:>9.1f} {f['unit']:>13} {ratio:>6} {target:>6} {floor:>6} {met}"
        )


async def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small run (under a minute)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args()
    configure_logging("warning")
    seq_turns, conc_turns, rounds = (300, 3_200, 1) if args.quick else (2_000, 19_200, 3)
    figures: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="netsuke-bench-") as tmp:
        figures.update(await bench_sqlite(Path(tmp), seq_turns, conc_turns, rounds))
    if find_bindir() is None:
        print("PostgreSQL binaries not found: PostgreSQL figures skipped", file=sys.stderr)
    else:
        try:
            figures.update(await bench_postgres(seq_turns, conc_turns, rounds))
        except PostgresUnavailableError as exc:
            print(f"PostgreSQL unavailable: {exc}", file=sys.stderr)
    mode = "quick" if args.quick else "full"
    print(
        f"store benchmark ({mode}): {seq_turns} sequential turns, {conc_turns} concurrent turns"
        f" over {CONCURRENCY} sessions, best of {rounds} after a warm-up"
    )
    print_table(figures)
    if args.json:
        print(json.dumps({"figures": figures}))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
