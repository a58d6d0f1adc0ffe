"""Store benchmark: conversation turns persisted per second, beside the raw driver.

A turn is one user message and one assistant message (pydantic-ai ``ModelRequest`` and
``ModelResponse``) plus its execution row, committed before the call returns. Each figure is
measured in the same run for the store (``Store.conversations.append_turn``) and for the raw
driver (aiosqlite / asyncpg) executing the same statements on the same rows: bump the
conversation's message count (``UPDATE ... RETURNING``), insert the execution, insert the two
messages, commit. The raw driver is given the messages already serialised; the store
serialises them itself inside the timed loop.

* ``sequential``: one writer, one commit per turn.
* ``concurrent``: 64 sessions writing at once. The store batches their commits (group commit,
  the default on both engines). The raw SQLite baselines commit the same turns in batches of
  the size the store's group commit reached (so both pay the same number of fsyncs); the raw
  PostgreSQL baselines are 64 writers with one transaction per turn on a pool of 10
  connections (what a plain asyncpg application does), and one connection committing batches
  of the size the store's group commit reached; the ratio is against the faster. An
  informational figure shows the store with group commit off under the same load.

Two raw SQLite drivers are measured: aiosqlite, and stdlib sqlite3 on one worker thread (one
thread hop per commit, as the store's turn writer does); the ratio is against the faster.

SQLite runs with ``synchronous=FULL`` (a commit survives power loss), PostgreSQL with its
defaults (``fsync=on``, ``synchronous_commit=on``) on a throwaway cluster.

Targets: the store at >= 70% of the raw driver; >= 2,000 turns/s on SQLite concurrent.

Each figure is the best of N timed runs (3, or 1 with ``--quick``) after one untimed warm-up.

Usage: ``python benchmarks/store.py [--quick] [--json]``; with ``--json`` the last line is one
JSON object ``{"figures": {name: {value, unit, floor, ratio, target, met}}}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite
from pydantic_ai.messages import ModelRequest, ModelResponse, TextPart, UserPromptPart

from netsuke.observability import configure_logging
from netsuke.store import Execution, Store, dump_messages, upgrade
from netsuke.store._observe import METRICS
from netsuke.store.testing import PostgresUnavailableError, TemporaryPostgres, find_bindir

RATIO_TARGET = 0.70
SQLITE_CONCURRENT_FLOOR = 2000.0
CONCURRENCY = 64


def turn_messages(i: int) -> list[ModelRequest | ModelResponse]:
    return [
        ModelRequest(parts=[UserPromptPart(f"What is the weather in city {i}?")]),
        ModelResponse(
            parts=[TextPart(f"It is sunny in city {i}, 21 degrees, light wind from the west.")],
            model_name="offline",
        ),
    ]


def execution_row(session_id: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    return Execution(
        kind="agent_turn",
        agent_name="bench",
        session_id=session_id,
        started_at=now,
        ended_at=now,
        tokens_in=12,
        tokens_out=20,
    ).model_dump()


# -- the store --------------------------------------------------------------------------------


async def store_run(store: Store, sessions: list[str], turns: int, concurrency: int) -> float:
    """Turns/s for ``turns`` turns spread over ``concurrency`` writers."""
    per_writer = turns // concurrency
    messages = [turn_messages(i) for i in range(per_writer)]

    async def writer(session: str) -> None:
        for i in range(per_writer):
            now = datetime.now(UTC)
            await store.conversations.append_turn(
                session,
                messages[i],
                Execution(
                    agent_name="bench", started_at=now, ended_at=now, tokens_in=12, tokens_out=20
                ),
            )

    start = time.perf_counter()
    await asyncio.gather(*[writer(sessions[w]) for w in range(concurrency)])
    return per_writer * concurrency / (time.perf_counter() - start)


async def open_sessions(store: Store, prefix: str, count: int) -> list[str]:
    sessions = [f"{prefix}-{i}" for i in range(count)]
    for session in sessions:
        await store.conversations.open(session, agent_name="bench", user_id="u")
    return sessions


# -- raw SQLite (aiosqlite) -------------------------------------------------------------------

SQL_BUMP = (
    "UPDATE conversations SET message_count = message_count + ?, updated_at = ? "
    "WHERE session_id = ? RETURNING id, message_count"
)
SQL_EXEC_SQLITE = (
    "INSERT INTO executions (id, kind, status, agent_name, function_name, session_id, parent_id,"
    " started_at, ended_at, duration_ms, tokens_in, tokens_out, error, details) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
SQL_MSG_SQLITE = (
    "INSERT INTO messages (conversation_id, seq, kind, payload, execution_id, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)


def _sqlite_exec_params(row: dict[str, Any]) -> tuple[Any, ...]:
    ts = row["started_at"].replace(tzinfo=None).isoformat(" ")
    return (
        row["id"],
        row["kind"],
        row["status"],
        row["agent_name"],
        row["function_name"],
        row["session_id"],
        row["parent_id"],
        ts,
        ts,
        row["duration_ms"],
        row["tokens_in"],
        row["tokens_out"],
        row["error"],
        json.dumps(row["details"]),
    )


async def raw_sqlite_connect(path: Path) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(path, isolation_level=None)
    for pragma in ("journal_mode=WAL", "busy_timeout=10000", "foreign_keys=ON", "synchronous=FULL"):
        await conn.execute(f"PRAGMA {pragma}")
    return conn


async def raw_sqlite_run(path: Path, sessions: list[str], turns: int, batch: int) -> float:
    """Raw aiosqlite: ``turns`` turns over ``sessions``, ``batch`` turns per commit."""
    payloads = [dump_messages(turn_messages(i)) for i in range(turns)]
    conn = await raw_sqlite_connect(path)
    try:
        start = time.perf_counter()
        done = 0
        while done < turns:
            size = min(batch, turns - done)
            await conn.execute("BEGIN IMMEDIATE")
            exec_params = []
            msg_params = []
            for k in range(size):
                session = sessions[(done + k) % len(sessions)]
                now = datetime.now(UTC).replace(tzinfo=None).isoformat(" ")
                async with conn.execute(SQL_BUMP, (2, now, session)) as cursor:
                    conversation_id, total = await cursor.fetchone()  # type: ignore[misc]
                row = execution_row(session)
                exec_params.append(_sqlite_exec_params(row))
                for j, (kind, payload) in enumerate(payloads[done + k]):
                    msg_params.append(
                        (conversation_id, total - 2 + j, kind, payload, row["id"], now)
                    )
            await conn.executemany(SQL_EXEC_SQLITE, exec_params)
            await conn.executemany(SQL_MSG_SQLITE, msg_params)
            await conn.execute("COMMIT")
            done += size
        return turns / (time.perf_counter() - start)
    finally:
        await conn.close()


async def raw_sqlite3_thread_run(path: Path, sessions: list[str], turns: int, batch: int) -> float:
    """Raw stdlib sqlite3 on one worker thread: each commit batch is one thread hop."""
    import sqlite3
    from concurrent.futures import ThreadPoolExecutor

    payloads = [dump_messages(turn_messages(i)) for i in range(turns)]
    executor = ThreadPoolExecutor(1)
    loop = asyncio.get_running_loop()

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for pragma in (
            "journal_mode=WAL",
            "busy_timeout=10000",
            "foreign_keys=ON",
            "synchronous=FULL",
        ):
            conn.execute(f"PRAGMA {pragma}")
        return conn

    conn = await loop.run_in_executor(executor, connect)

    def commit(done: int, size: int) -> None:
        conn.execute("BEGIN IMMEDIATE")
        exec_params = []
        msg_params = []
        now = datetime.now(UTC).replace(tzinfo=None).isoformat(" ")
        for k in range(size):
            session = sessions[(done + k) % len(sessions)]
            conversation_id, total = conn.execute(SQL_BUMP, (2, now, session)).fetchone()
            row = execution_row(session)
            exec_params.append(_sqlite_exec_params(row))
            for j, (kind, payload) in enumerate(payloads[done + k]):
                msg_params.append((conversation_id, total - 2 + j, kind, payload, row["id"], now))
        conn.executemany(SQL_EXEC_SQLITE, exec_params)
        conn.executemany(SQL_MSG_SQLITE, msg_params)
        conn.execute("COMMIT")

    try:
        start = time.perf_counter()
        done = 0
        while done < turns:
            size = min(batch, turns - done)
            await loop.run_in_executor(executor, commit, done, size)
            done += size
        return turns / (time.perf_counter() - start)
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
    "VALUES ($1, $2, $3, $4, $5, $6), ($1, $7, $8, $9, $5, $6)"
)


async def raw_pg_run(dsn: str, sessions: list[str], turns: int, concurrency: int) -> float:
    import asyncpg

    pool = await asyncpg.create_pool(
        dsn, min_size=min(concurrency, 10), max_size=min(concurrency, 10)
    )
    per_writer = turns // concurrency
    payloads = [dump_messages(turn_messages(i)) for i in range(per_writer)]

    async def writer(session: str) -> None:
        for i in range(per_writer):
            async with pool.acquire() as conn, conn.transaction():
                now = datetime.now(UTC)
                conversation_id, total = await conn.fetchrow(PG_BUMP, 2, now, session)
                row = execution_row(session)
                await conn.execute(
                    PG_EXEC,
                    row["id"],
                    row["kind"],
                    row["status"],
                    row["agent_name"],
                    row["function_name"],
                    row["session_id"],
                    row["parent_id"],
                    row["started_at"],
                    row["ended_at"],
                    row["duration_ms"],
                    row["tokens_in"],
                    row["tokens_out"],
                    row["error"],
                    json.dumps(row["details"]),
                )
                (k1, p1), (k2, p2) = payloads[i]
                await conn.execute(
                    PG_MSG, conversation_id, total - 2, k1, p1, row["id"], now, total - 1, k2, p2
                )

    try:
        start = time.perf_counter()
        await asyncio.gather(*[writer(sessions[w]) for w in range(concurrency)])
        return per_writer * concurrency / (time.perf_counter() - start)
    finally:
        await pool.close()


async def raw_pg_batched_run(dsn: str, sessions: list[str], turns: int, batch: int) -> float:
    """Raw asyncpg, one connection, ``batch`` turns per transaction (hand-made group commit)."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    payloads = [dump_messages(turn_messages(i)) for i in range(turns)]
    exec_sql = PG_EXEC
    msg_sql = (
        "INSERT INTO messages (conversation_id, seq, kind, payload, execution_id, "
        "created_at) VALUES ($1, $2, $3, $4, $5, $6)"
    )
    try:
        start = time.perf_counter()
        done = 0
        while done < turns:
            size = min(batch, turns - done)
            async with conn.transaction():
                now = datetime.now(UTC)
                exec_params = []
                msg_params = []
                for k in range(size):
                    session = sessions[(done + k) % len(sessions)]
                    conversation_id, total = await conn.fetchrow(PG_BUMP, 2, now, session)
                    row = execution_row(session)
                    exec_params.append(
                        (
                            row["id"],
                            row["kind"],
                            row["status"],
                            row["agent_name"],
                            row["function_name"],
                            row["session_id"],
                            row["parent_id"],
                            row["started_at"],
                            row["ended_at"],
                            row["duration_ms"],
                            row["tokens_in"],
                            row["tokens_out"],
                            row["error"],
                            json.dumps(row["details"]),
                        )
                    )
                    for j, (kind, payload) in enumerate(payloads[done + k]):
                        msg_params.append(
                            (conversation_id, total - 2 + j, kind, payload, row["id"], now)
                        )
                await conn.executemany(exec_sql, exec_params)
                await conn.executemany(msg_sql, msg_params)
            done += size
        return turns / (time.perf_counter() - start)
    finally:
        await conn.close()


