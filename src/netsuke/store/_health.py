"""Whether the store can take writes: the reason an error means "unavailable", and a probe.

``unavailable_reason(exc)`` names why a database error means the store cannot take writes now
(the caller should answer "retry later", not "bug"):

* ``"locked"``: another connection held the write lock past the busy timeout (SQLite
  ``database is locked``/``busy``; PostgreSQL lock timeouts and serialisation failures);
* ``"full"``: the disk or the database is full (SQLite ``database or disk is full``,
  PostgreSQL ``disk_full``);
* ``"read-only"``: the file, its folder or the server is read-only;
* ``"io"``: the operating system failed a read or write (``disk I/O error``);
* ``None``: anything else (a bug or a refusal, not unavailability).

The exception may be the driver's (``sqlite3.OperationalError``, asyncpg's), SQLAlchemy's
wrapper of it, or any error caused by one (``__cause__``/``__context__`` are followed).

``probe_writable(db, min_free_bytes=...)`` checks what a write needs, without writing: on
SQLite, a fresh connection takes the write lock (``BEGIN IMMEDIATE``, waiting at most
``timeout_s``) and releases it (``ROLLBACK``), and the file system of the database has at
least ``min_free_bytes`` free; on PostgreSQL, the server is not read-only. It returns
``None`` when writable, else the reason as above.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url

from ._engine import Database

__all__ = ["probe_writable", "unavailable_reason"]

_SQLITE_REASONS = (
    ("locked", ("database is locked", "database table is locked", "database is busy")),
    ("full", ("database or disk is full", "disk is full")),
    ("read-only", ("readonly database", "read-only", "read only")),
    ("io", ("disk i/o error", "unable to open database file")),
)
# PostgreSQL SQLSTATEs: lock_not_available, deadlock_detected, serialization_failure,
# disk_full, read_only_sql_transaction, admin/crash shutdown, cannot_connect_now.
_PG_STATES = {
    "55P03": "locked",
    "40P01": "locked",
    "40001": "locked",
    "53100": "full",
    "25006": "read-only",
    "57P01": "io",
    "57P02": "io",
    "57P03": "io",
}


def _reason_of(exc: BaseException) -> str | None:
    state = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    if isinstance(state, str) and state in _PG_STATES:
        return _PG_STATES[state]
    if isinstance(exc, sqlite3.OperationalError | sqlite3.DatabaseError) or (
        type(exc).__name__ in ("OperationalError", "DatabaseError")
    ):
        message = str(exc).lower()
        for reason, needles in _SQLITE_REASONS:
            if any(needle in message for needle in needles):
                return reason
    return None


def unavailable_reason(exc: BaseException) -> str | None:
    """Why ``exc`` means the store cannot take writes now, or ``None`` (module docs)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        reason = _reason_of(current)
        if reason is not None:
            return reason
        orig = getattr(current, "orig", None)  # SQLAlchemy's DBAPIError wraps the driver's
        if isinstance(orig, BaseException) and id(orig) not in seen:
            reason = _reason_of(orig)
            if reason is not None:
                return reason
        current = current.__cause__ or current.__context__
    return None


def _sqlite_probe(path: str, timeout_s: float, min_free_bytes: int) -> str | None:
    try:
        conn = sqlite3.connect(path, timeout=timeout_s, isolation_level=None)
    except sqlite3.Error as exc:
        return unavailable_reason(exc) or "io"
    try:
        conn.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
    except sqlite3.Error as exc:
        return unavailable_reason(exc) or "io"
    finally:
        conn.close()
    folder = Path(path).expanduser().resolve().parent
    if not os.access(folder, os.W_OK):
        return "read-only"
    try:
        stats = os.statvfs(folder)
    except OSError:
        return "io"
    if stats.f_flag & os.ST_RDONLY:
        return "read-only"
    if stats.f_bavail * stats.f_frsize < min_free_bytes:
        return "full"
    return None


async def probe_writable(
    db: Database, *, timeout_s: float = 1.0, min_free_bytes: int = 16 * 1024 * 1024
) -> str | None:
    """``None`` when the store can take a write now, else why not (see the module docs)."""
    if db.is_sqlite:
        path = make_url(db.url).database or ""
        return await asyncio.to_thread(_sqlite_probe, path, timeout_s, min_free_bytes)
    try:
        async with db.read() as conn:
            readonly = (await conn.execute(text("SHOW transaction_read_only"))).scalar()
    except Exception as exc:
        return unavailable_reason(exc) or "io"
    return "read-only" if readonly == "on" else None
