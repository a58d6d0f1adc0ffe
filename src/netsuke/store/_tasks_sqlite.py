"""The task queue's hot path on SQLite: fixed SQL, one thread hop per transaction.

``insert`` (without idempotency keys), ``take`` and ``settle`` run once per batch of tasks, so on
SQLite they skip SQL compilation and result processing: each is one ``BEGIN IMMEDIATE`` ...
``COMMIT`` transaction (rolled back on an error) run whole on a dedicated ``sqlite3``
connection and thread with the store's pragmas, like the conversation turn writer. One hop per
transaction instead of one per statement matters: every hop waits for the GIL. Columns use the
encodings SQLAlchemy uses (JSON text; naive UTC timestamps ``YYYY-MM-DD HH:MM:SS.ffffff``), so
rows written here and through the ORM are the same. Once handed to the thread, a transaction
completes even if its caller is cancelled.

Group commit: the thread commits every transaction queued while it was busy, and those queued
in the same turn of the event loop, in one ``BEGIN IMMEDIATE`` ... ``COMMIT`` (each body in a
savepoint: one that raises is rolled back alone). A commit's callers resume before the next
transaction starts, so what they queue at once joins it: a worker acking its batch and leasing
the next shares one fsync with the insert of the tasks producers queued meanwhile. Each caller
returns only once its own writes are committed; a lone transaction waits one loop turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy.engine import make_url

from ._engine import Database
from ._errors import StoreClosedError
from ._records_tasks import TaskDraft, TaskRecord, trusted_task
from ._turn_writers import _SQLITE_AUDIT, AuditValues, _insert_rows, _sqlite_audit

__all__ = ["COLUMNS", "SqliteTaskWriter", "new_tasks"]

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


def _read_column(column: str) -> str:
    if column in _JSON:
        return f"json({column})"  # nested as JSON, decoded with the batch: one json.loads
    if column in _TIMES:
        return f"{column} || '+00:00'"  # UTC: one fromisoformat, no replace(tzinfo=)
    return column


_READ_BACK = (
    f"SELECT json_group_array(json_array({', '.join(_read_column(c) for c in COLUMNS)}))"
    " FROM tasks WHERE id IN (SELECT value FROM json_each(?))"
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


def new_tasks(
    drafts: Sequence[TaskDraft], now: datetime, new_id: Callable[[], str]
) -> tuple[list[TaskRecord], list[tuple[Any, ...]]]:
    """The records and encoded rows (``COLUMNS``) of new tasks, queued at ``now``: built in
    one pass, each value encoded once (payloads as the draft carries them, if it does)."""
    dumps = json.dumps
    created = stamp(now)
    caps: dict[tuple[str, ...], str] = {}
    records: list[TaskRecord] = []
    rows: list[tuple[Any, ...]] = []
    for d in drafts:
        data = d.__dict__
        task_id = new_id()
        cap = data["capabilities"]
        cap_text = caps.get(cap)
        if cap_text is None:
            cap_text = caps[cap] = dumps(list(cap))
        payload = d.payload_json
        rows.append((
            task_id, data["kind"], dumps(data["payload"]) if payload is None else payload,
            cap_text, " ".join(cap), data["priority"], "queued", 0, data["max_attempts"],
            data["backoff_base"], data["backoff_cap"], data["timeout"], stamp(data["run_at"]),
            None, None, data["idempotency_key"], "null", None, created, created, None,
        ))  # fmt: skip
        records.append(trusted_task({
            "id": task_id, "kind": data["kind"], "payload": data["payload"],
            "capabilities": list(cap), "priority": data["priority"], "status": "queued",
            "attempts": 0, "max_attempts": data["max_attempts"],
            "backoff_base": data["backoff_base"], "backoff_cap": data["backoff_cap"],
            "timeout": data["timeout"], "run_at": data["run_at"], "lease_owner": None,
            "lease_expires_at": None, "idempotency_key": data["idempotency_key"],
            "result": None, "last_error": None, "created_at": now, "updated_at": now,
            "finished_at": None,
        }))  # fmt: skip
    return records, rows


def _decode(row: Sequence[Any]) -> TaskRecord:
    """A row of ``_READ_BACK`` (JSON columns decoded already, times with their UTC offset)."""
    data = dict(zip(COLUMNS, row, strict=True))
    del data["route"]
    parse = datetime.fromisoformat
    for column in _TIMES:
        value = data[column]
        if value is not None:
            data[column] = parse(value)
    return trusted_task(data)


_TURNS = 4
"""Event loop turns a transaction waits for company (a commit's callers resume, queue their
next writes and encode them in about that many: producers' submits and a worker's acks)."""

_Batch = list[tuple[Callable[[sqlite3.Connection], Any], "asyncio.Future[Any]"]]


def _savepoint(conn: sqlite3.Connection, body: Callable[[sqlite3.Connection], Any]) -> Any:
    conn.execute("SAVEPOINT one")
    try:
        out = body(conn)
    except Exception as exc:
        conn.execute("ROLLBACK TO one")
        conn.execute("RELEASE one")
        return _Failed(exc)
    conn.execute("RELEASE one")
    return out


class _Failed:
    __slots__ = ("exc",)

    def __init__(self, exc: Exception) -> None:
        self.exc = exc


def _resolve(futures: list[asyncio.Future[Any]], results: list[Any]) -> None:
    for future, result in zip(futures, results, strict=True):
        if future.done():  # its caller was cancelled: the transaction completed anyway
            continue
        if isinstance(result, _Failed):
            future.set_exception(result.exc)
        elif isinstance(result, Exception):
            future.set_exception(result)
        else:
            future.set_result(result)


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
        # transactions waiting for the writer thread; it commits those queued together at once
        self._pending: _Batch = []
        self._draining = False
        self._idle = asyncio.Event()
        self.transactions = 0
        """Transactions run (each one commit, however many callers shared it)."""

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA busy_timeout={int(self._busy_ms)}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        return conn

    async def _run(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``body`` in a transaction on the writer thread; its result once committed."""
        if self._closed:
            raise StoreClosedError("the store is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((body, future))
        if not self._draining:
            self._draining = True
            self._idle.clear()
            loop.call_soon(self._kick, loop, _TURNS)
        out: T = await future
        return out

    def _kick(self, loop: asyncio.AbstractEventLoop, turns: int) -> None:
        if turns > 1:  # a few loop turns later: writers woken meanwhile join the transaction
            loop.call_soon(self._kick, loop, turns - 1)
            return
        batch, self._pending = self._pending, []
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="netsuke-sqlite-tasks")
        self._executor.submit(self._commit, loop, batch)

    def _commit(self, loop: asyncio.AbstractEventLoop, batch: _Batch) -> None:
        """On the writer thread: one transaction for the batch, then back to the loop."""
        results = self._transaction([body for body, _ in batch])
        self.transactions += 1
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            loop.call_soon_threadsafe(self._done, loop, batch, results)

    def _done(self, loop: asyncio.AbstractEventLoop, batch: _Batch, results: list[Any]) -> None:
        _resolve([future for _, future in batch], results)
        if self._pending:  # queued during that commit: after the callers just resumed
            loop.call_soon(self._kick, loop, _TURNS)
        else:
            self._draining = False
            self._idle.set()

    def _transaction(self, bodies: list[Callable[[sqlite3.Connection], Any]]) -> list[Any]:
        """One ``BEGIN IMMEDIATE`` ... ``COMMIT`` for all ``bodies``, each in a savepoint when
        there are several: a body that raises is rolled back alone and gets its exception."""
        try:
            if self._conn is None:
                self._conn = self._connect()
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                if len(bodies) == 1:
                    results = [bodies[0](conn)]
                else:
                    results = [_savepoint(conn, body) for body in bodies]
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except Exception as exc:
            return [exc] * len(bodies)
        return results

    async def close(self) -> None:
        self._closed = True
        if self._draining:
            await self._idle.wait()
        if self._executor is None:
            return

        def shut() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await asyncio.get_running_loop().run_in_executor(self._executor, shut)
        self._executor.shutdown(wait=True)
        self._executor = None

    async def insert_rows(
        self, params: Sequence[tuple[Any, ...]], audit: Sequence[AuditValues] = ()
    ) -> None:
        """Insert rows encoded already (``new_tasks``), and ``audit`` rows, in one
        transaction."""

        def body(conn: sqlite3.Connection) -> None:
            if audit:
                _insert_rows(conn, _SQLITE_AUDIT, _sqlite_audit(audit))
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
        lease = _take_body(owner, routes, all_routes, kinds, limit, expires, now)
        return [_decode(r) for r in await self._run(lease)]

    async def settle(
        self, changes: Sequence[tuple[str, str, dict[str, Any]]], *, now: datetime
    ) -> list[bool]:
        """``TaskRepository.settle`` on SQLite."""
        return await self._run(_settle_body(changes, now))

    async def settle_and_take(
        self,
        changes: Sequence[tuple[str, str, dict[str, Any]]],
        owner: str,
        *,
        routes: Sequence[str] | None,
        all_routes: frozenset[str] | None,
        kinds: Sequence[str] | None,
        limit: int,
        expires: datetime,
        now: datetime,
    ) -> tuple[list[bool], list[TaskRecord]]:
        """``settle(changes)`` then ``take`` in one transaction (one commit for both)."""
        settle = _settle_body(changes, now)
        lease = _take_body(owner, routes, all_routes, kinds, limit, expires, now)

        def body(conn: sqlite3.Connection) -> tuple[list[bool], list[Sequence[Any]]]:
            return settle(conn), (lease(conn) if limit > 0 else [])

        applied, rows = await self._run(body)
        return applied, [_decode(r) for r in rows]