# -- driver -----------------------------------------------------------------------------------


def figure(value: float, *, baseline: float | None, floor: float | None) -> dict[str, Any]:
    ratio = value / baseline if baseline else None
    met = (ratio is None or ratio >= RATIO_TARGET) and (floor is None or value >= floor)
    return {
        "value": round(value, 1),
        "unit": "turns/s",
        "floor": floor,
        "ratio": None if ratio is None else round(ratio, 3),
        "target": RATIO_TARGET if baseline else None,
        "met": met,
    }


def raw_figure(value: float) -> dict[str, Any]:
    return {
        "value": round(value, 1),
        "unit": "turns/s",
        "floor": None,
        "ratio": None,
        "target": None,
        "met": None,
    }


async def best_of(rounds: int, run: Callable[[], Awaitable[float]]) -> float:
    """Best of ``rounds`` timed runs after one untimed warm-up run (every store and raw figure
    alike: it grows the WAL file and warms caches, so no figure pays for that alone)."""
    await run()
    return max([await run() for _ in range(rounds)])


async def bench_sqlite(
    work: Path, seq_turns: int, conc_turns: int, rounds: int
) -> dict[str, dict[str, Any]]:
    store_url = f"sqlite+aiosqlite:///{work / 'store.db'}"
    raw_path = work / "raw.db"
    await upgrade(f"sqlite+aiosqlite:///{raw_path}")
    figures: dict[str, dict[str, Any]] = {}
    async with (
        Store.open(store_url) as store,
        Store.open(f"sqlite+aiosqlite:///{raw_path}", group_commit=False) as raw_setup,
    ):
        seq_sessions = await open_sessions(store, "seq", 1)
        conc_sessions = await open_sessions(store, "conc", CONCURRENCY)
        await open_sessions(raw_setup, "seq", 1)
        await open_sessions(raw_setup, "conc", CONCURRENCY)
        # sequential: one writer, one commit per turn
        store_seq = await best_of(rounds, lambda: store_run(store, seq_sessions, seq_turns, 1))
        raw_seq = await best_of(rounds, lambda: raw_sqlite_run(raw_path, ["seq-0"], seq_turns, 1))
        raw3_seq = await best_of(
            rounds, lambda: raw_sqlite3_thread_run(raw_path, ["seq-0"], seq_turns, 1)
        )
        # concurrent: group commit; the raw baseline uses the batch size the store reached
        turns_before, batches_before = METRICS.turns_committed, METRICS.commit_batches
        store_conc = await best_of(
            rounds, lambda: store_run(store, conc_sessions, conc_turns, CONCURRENCY)
        )
        avg_batch = (METRICS.turns_committed - turns_before) / max(
            1, METRICS.commit_batches - batches_before
        )
        conc_names = [f"conc-{i}" for i in range(CONCURRENCY)]
        batch = max(1, round(avg_batch))
        raw_conc = await best_of(
            rounds, lambda: raw_sqlite_run(raw_path, conc_names, conc_turns, batch)
        )
        raw3_conc = await best_of(
            rounds, lambda: raw_sqlite3_thread_run(raw_path, conc_names, conc_turns, batch)
        )
    # The ratio is taken against the faster of the two raw drivers.
    figures["sqlite_sequential_turns_per_s"] = figure(
        store_seq, baseline=max(raw_seq, raw3_seq), floor=None
    )
    figures["sqlite_sequential_raw_aiosqlite_turns_per_s"] = raw_figure(raw_seq)
    figures["sqlite_sequential_raw_sqlite3_thread_turns_per_s"] = raw_figure(raw3_seq)
    figures["sqlite_concurrent_turns_per_s"] = figure(
        store_conc, baseline=max(raw_conc, raw3_conc), floor=SQLITE_CONCURRENT_FLOOR
    )
    figures["sqlite_concurrent_raw_aiosqlite_turns_per_s"] = raw_figure(raw_conc)
    figures["sqlite_concurrent_raw_sqlite3_thread_turns_per_s"] = raw_figure(raw3_conc)
    figures["sqlite_concurrent_avg_batch"] = {
        "value": round(avg_batch, 1),
        "unit": "turns/commit",
        "floor": None,
        "ratio": None,
        "target": None,
        "met": None,
    }
    return figures


