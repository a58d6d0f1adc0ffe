"""Turn writers: the hot path that commits conversation turns, one per engine.

A batch of turns is written in one transaction: each turn's messages get the next positions
in their conversation (its message count moves on by as many), every execution row and
message row of the batch is inserted, and the transaction commits. The writers talk to the
driver directly (no SQL compilation per call) because this path runs once per chat turn:

* SQLite: a dedicated ``sqlite3`` connection on a dedicated writer thread, with the store's
  pragmas (WAL, busy timeout, foreign keys, ``synchronous``). The thread does the group commit
  itself: ``append`` puts the turn on the thread's queue and awaits a future; the thread takes
  every turn waiting (up to ``max_batch``), commits them in one transaction of four statements
  (read the counts under ``BEGIN IMMEDIATE``, then three ``executemany``) and resolves the
  batch's futures with one ``call_soon_threadsafe``. While a commit is in flight new turns
  queue up, so the batch grows with the load, a lone turn is committed at once, and the thread
  goes from one commit to the next without waiting for the event loop. A batch of one turn
  (the common case when a node is not busy) takes ``_write_one``: the same statements without
  the batch's lists and maps.

  A *lone* turn skips the hop: when the caller says nothing else is waiting to run
  (``inline=True``: the agents layer passes it when this is the only turn in flight on the
  node), nothing is queued for the thread, and commits have lately been fast (a moving average
  of their wall time at most ``inline_commit_ms``, 2 ms by default), the turn is committed on
  the event loop itself, under the same lock as the thread. Handing a turn to a thread and
  back costs more CPU (two wake-ups and a cold cache) than a small commit does; while other
  turns run, the hop is worth it, because the loop runs them during the commit and the batch
  grows. A slow disk (the average above the limit, as after a slow fsync or a checkpoint)
  sends every turn to the thread until commits are fast again; ``inline_commit_ms=0`` never
  commits on the loop. The inline commit has a connection of its own whose busy timeout is
  0: when another connection holds the write lock (say an ``aiosqlite`` transaction, which
  only this event loop can drive to its commit), waiting on the loop would deadlock until the
  busy timeout, so the turn goes to the thread instead, which waits with the busy timeout
  while the loop runs on.
  *Several processes on one file* (``serve --nodes``): the writer threads of the processes
  take turns through ``WriterLock``, an ``flock`` on ``<database>-lock`` held from before
  ``BEGIN IMMEDIATE`` to after ``COMMIT``. A waiting writer looks again every half
  millisecond instead of sleeping in SQLite's busy handler (1, 2, 5, 10, ... ms), and takes
  the turns that queued meanwhile into its batch once it holds the lock. An inline commit
  never waits for it (the turn goes to the thread). SQLite's lock still decides: the flock
  only shortens the wait, and a writer that waited past the busy timeout (a process stopped
  while holding it) goes on without it.
* PostgreSQL: the asyncpg connection under a pooled SQLAlchemy connection, with asyncpg's
  prepared-statement cache, behind a ``GroupCommitter``; ``UPDATE ... RETURNING`` per turn
  takes the row lock that orders concurrent writers of one conversation.

Without group commit (``max_batch=1``) every turn is its own transaction.

*Fencing*: a turn may carry the session ``incarnation`` its process claimed. It commits only
while the conversation row still holds that incarnation; otherwise it fails alone with
``FencedError`` and writes nothing. The check rides on the statements the commit makes anyway
(SQLite reads the incarnation with the message count under ``BEGIN IMMEDIATE``; PostgreSQL
adds ``AND incarnation = $4`` to the ``UPDATE ... RETURNING``), so it costs no round trip.

Audit rows ride the same writer. A turn may carry audit rows (the API's record of the request
that ran it), written in the turn's transaction, so the turn and its audit record commit
together or not at all; and an item with no conversation part (``session_id=None``) is just
audit rows (``AuditRepository.record``), group-committed with the turns around it. So on SQLite
every hot-path write of the API (turns and audit records) goes through one connection and one
lock: no writer sleeps in SQLite's busy handler waiting for another connection of this node,
and a request waits for at most the commit in flight plus its own batch's.

*Request ids*: a turn may carry ``request`` (its request id, a hash of the request body and
the reply to store): a ``turn_requests`` row written in the turn's transaction, so the reply is
stored exactly when the turn is. A second turn with the same ``(session, request id)`` fails
alone with ``DuplicateRequestError`` (the table's primary key refuses it) and writes nothing.

A batch the database refuses (duplicate execution id, unknown parent) is retried turn by turn
so that only the faulty turn fails, with ``ValidationError(field="execution")``.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import make_url

try:
    import fcntl

    _FLOCK = True
except ImportError:  # Windows: no flock, SQLite's own lock alone (see WriterLock)
    _FLOCK = False

from ._engine import Database
from ._errors import (
    DuplicateRequestError,
    FencedError,
    NotFoundError,
    StoreClosedError,
    StoreError,
    ValidationError,
)
from ._group_commit import GroupCommitter
from ._models import utcnow
from ._observe import METRICS, log
from ._records import TurnReceipt

__all__ = ["EXEC_COLUMNS", "RequestValues", "Turn", "TurnWriter", "make_turn_writer"]

Result = TurnReceipt | None | BaseException
AuditValues = tuple[datetime, str, str, str, str, dict[str, Any]]
"""An ``audit_log`` row: ``(at, actor, action, target, outcome, details)``."""
RequestValues = tuple[str, str, str]
"""A turn's request id: ``(request id, body hash, reply JSON)`` for ``turn_requests``."""
EXEC_COLUMNS = (
    "id", "kind", "status", "agent_name", "function_name", "session_id", "parent_id",
    "started_at", "ended_at", "duration_ms", "tokens_in", "tokens_out", "error", "details",
)  # fmt: skip