def _within(route: str, offered: frozenset[str]) -> bool:
    if not route:  # a task asking for no capability; " capable-only": see tasks.CAPABLE_ONLY
        return " capable-only" not in offered
    return all(x in offered for x in route.split(" "))


def _take_body(
    owner: str,
    routes: Sequence[str] | None,
    all_routes: frozenset[str] | None,
    kinds: Sequence[str] | None,
    limit: int,
    expires: datetime,
    now: datetime,
) -> Callable[[sqlite3.Connection], list[Sequence[Any]]]:
    ts = stamp(now)
    until = stamp(expires)

    def body(conn: sqlite3.Connection) -> list[Sequence[Any]]:
        where = [_READY]
        params: list[Any] = [ts, ts]
        fit = routes
        if all_routes is not None:
            found = [
                r[0]
                for r in conn.execute(f"SELECT DISTINCT route FROM tasks WHERE {_READY}", (ts, ts))
            ]
            fit = [r for r in found if _within(r, all_routes)]
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

    return body


def _settle_body(
    changes: Sequence[tuple[str, str, dict[str, Any]]], now: datetime
) -> Callable[[sqlite3.Connection], list[bool]]:
    ts = stamp(now)
    ids = [task_id for _, task_id, _ in changes]
    shapes: dict[frozenset[str], tuple[str, ...]] = {}  # a batch's changes share a few shapes
    encoded = []
    for owner, task_id, values in changes:
        shape = frozenset(values)
        keys = shapes.get(shape)
        if keys is None:
            if not shape <= _SETTABLE:
                raise ValueError(f"not task columns: {sorted(shape - _SETTABLE)}")
            keys = shapes[shape] = tuple(sorted(shape))
        encoded.append((owner, task_id, keys, values))

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

    return body