async def bench_postgres(seq_turns: int, conc_turns: int, rounds: int) -> dict[str, dict[str, Any]]:
    figures: dict[str, dict[str, Any]] = {}
    with TemporaryPostgres(durable=True) as server:
        store_url = server.create_database("bench_store")
        raw_url = server.create_database("bench_raw")
        await upgrade(store_url)
        await upgrade(raw_url)
        async with (
            Store.open(store_url, pool_size=10) as store,
            Store.open(raw_url, group_commit=False) as raw_setup,
        ):
            seq_sessions = await open_sessions(store, "seq", 1)
            conc_sessions = await open_sessions(store, "conc", CONCURRENCY)
            await open_sessions(raw_setup, "seq", 1)
            await open_sessions(raw_setup, "conc", CONCURRENCY)
            store_seq = await best_of(rounds, lambda: store_run(store, seq_sessions, seq_turns, 1))
            raw_seq = await best_of(
                rounds, lambda: raw_pg_run(server.dsn("bench_raw"), ["seq-0"], seq_turns, 1)
            )
            turns_before, batches_before = METRICS.turns_committed, METRICS.commit_batches
            store_conc = await best_of(
                rounds, lambda: store_run(store, conc_sessions, conc_turns, CONCURRENCY)
            )
            avg_batch = (METRICS.turns_committed - turns_before) / max(
                1, METRICS.commit_batches - batches_before
            )
        async with Store.open(store_url, pool_size=10, group_commit=False) as ungrouped:
            store_ungrouped = await best_of(
                rounds, lambda: store_run(ungrouped, conc_sessions, conc_turns, CONCURRENCY)
            )
        raw_conc = await best_of(
            rounds,
            lambda: raw_pg_run(
                server.dsn("bench_raw"),
                [f"conc-{i}" for i in range(CONCURRENCY)],
                conc_turns,
                CONCURRENCY,
            ),
        )
        raw_batched = await best_of(
            rounds,
            lambda: raw_pg_batched_run(
                server.dsn("bench_raw"),
                [f"conc-{i}" for i in range(CONCURRENCY)],
                conc_turns,
                max(1, round(avg_batch)),
            ),
        )
    figures["postgres_sequential_turns_per_s"] = figure(store_seq, baseline=raw_seq, floor=None)
    figures["postgres_sequential_raw_asyncpg_turns_per_s"] = raw_figure(raw_seq)
    # The ratio is taken against the faster of the two raw strategies.
    figures["postgres_concurrent_turns_per_s"] = figure(
        store_conc, baseline=max(raw_conc, raw_batched), floor=None
    )
    figures["postgres_concurrent_raw_asyncpg_turns_per_s"] = raw_figure(raw_conc)
    figures["postgres_concurrent_raw_asyncpg_batched_turns_per_s"] = raw_figure(raw_batched)
    figures["postgres_concurrent_avg_batch"] = {
        "value": round(avg_batch, 1),
        "unit": "turns/commit",
        "floor": None,
        "ratio": None,
        "target": None,
        "met": None,
    }
    # Informational: the same load with group commit switched off (one transaction per turn
    # on a pool of 10); not a target, the default is group commit.
    figures["postgres_concurrent_no_group_commit_turns_per_s"] = {
        **figure(store_ungrouped, baseline=raw_conc, floor=None),
        "target": None,
        "met": None,
    }
    return figures


def print_table(figures: dict[str, dict[str, Any]]) -> None:
    print(
        f"{'figure':52} {'value':>10} {'unit':>13} {'ratio':>7} {'target':>7} {'floor':>7}"
        f" {'met':>5}"
    )
    for name, f in figures.items():
        ratio = "" if f["ratio"] is None else f"{f['ratio']:.2f}"
        target = "" if f["target"] is None else f"{f['target']:.2f}"
        floor = "" if f["floor"] is None else f"{f['floor']:.0f}"
        met = "" if f["met"] is None else ("yes" if f["met"] else "NO")
        print(
            f"{name:52} {f['value']:>10.1f} {f['unit']:>13} {ratio:>7} {target:>7} {floor:>7}"
            f" {met:>5}"
        )


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
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
    print(
        f"store benchmark ({'quick' if args.quick else 'full'}): {seq_turns} sequential turns,"
        f" {conc_turns} concurrent turns over {CONCURRENCY} sessions, best of {rounds}"
    )
    print_table(figures)
    if args.json:
        print(json.dumps({"figures": figures}))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