@dataclass(slots=True)
class Turn:
    session_id: str | None  # None: no conversation part, only ``audit`` rows
    payloads: list[tuple[str, str]]  # (kind, pydantic-ai JSON) per message
    execution: dict[str, Any] | None  # an executions row, or None
    incarnation: int | None = None  # commit only while the session is at it (None: always)
    audit: Sequence[AuditValues] = ()  # audit rows committed in the same transaction
    request: RequestValues | None = None  # a turn_requests row committed with the turn


class TurnWriter(ABC):
    """Commits turns; ``append`` returns once the turn's transaction committed."""

    integrity_errors: tuple[type[BaseException], ...] = ()

    async def append(self, turn: Turn, *, inline: bool = False) -> TurnReceipt:
        """Commit ``turn`` (with the turns sharing its batch); its receipt, or its error.
        ``inline``: the caller has nothing else to run meanwhile (a hint; see SQLite)."""
        if turn.session_id is None:
            raise ValidationError("session_id", "a turn names its conversation")
        receipt = await self._commit(turn, inline=inline)
        assert receipt is not None
        return receipt

    async def record_audit(self, rows: Sequence[AuditValues]) -> None:
        """Commit audit rows (group-committed with the turns and rows around them)."""
        await self._commit(Turn(None, [], None, audit=rows))

    @abstractmethod
    async def _commit(self, turn: Turn, *, inline: bool = False) -> TurnReceipt | None:
        """Commit ``turn``: its receipt (``None`` for audit rows alone), or its error."""

    async def close(self) -> None:
        """Commit the turns already queued, then release the connection."""
        return None


def make_turn_writer(
    db: Database, *, max_batch: int = 256, inline_commit_ms: float = 2.0
) -> TurnWriter:
    """The writer of ``db``'s engine; ``max_batch=1`` turns group commit off;
    ``inline_commit_ms`` bounds the commits a lone turn makes on the event loop (SQLite)."""
    if db.is_sqlite:
        return SqliteTurnWriter(db, max_batch=max_batch, inline_commit_ms=inline_commit_ms)
    return AsyncpgTurnWriter(db, max_batch=max_batch)


def _receipt(turn: Turn, total: int) -> TurnReceipt:
    count = len(turn.payloads)
    assert turn.session_id is not None
    # Validating four plain fields in pydantic-core costs less than model_construct's Python.
    return TurnReceipt(
        session_id=turn.session_id,
        first_seq=total - count,
        last_seq=total - 1,
        execution_id=None if turn.execution is None else turn.execution["id"],
    )


