"""The task queue's hot path on SQLite: fixed SQL, one thread hop per transaction.

``insert`` (without idempotency keys), ``take`` and ``settle`` run once per batch of tasks, so on
SQLite they skip SQL compilation and result processing: each is one ``BEGIN IMMEDIATE`` ...
``COMMIT`` transaction (rolled back on an error) run whole on a dedicated ``sqlite3``
connection and thread with the store's pragmas, like the conversation turn writer. One hop per
transaction instead of one per statement matters: every hop waits for the GIL. Columns use the
encodings SQLAlchemy uses (JSON text; naive UTC timestamps ``YYYY-MM-DD HH:MM:SS.ffffff``), so
rows written here and through the ORM are the same. Once handed to the thread, a transaction
completes even if its caller is cancelled.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy.engine import make_url

from ._engine import Database
from ._errors import StoreClosedError
from ._records_tasks import TaskRecord, trusted_task

__all__ = ["COLUMNS", "SqliteTaskWriter"]

T = TypeVar("T")

COLUMNS = (
    "id", "kind", "payload", "capabilities", "route", "priority", "status", "attempts",
    "max_attempts", "backoff_base", "backoff_cap", "timeout", "run_at", "lease_owner",
    "lease_expires_at", "idempotency_key", "result", "last_error", "created_at", "updated_at",
    "finished_at",
)  # fmt: skip
_JSON = frozenset({"payload", "capabilities", "result"})
_TIMES = frozenset({"run_at", "lease_expires_at", "created_at", "updated_at", "finished_at"})
_SETTABLE = frozenset(COLUMNS) - {"id", "route"}
_ROW = "(" + ", ".join("?" for _ in COLUMNS) + ")"
_ROWS_PER_INSERT = 30_000 // len(COLUMNS)
_INSERT = f"INSERT INTO tasks ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})"
_READ_BACK = (
    f"SELECT json_group_array(json_array({', '.join(COLUMNS)})) FROM tasks"
    " WHERE id IN (SELECT value FROM json_each(?))"
)


def stamp(value: datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(" ", "microseconds")


def _encode(column: str, value: Any) -> Any:
    if column in _JSON:
        return json.dumps(value)
    if column in _TIMES and value is not None:
        return stamp(value)
    return value


def _insert_row(r: dict[str, Any]) -> tuple[Any, ...]:
    """``tuple(_encode(c, r[c]) for c in COLUMNS)``, spelled out (it runs once per task)."""
    dumps = json.dumps
    lease, finished = r["lease_expires_at"], r["finished_at"]
    return (
        r["id"], r["kind"], dumps(r["payload"]), dumps(r["capabilities"]), r["route"],
        r["priority"], r["status"], r["attempts"], r["max_attempts"], r["backoff_base"],
        r["backoff_cap"], r["timeout"], stamp(r["run_at"]), r["lease_owner"],
        None if lease is None else stamp(lease), r["idempotency_key"], dumps(r["result"]),
        r["last_error"], stamp(r["created_at"]), stamp(r["updated_at"]),
        None if finished is None else stamp(finished),
    )  # fmt: skip


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)


def _decode(row: Sequence[Any]) -> TaskRecord:
    data = dict(zip(COLUMNS, row, strict=True))
    del data["route"]
    for column in _JSON:
        value = data[column]
        data[column] = None if value is None else json.loads(value)
    for column in _TIMES:
        data[column] = _time(data[column])
    return trusted_task(data)


_READY = "((status = 'queued' AND run_at <= ?) OR (status = 'leased' AND lease_expires_at <= ?))"


class SqliteTaskWriter:
    """The dedicated connection and thread. ``close()`` releases both."""

    def __init__(self, db: Database) -> None:
        self._path = make_url(db.url).database or ""
        self._synchronous = db.sqlite_synchronous
        self._busy_ms = db.busy_timeout_ms
        self._conn: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA busy_timeout={int(self._busy_ms)}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        return conn

    async def _run(self, body: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise StoreClosedError("the store is closed")
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="netsuke-sqlite-tasks")

        def transaction() -> T:
            if self._conn is None:
                self._conn = self._connect()
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                out = body(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return out

        return await asyncio.get_running_loop().run_in_executor(self._executor, transaction)

    async def close(self) -> None:
        self._closed = True
        if self._executor is None:
            return

        def shut() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await asyncio.get_running_loop().run_in_executor(self._executor, shut)
        self._executor.shutdown(wait=True)
        self._executor = None

    async def insert(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert complete task rows (``COLUMNS``) in one transaction."""
        params = [_insert_row(r) for r in rows]

        def body(conn: sqlite3.Connection) -> None:
            # Many rows per statement: executemany steps once per row, and each step hands
            # the GIL back and waits to take it again while the event loop's thread is busy.
            for start in range(0, len(params), _ROWS_PER_INSERT):
                chunk = params[start : start + _ROWS_PER_INSERT]
                values = ", ".join([_ROW] * len(chunk))
                flat = [v for row in chunk for v in row]
                conn.execute(f"INSERT INTO tasks ({', '.join(COLUMNS)}) VALUES {values}", flat)

        await self._run(body)

    async def take(
        self,
        owner: str,
        *,
        routes: Sequence[str] | None,
        all_routes: frozenset[str] | None,
        kinds: Sequence[str] | None,
        limit: int,
        expires: datetime,
        now: datetime,
    ) -> list[TaskRecord]:
        """Lease up to ``limit`` ready tasks; ``routes`` (or, with ``all_routes``, the routes
        of ready tasks within it) restricts them by capability."""
        ts = stamp(now)
        until = stamp(expires)

        def body(conn: sqlite3.Connection) -> list[Sequence[Any]]:
            where = [_READY]
            params: list[Any] = [ts, ts]
            fit = routes
            if all_routes is not None:
                found = [
                    r[0]
                    for r in conn.execute(
                        f"SELECT DISTINCT route FROM tasks WHERE {_READY}", (ts, ts)
                    )
                ]
                fit = [r for r in found if not r or all(x in all_routes for x in r.split(" "))]
                if not fit:
                    return []
            if fit is not None:
                where.append(f"route IN ({', '.join('?' for _ in fit)})")
                params.extend(fit)
            if kinds is not None:
                where.append(f"kind IN ({', '.join('?' for _ in kinds)})")
                params.extend(kinds)
            # Three statements of one step each (a step per row would hand the GIL back and
            # wait for it once per row): pick the ids, lease them, read them back as one JSON.
            pick = (
                "SELECT json_group_array(id) FROM (SELECT id FROM tasks WHERE "
                + " AND ".join(where)
                + " ORDER BY priority DESC, run_at, created_at LIMIT ?)"
            )
            ids = conn.execute(pick, (*params, limit)).fetchone()[0]
            if ids == "[]":
                return []
            conn.execute(
                "UPDATE tasks SET status = 'leased', lease_owner = ?, lease_expires_at = ?,"
                " attempts = attempts + 1, updated_at = ?"
                " WHERE id IN (SELECT value FROM json_each(?))",
                (owner, until, ts, ids),
            )
            got = conn.execute(_READ_BACK, (ids,)).fetchone()[0]
            rows: list[Sequence[Any]] = json.loads(got)
            return rows

        rows = await self._run(body)
        return [_decode(r) for r in rows]

    async def settle(
        self, changes: Sequence[tuple[str, str, dict[str, Any]]], *, now: datetime
    ) -> list[bool]:
        """``TaskRepository.settle`` on SQLite."""
        ts = stamp(now)
        ids = [task_id for _, task_id, _ in changes]
        encoded = [
            (owner, task_id, tuple(sorted(values)), values) for owner, task_id, values in changes
        ]
        for _, _, keys, _ in encoded:
            if not set(keys) <= _SETTABLE:
                raise ValueError(f"not task columns: {sorted(set(keys) - _SETTABLE)}")

        def body(conn: sqlite3.Connection) -> list[bool]:
            holders: dict[str, str | None] = {}
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                sql = (
                    "SELECT json_group_array(json_array(id, lease_owner)) FROM tasks WHERE id IN "
                    f"({', '.join('?' for _ in chunk)}) AND status = 'leased'"
                    " AND lease_expires_at > ?"
                )
                found = conn.execute(sql, (*chunk, ts)).fetchone()[0]
                holders.update(dict(json.loads(found)))
            applied: list[bool] = []
            groups: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
            for owner, task_id, keys, values in encoded:
                ok = holders.get(task_id) == owner
                if ok:
                    del holders[task_id]
                    row = (ts, *(_encode(k, values[k]) for k in keys), task_id)
                    groups.setdefault(keys, []).append(row)
                applied.append(ok)
            for keys, rows in groups.items():
                # one statement per group (UPDATE ... FROM a VALUES list), not one per row
                names = ("updated_at", *keys, "id")
                per = 30_000 // len(names)
                sets = ", ".join(f"{k} = v.{k}" for k in names[:-1])
                marks = "(" + ", ".join("?" for _ in names) + ")"
                for start in range(0, len(rows), per):
                    part = rows[start : start + per]
                    conn.execute(
                        f"WITH v({', '.join(names)}) AS (VALUES {', '.join([marks] * len(part))})"
                        f" UPDATE tasks SET {sets} FROM v WHERE tasks.id = v.id",
                        [x for r in part for x in r],
                    )
            return applied

        return await self._run(body)
