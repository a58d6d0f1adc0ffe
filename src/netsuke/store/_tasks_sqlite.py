"""The task queue's hot path on SQLite: fixed SQL on the driver's connection.

``insert`` (without idempotency keys), ``take`` and ``settle`` run once per batch of tasks, so on
SQLite they skip SQL compilation and result processing and talk to aiosqlite directly, with
the encodings SQLAlchemy uses for these columns (JSON text; naive UTC timestamps
``YYYY-MM-DD HH:MM:SS.ffffff``), so rows written here and through the ORM are the same. Each
function is one ``BEGIN IMMEDIATE`` ... ``COMMIT`` transaction, rolled back on an error.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from ._engine import Database
from ._records_tasks import TaskRecord

__all__ = ["COLUMNS", "sqlite_insert", "sqlite_settle", "sqlite_take"]

COLUMNS = (
    "id", "kind", "payload", "capabilities", "route", "priority", "status", "attempts",
    "max_attempts", "backoff_base", "backoff_cap", "timeout", "run_at", "lease_owner",
    "lease_expires_at", "idempotency_key", "result", "last_error", "created_at", "updated_at",
    "finished_at",
)  # fmt: skip
_JSON = frozenset({"payload", "capabilities", "result"})
_TIMES = frozenset({"run_at", "lease_expires_at", "created_at", "updated_at", "finished_at"})
_SETTABLE = frozenset(COLUMNS) - {"id", "route"}
_INSERT = f"INSERT INTO tasks ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})"
_RETURNING = ", ".join(COLUMNS)


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


def _decode(row: Sequence[Any]) -> TaskRecord:
    data: dict[str, Any] = {}
    for column, value in zip(COLUMNS, row, strict=True):
        if column == "route":
            continue
        if column in _JSON:
            value = None if value is None else json.loads(value)
        elif column in _TIMES and value is not None:
            value = datetime.fromisoformat(value).replace(tzinfo=UTC)
        data[column] = value
    return TaskRecord.model_construct(**data)


async def _transaction(db: Database, body: Any) -> Any:
    async with db.driver() as conn:
        await conn.execute("BEGIN IMMEDIATE")
        try:
            out = await body(conn)
            await conn.execute("COMMIT")
        except BaseException:
            try:
                await conn.execute("ROLLBACK")
            except Exception:
                pass
            raise
        return out


async def sqlite_insert(db: Database, rows: Sequence[dict[str, Any]]) -> None:
    """Insert complete task rows (``COLUMNS``) in one transaction."""
    params = [tuple(_encode(c, r[c]) for c in COLUMNS) for r in rows]

    async def body(conn: Any) -> None:
        await conn.executemany(_INSERT, params)

    await _transaction(db, body)


async def sqlite_take(
    db: Database,
    owner: str,
    *,
    routes: Sequence[str] | None,
    all_routes: frozenset[str] | None,
    kinds: Sequence[str] | None,
    limit: int,
    expires: datetime,
    now: datetime,
) -> list[TaskRecord]:
    """Lease up to ``limit`` ready tasks; ``routes`` (or, with ``all_routes``, the routes of
    ready tasks within it) restricts them by capability."""
    ts = stamp(now)
    ready = "((status = 'queued' AND run_at <= ?) OR (status = 'leased' AND lease_expires_at <= ?))"

    async def body(conn: Any) -> list[TaskRecord]:
        where = [ready]
        params: list[Any] = [ts, ts]
        fit = routes
        if all_routes is not None:
            async with conn.execute(
                f"SELECT DISTINCT route FROM tasks WHERE {ready}", (ts, ts)
            ) as c:
                found = [r[0] for r in await c.fetchall()]
            fit = [r for r in found if not r or all(x in all_routes for x in r.split(" "))]
            if not fit:
                return []
        if fit is not None:
            where.append(f"route IN ({', '.join('?' for _ in fit)})")
            params.extend(fit)
        if kinds is not None:
            where.append(f"kind IN ({', '.join('?' for _ in kinds)})")
            params.extend(kinds)
        sql = (
            "UPDATE tasks SET status = 'leased', lease_owner = ?, lease_expires_at = ?,"
            " attempts = attempts + 1, updated_at = ? WHERE id IN (SELECT id FROM tasks WHERE "
            + " AND ".join(where)
            + f" ORDER BY priority DESC, run_at, created_at LIMIT ?) RETURNING {_RETURNING}"
        )
        async with conn.execute(sql, (owner, stamp(expires), ts, *params, limit)) as cursor:
            rows = await cursor.fetchall()
        return [_decode(r) for r in rows]

    out: list[TaskRecord] = await _transaction(db, body)
    return out


async def sqlite_settle(
    db: Database, changes: Sequence[tuple[str, str, dict[str, Any]]], *, now: datetime
) -> list[bool]:
    """``TaskRepository.settle`` on SQLite."""
    ts = stamp(now)
    ids = [task_id for _, task_id, _ in changes]

    async def body(conn: Any) -> list[bool]:
        holders: dict[str, str | None] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            sql = (
                f"SELECT id, lease_owner FROM tasks WHERE id IN ({', '.join('?' for _ in chunk)})"
                " AND status = 'leased' AND lease_expires_at > ?"
            )
            async with conn.execute(sql, (*chunk, ts)) as cursor:
                holders.update({r[0]: r[1] for r in await cursor.fetchall()})
        applied: list[bool] = []
        groups: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
        for owner, task_id, values in changes:
            ok = holders.get(task_id) == owner
            if ok:
                del holders[task_id]
                keys = tuple(sorted(values))
                if not set(keys) <= _SETTABLE:
                    raise ValueError(f"not task columns: {sorted(set(keys) - _SETTABLE)}")
                row = (ts, *(_encode(k, values[k]) for k in keys), task_id)
                groups.setdefault(keys, []).append(row)
            applied.append(ok)
        for keys, rows in groups.items():
            sets = ", ".join(f"{k} = ?" for k in ("updated_at", *keys))
            await conn.executemany(f"UPDATE tasks SET {sets} WHERE id = ?", rows)
        return applied

    out: list[bool] = await _transaction(db, body)
    return out