def _refused(exc: BaseException, turn: Turn | None = None) -> StoreError:
    if turn is not None and turn.request is not None and "turn_requests" in str(exc):
        assert turn.session_id is not None
        return DuplicateRequestError(turn.session_id, turn.request[0])
    return ValidationError("execution", f"refused by the database: {exc}")


def _request_row(turn: Turn, first: int, stamp: Any) -> tuple[Any, ...]:
    """``turn``'s ``turn_requests`` row (``_SQLITE_REQUEST``/``_PG_REQUEST`` parameters)."""
    assert turn.request is not None
    key, body_hash, reply = turn.request
    execution_id = None if turn.execution is None else turn.execution["id"]
    return (turn.session_id, key, body_hash, reply, execution_id, turn.incarnation, first, stamp)


# -- SQLite -----------------------------------------------------------------------------------

_SQLITE_BUMP = (
    "UPDATE conversations SET message_count = message_count + ?, updated_at = ? "
    "WHERE session_id = ? RETURNING id, message_count - ?, incarnation"
)
_SQLITE_EXEC = (
    f"INSERT INTO executions ({', '.join(EXEC_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(EXEC_COLUMNS))})"
)
_SQLITE_MSG = (
    "INSERT INTO messages (conversation_id, seq, kind, payload, execution_id, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
_SQLITE_AUDIT = (
    "INSERT INTO audit_log (at, actor, action, target, outcome, details) VALUES (?, ?, ?, ?, ?, ?)"
)
REQUEST_COLUMNS = (
    "session_id", "request_key", "body_hash", "reply", "execution_id", "epoch", "first_seq",
    "created_at",
)  # fmt: skip
_SQLITE_REQUEST = (
    f"INSERT INTO turn_requests ({', '.join(REQUEST_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(REQUEST_COLUMNS))})"
)
_Item = tuple[Turn, "asyncio.Future[TurnReceipt | None]"]
_MAX_VARIABLES = 30_000  # below SQLite's 32,766 bound parameters per statement


def _insert_rows(conn: sqlite3.Connection, single: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """``single`` (an ``INSERT ... VALUES (?, ...)`` of one row) for every row, as few
    multi-row statements. ``executemany`` steps the statement once per row and each step hands
    the GIL back: under load the writer thread then waits for it again (up to the switch
    interval, 5 ms) once per row, while the batch's callers wait for the commit."""
    if not rows:
        return
    if len(rows) == 1:
        conn.execute(single, rows[0])
        return
    head, _, one = single.rpartition(" VALUES ")
    per = max(1, _MAX_VARIABLES // len(rows[0]))
    for start in range(0, len(rows), per):
        chunk = rows[start : start + per]
        conn.execute(
            f"{head} VALUES {', '.join([one] * len(chunk))}", [v for r in chunk for v in r]
        )


def _set_counts(conn: sqlite3.Connection, counts: Sequence[tuple[int, int]], stamp: str) -> None:
    """Store new message counts ``(conversation id, count)``: one statement (``UPDATE ...
    FROM`` a ``VALUES`` list), one step."""
    per = _MAX_VARIABLES // 2
    for start in range(0, len(counts), per):
        chunk = counts[start : start + per]
        conn.execute(
            f"WITH v(id, c) AS (VALUES {', '.join(['(?, ?)'] * len(chunk))}) "
            "UPDATE conversations SET message_count = v.c, updated_at = ? "
            "FROM v WHERE conversations.id = v.id",
            [*(x for pair in chunk for x in pair), stamp],
        )


_BUSY_CODES = (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED


def _begin_immediate(conn: sqlite3.Connection) -> None:
    """``BEGIN IMMEDIATE``: take the write lock, waiting for another connection (another
    node process of ``serve --nodes``, say) that holds it; the wait is counted
    (``netsuke_store_write_lock_wait_seconds_total``)."""
    t0 = time.perf_counter()
    try:
        conn.execute("BEGIN IMMEDIATE")
    finally:
        waited = time.perf_counter() - t0
        if waited > 0.0005:  # a free lock takes microseconds
            METRICS.lock_waits += 1
            METRICS.lock_wait_seconds += waited


def _sqlite_time(value: Any) -> Any:
    """SQLAlchemy's SQLite DATETIME storage format (naive UTC, always with microseconds)."""
    if value is None:
        return None
    if value.utcoffset():
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat(" ", "microseconds")


def _resolve(batch: list[_Item], results: Sequence[Result]) -> None:
    """On the event loop: hand each waiting caller its own result (a cancelled wait is
    skipped: its turn was committed all the same)."""
    for (_, future), result in zip(batch, results, strict=True):
        if future.done():
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)


def _sqlite_execution(row: dict[str, Any]) -> tuple[Any, ...]:
    """An executions row as ``_SQLITE_EXEC``'s parameters."""
    return (row["id"], row["kind"], row["status"], row["agent_name"], row["function_name"],
            row["session_id"], row["parent_id"], _sqlite_time(row["started_at"]),
            _sqlite_time(row["ended_at"]), row["duration_ms"], row["tokens_in"],
            row["tokens_out"], row["error"], json.dumps(row["details"]))  # fmt: skip


def _sqlite_audit(rows: Sequence[AuditValues]) -> list[tuple[Any, ...]]:
    """Audit rows as ``_SQLITE_AUDIT``'s parameters."""
    return [
        (_sqlite_time(at), actor, action, target, outcome, json.dumps(details))
        for at, actor, action, target, outcome, details in rows
    ]


def _message_rows(
    conversation_id: int, first: int, turn: Turn, execution_id: str | None, stamp: str
) -> list[tuple[Any, ...]]:
    """``_SQLITE_MSG``'s parameters for ``turn``'s messages, from position ``first`` on."""
    return [
        (conversation_id, first + i, kind, payload, execution_id, stamp)
        for i, (kind, payload) in enumerate(turn.payloads)
    ]


def _write_one(turn: Turn, conn: sqlite3.Connection) -> Result:
    """``SqliteTurnWriter._write_sync`` for a batch of one turn (a lone turn, or a quiet
    moment): the same transaction, with no per-batch bookkeeping, because this is the path of
    every turn when a node is not busy; the message count is moved and read in one ``UPDATE
    ... RETURNING`` (a fenced or missing conversation rolls it back), one statement less, and
    each statement hands the GIL back and takes it again on the writer thread. Raises like
    ``_write_sync`` (the caller maps a refusal)."""
    stamp = _sqlite_time(utcnow())
    payloads = turn.payloads
    _begin_immediate(conn)
    try:
        if turn.audit:
            _insert_rows(conn, _SQLITE_AUDIT, _sqlite_audit(turn.audit))
        if turn.session_id is None:
            conn.execute("COMMIT")
            return None
        # the count moves on and is read in one statement (the write lock is held from here)
        found = conn.execute(
            _SQLITE_BUMP, (len(payloads), stamp, turn.session_id, len(payloads))
        ).fetchall()
        if not found:
            conn.execute("ROLLBACK")
            return NotFoundError("conversation", turn.session_id)
        conversation_id, first, current = found[0]
        if turn.incarnation is not None and turn.incarnation != current:
            conn.execute("ROLLBACK")  # the count moves back
            return FencedError(turn.session_id, turn.incarnation, current)
        row = turn.execution
        execution_id = None
        if row is not None:
            execution_id = row["id"]
            conn.execute(_SQLITE_EXEC, _sqlite_execution(row))
        if payloads:
            _insert_rows(
                conn, _SQLITE_MSG, _message_rows(conversation_id, first, turn, execution_id, stamp)
            )
        if turn.request is not None:
            conn.execute(_SQLITE_REQUEST, _request_row(turn, first, stamp))
        total = first + len(payloads)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return _receipt(turn, total)


class WriterLock:
    """The turn writers' lock across processes on one SQLite file (``serve --nodes``): an
    ``flock`` on the side file ``<database>-lock``, taken before ``BEGIN IMMEDIATE`` and
    released after ``COMMIT``.

    SQLite's own lock already serialises the writers; this one only makes the wait short.
    A writer that finds SQLite's lock taken sleeps in SQLite's busy handler for 1, 2, 5, 10,
    15, 20, 25 ms and so on, however soon the lock is free again; a writer waiting here looks
    again every ``POLL`` seconds (one system call), so it commits within ``POLL`` of the other
    process's commit, and its batch has grown meanwhile (the writer thread takes the turns
    waiting only once it holds this lock). Not a blocking ``flock``: a process stopped while
    holding it (``SIGSTOP``) must not hang the others; past ``timeout`` (the busy timeout, at
    most ``MAX_WAIT``) a writer goes on without it (SQLite's lock and busy timeout then decide,
    as before), and so do its next commits for ``SKIP`` seconds unless the lock is free at
    once. A process that dies releases it (its descriptor closes). A file that cannot be
    opened (a read-only folder): no lock, logged once."""

    POLL = 0.0005
    MAX_WAIT = 1.0
    SKIP = 5.0

    def __init__(self, database: str, timeout: float) -> None:
        self.path = f"{database}-lock"
        self.timeout = min(timeout, self.MAX_WAIT)
        self._fd: int | None = None
        self._unusable = False
        self._skip_until = 0.0

    def _descriptor(self) -> int | None:
        if not _FLOCK:
            return None
        if self._fd is None and not self._unusable:
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                self._unusable = True
                log.warning("store.writer_lock_unusable", path=self.path, error=str(exc))
        return self._fd

    def acquire(self, *, wait: bool = True) -> bool:
        """Take the lock: True once held (or when there is no lock file), False when another
        process holds it and ``wait`` is false, or past ``timeout``. Counts the wait."""
        fd = self._descriptor()
        if fd is None:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if not wait or time.perf_counter() < self._skip_until:
                return False
        t0 = time.perf_counter()
        deadline = t0 + self.timeout
        try:
            while True:
                time.sleep(self.POLL)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return True
                except BlockingIOError:
                    if time.perf_counter() >= deadline:
                        self._skip_until = time.perf_counter() + self.SKIP
                        log.warning("store.writer_lock_timeout", path=self.path)
                        return False
        finally:
            METRICS.lock_waits += 1
            METRICS.lock_wait_seconds += time.perf_counter() - t0

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class SqliteTurnWriter(TurnWriter):
    integrity_errors = (sqlite3.IntegrityError,)

    def __init__(
        self, db: Database, *, max_batch: int = 256, inline_commit_ms: float = 2.0
    ) -> None:
        database = make_url(db.url).database or ""
        if not database or database == ":memory:":
            raise ValidationError("url", "the store needs a SQLite file, not an in-memory one")
        self._path = database
        self._synchronous = db.sqlite_synchronous
        self._busy_ms = db.busy_timeout_ms
        self._max_batch = max(1, max_batch)
        self._conn: sqlite3.Connection | None = None  # the writer thread's
        self._inline_conn: sqlite3.Connection | None = None  # busy timeout 0, see _write_inline
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Future[None] | None = None
        self._closed = False
        # Two connections, one lock: a thread commit and an inline one never overlap.
        self._lock = threading.Lock()
        # and one lock for the writers of other processes on the same file (WriterLock)
        self._file_lock = WriterLock(database, self._busy_ms / 1000.0)
        self._pending = 0  # turns handed to the thread and not yet resolved
        self._inline_limit = max(0.0, inline_commit_ms) / 1000.0
        self._commit_avg = 0.0  # moving average of a commit's wall time, in seconds

    @property
    def commit_seconds(self) -> float:
        """The moving average of a commit's wall time (what decides inline commits)."""
        return self._commit_avg

    def _observe(self, seconds: float) -> None:
        self._commit_avg += (seconds - self._commit_avg) * 0.2

    async def _commit(self, turn: Turn, *, inline: bool = False) -> TurnReceipt | None:
        # Once queued, the turn is committed even if the caller stops waiting.
        if self._closed:
            raise StoreClosedError("the store is closed")
        if (
            inline
            and not self._pending
            and self._inline_limit > 0.0
            and self._commit_avg <= self._inline_limit
            and self._lock.acquire(blocking=False)
        ):
            try:
                t0 = time.perf_counter()
                result = self._write_inline(turn)
                if result is not None:
                    self._observe(time.perf_counter() - t0)
            finally:
                self._lock.release()
            if result is not None:
                METRICS.inline_commits += 1
                if isinstance(result, BaseException):
                    raise result
                return result
            # Another connection holds the write lock (its transaction may be driven by this
            # very event loop): the thread waits for it instead, with the busy timeout.
            METRICS.inline_busy += 1
        loop = asyncio.get_running_loop()
        future: asyncio.Future[TurnReceipt | None] = loop.create_future()
        if self._thread is None:
            self._start(loop)
        self._pending += 1
        self._queue.put((turn, future))
        return await future

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._stopped = loop.create_future()
        self._thread = threading.Thread(
            target=self._serve, args=(loop, self._stopped), name="netsuke-sqlite-turns", daemon=True
        )
        self._thread.start()

    def _serve(self, loop: asyncio.AbstractEventLoop, stopped: asyncio.Future[None]) -> None:
        """The writer thread: commit what is waiting, batch after batch, until told to stop."""
        q = self._queue
        limit = self._max_batch
        running = True
        try:
            while running:
                first = q.get()
                if first is None:
                    break
                batch: list[_Item] = [first]
                with self._lock:
                    if self._conn is None:
                        self._conn = self._connect(busy_ms=self._busy_ms)
                    held = self._file_lock.acquire()
                    try:
                        # the turns that came while another process committed join this batch
                        while len(batch) < limit:
                            try:
                                item = q.get_nowait()
                            except queue.Empty:
                                break
                            if item is None:
                                running = False
                                break
                            batch.append(item)
                        t0 = time.perf_counter()
                        results = self._write_batch([turn for turn, _ in batch], self._conn)
                        self._observe(time.perf_counter() - t0)
                    finally:
                        if held:
                            self._file_lock.release()
                self._post(batch[0][1].get_loop(), self._resolve, batch, results)
        finally:
            with self._lock:
                self._close_connections()
            self._post(loop, _set_none, stopped)

    def _close_connections(self) -> None:
        for conn in (self._conn, self._inline_conn):
            if conn is not None:
                conn.close()
        self._conn = self._inline_conn = None
        self._file_lock.close()

    def _resolve(self, batch: list[_Item], results: Sequence[Result]) -> None:
        self._pending -= len(batch)
        _resolve(batch, results)

    @staticmethod
    def _post(loop: asyncio.AbstractEventLoop, fn: Any, *args: Any) -> None:
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    def _write_inline(self, turn: Turn) -> Result | None:
        """Commit ``turn`` on the calling (event loop) thread, or ``None`` when the database is
        busy. This connection never waits for a lock (busy timeout 0): the writer holding it
        may be an ``aiosqlite`` transaction that only the blocked event loop could finish."""
        if self._inline_conn is None:
            self._inline_conn = self._connect(busy_ms=0)
        if not self._file_lock.acquire(wait=False):  # another process commits: not here
            return None
        try:
            result = self._write_batch([turn], self._inline_conn)[0]
        finally:
            self._file_lock.release()
        if (
            isinstance(result, sqlite3.OperationalError)
            and getattr(result, "sqlite_errorcode", None) in _BUSY_CODES
        ):
            return None  # rolled back by _write_sync: nothing was written
        return result

    def _write_batch(self, turns: list[Turn], conn: sqlite3.Connection) -> list[Result]:
        """One transaction for ``turns`` on ``conn``; a refused batch is retried turn by turn
        so that one bad turn does not fail its neighbours. Never raises."""
        try:
            results = self._write_sync(turns, conn)
        except sqlite3.IntegrityError as exc:
            if len(turns) == 1:
                return [_refused(exc, turns[0])]
            out: list[Result] = []
            for turn in turns:
                out.extend(self._write_batch([turn], conn))
            return out
        except Exception as exc:
            return [exc] * len(turns)
        METRICS.turns_committed += sum([type(r) is TurnReceipt for r in results])
        METRICS.commit_batches += 1
        return results

    def _connect(self, *, busy_ms: float) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self._path, isolation_level=None, check_same_thread=False, timeout=busy_ms / 1000.0
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        return conn

    def _write_sync(self, turns: list[Turn], conn: sqlite3.Connection) -> list[Result]:
        """One transaction for the batch, in four statements whatever its size: read the
        message counts of its conversations, then insert executions and messages and store the
        new counts with ``executemany``. ``BEGIN IMMEDIATE`` holds the write lock from the
        read on, so no other writer can move a count in between."""
        if len(turns) == 1:
            return [_write_one(turns[0], conn)]
        stamp = _sqlite_time(utcnow())
        results: list[Result] = []
        executions: list[tuple[Any, ...]] = []
        messages: list[tuple[Any, ...]] = []
        audit: list[tuple[Any, ...]] = []
        requests: list[tuple[Any, ...]] = []
        sessions = list({turn.session_id: None for turn in turns if turn.session_id is not None})
        _begin_immediate(conn)
        try:
            counts: dict[str, list[int]] = {}
            current: dict[str, int] = {}
            if sessions:
                # one row (a JSON array), so one step: see _insert_rows
                found = conn.execute(
                    "SELECT json_group_array(json_array(session_id, id, message_count, "
                    "incarnation)) FROM conversations "
                    f"WHERE session_id IN ({', '.join('?' * len(sessions))})",
                    sessions,
                ).fetchone()[0]
                for session_id, conversation_id, count, incarnation in json.loads(found):
                    counts[session_id] = [conversation_id, count]
                    current[session_id] = incarnation
            for turn in turns:
                if turn.session_id is None:
                    audit.extend(_sqlite_audit(turn.audit))
                    results.append(None)
                    continue
                found = counts.get(turn.session_id)
                if found is None:
                    results.append(NotFoundError("conversation", turn.session_id))
                    continue
                if turn.incarnation is not None and turn.incarnation != current[turn.session_id]:
                    results.append(
                        FencedError(turn.session_id, turn.incarnation, current[turn.session_id])
                    )
                    continue
                conversation_id, first = found
                found[1] = total = first + len(turn.payloads)
                execution_id = None
                if turn.execution is not None:
                    execution_id = turn.execution["id"]
                    executions.append(_sqlite_execution(turn.execution))
                messages.extend(_message_rows(conversation_id, first, turn, execution_id, stamp))
                if turn.request is not None:
                    requests.append(_request_row(turn, first, stamp))
                if turn.audit:
                    audit.extend(_sqlite_audit(turn.audit))
                results.append(_receipt(turn, total))
            _insert_rows(conn, _SQLITE_AUDIT, audit)
            _insert_rows(conn, _SQLITE_EXEC, executions)
            _insert_rows(conn, _SQLITE_MSG, messages)
            _insert_rows(conn, _SQLITE_REQUEST, requests)
            if counts:
                _set_counts(
                    conn,
                    [(conversation_id, count) for conversation_id, count in counts.values()],
                    stamp,
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return results

    async def close(self) -> None:
        self._closed = True
        if self._thread is None or self._stopped is None:
            with self._lock:  # only inline commits used a connection
                self._close_connections()
            return
        self._queue.put(None)  # stop, after what is queued
        if self._stopped.get_loop() is asyncio.get_running_loop():
            await asyncio.shield(self._stopped)
        await asyncio.to_thread(self._thread.join)
        self._thread = None


def _set_none(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


# -- PostgreSQL -------------------------------------------------------------------------------

_PG_BUMP = (
    "UPDATE conversations SET message_count = message_count + $1, updated_at = $2 "
    "WHERE session_id = $3 RETURNING id, message_count"
)
_PG_BUMP_FENCED = (
    "UPDATE conversations SET message_count = message_count + $1, updated_at = $2 "
    "WHERE session_id = $3 AND incarnation = $4 RETURNING id, message_count"
)
_PG_INCARNATION = "SELECT incarnation FROM conversations WHERE session_id = $1"
_PG_EXEC = (
    f"INSERT INTO executions ({', '.join(EXEC_COLUMNS)}) VALUES "
    f"({', '.join(f'${i + 1}' for i in range(len(EXEC_COLUMNS) - 1))}, "
    f"${len(EXEC_COLUMNS)}::jsonb)"
)
_PG_AUDIT = (
    "INSERT INTO audit_log (at, actor, action, target, outcome, details) "
    "VALUES ($1, $2, $3, $4, $5, $6::jsonb)"
)
_PG_MSG = (
    "INSERT INTO messages (conversation_id, seq, kind, payload, execution_id, created_at) "
    "VALUES ($1, $2, $3, $4, $5, $6)"
)
_PG_REQUEST = (
    f"INSERT INTO turn_requests ({', '.join(REQUEST_COLUMNS)}) "
    f"VALUES ({', '.join(f'${i + 1}' for i in range(len(REQUEST_COLUMNS)))})"
)


def _pg_audit(rows: Sequence[AuditValues]) -> Iterator[tuple[Any, ...]]:
    return (
        (at, actor, action, target, outcome, json.dumps(details))
        for at, actor, action, target, outcome, details in rows
    )


class AsyncpgTurnWriter(TurnWriter):
    def __init__(self, db: Database, *, max_batch: int = 256) -> None:
        import asyncpg

        self._db = db
        self.integrity_errors = (asyncpg.IntegrityConstraintViolationError,)
        self._committer: GroupCommitter[Turn, TurnReceipt | None] | None = (
            GroupCommitter(self.write, max_batch=max_batch) if max_batch > 1 else None
        )

    async def _commit(self, turn: Turn, *, inline: bool = False) -> TurnReceipt | None:
        if self._committer is not None:
            return await self._committer.submit(turn)
        result = (await self.write([turn]))[0]
        if isinstance(result, BaseException):
            raise result
        return result

    async def close(self) -> None:
        if self._committer is not None:
            await self._committer.close()

    async def write(self, turns: Sequence[Turn]) -> list[Result]:
        """Commit ``turns`` in one transaction; one result (receipt or error) per turn."""
        try:
            results = await self._write_once(turns)
        except self.integrity_errors as exc:
            if len(turns) == 1:
                return [_refused(exc, turns[0])]
            out: list[Result] = []
            for turn in turns:  # one bad turn must not fail its neighbours
                out.extend(await self.write([turn]))
            return out
        except Exception as exc:
            return [exc] * len(turns)
        METRICS.turns_committed += sum(1 for r in results if isinstance(r, TurnReceipt))
        METRICS.commit_batches += 1
        return results

    async def _write_once(self, turns: Sequence[Turn]) -> list[Result]:
        # A cancelled caller must not cancel a transaction half-way: finish it regardless.
        return await asyncio.shield(self._transaction(turns))

    async def _transaction(self, turns: Sequence[Turn]) -> list[Result]:
        now = utcnow()
        results: list[Result] = []
        executions: list[tuple[Any, ...]] = []
        messages: list[tuple[Any, ...]] = []
        audit: list[tuple[Any, ...]] = []
        requests: list[tuple[Any, ...]] = []
        async with self._db.driver() as conn, conn.transaction():
            for turn in turns:
                if turn.session_id is None:
                    audit.extend(_pg_audit(turn.audit))
                    results.append(None)
                    continue
                count = len(turn.payloads)
                inc = turn.incarnation
                if inc is None:
                    found = await conn.fetchrow(_PG_BUMP, count, now, turn.session_id)
                else:  # the fence is the UPDATE's own condition: no extra round trip
                    found = await conn.fetchrow(_PG_BUMP_FENCED, count, now, turn.session_id, inc)
                if found is None:  # the rare path: tell a missing session from a fenced turn
                    cur = None
                    if inc is not None:
                        cur = await conn.fetchval(_PG_INCARNATION, turn.session_id)
                    results.append(
                        NotFoundError("conversation", turn.session_id)
                        if cur is None
                        else FencedError(turn.session_id, inc or 0, cur)
                    )
                    continue
                conversation_id, total = found
                execution_id = None
                if turn.execution is not None:
                    row = turn.execution
                    execution_id = row["id"]
                    executions.append(
                        (*[row[c] for c in EXEC_COLUMNS[:-1]], json.dumps(row["details"]))
                    )
                first = total - count
                for i, (kind, payload) in enumerate(turn.payloads):
                    messages.append((conversation_id, first + i, kind, payload, execution_id, now))
                if turn.request is not None:
                    requests.append(_request_row(turn, first, now))
                audit.extend(_pg_audit(turn.audit))  # exactly when the turn commits
                results.append(_receipt(turn, total))
            if audit:
                await conn.executemany(_PG_AUDIT, audit)
            if executions:
                await conn.executemany(_PG_EXEC, executions)
            if messages:
                await conn.executemany(_PG_MSG, messages)
            if requests:
                await conn.executemany(_PG_REQUEST, requests)
        return results
