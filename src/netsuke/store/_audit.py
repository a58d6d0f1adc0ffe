"""The audit log: who did what to which target, when, and with what outcome.

Definition changes are audited by their repositories in the same transaction as the change,
so an audit row exists exactly when the change does. Other layers (API, CLI) record their own
events with ``AuditRepository.record``, durable on return; a write that has its own hot path
takes its audit rows along into its transaction (``audit_values`` builds one: a turn's
``append_turn_row(..., audit=)``, a task's draft ``with_audit``).

``record`` goes through the store's turn writer (its group commit): concurrent records share
one commit with each other and with the conversation turns committed meanwhile, and on SQLite
they take the writer's connection instead of contending with it for the database lock.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from ._engine import Database
from ._errors import ValidationError
from ._models import Base, utcnow
from ._observe import operation
from ._records import AuditEntry, Page
from ._turn_writers import AuditValues, TurnWriter
from ._validation import check_limit

__all__ = ["AuditRepository", "AuditValues", "audit_values", "write_audit"]

_audit: Table = Base.metadata.tables["audit_log"]
SYSTEM = "system"
_OUTCOMES = frozenset({"ok", "refused", "denied", "error"})


def audit_values(
    *,
    actor: str | None,
    action: str,
    target: str,
    outcome: str = "ok",
    details: dict[str, Any] | None = None,
) -> AuditValues:
    """One checked audit row, to commit with a write of its own (see the module docs).
    ``ValidationError`` for an empty or too long ``action`` or an unknown ``outcome``."""
    if not action or len(action) > 64:
        raise ValidationError("action", "must be 1..64 characters")
    if outcome not in _OUTCOMES:
        raise ValidationError("outcome", "one of ok, refused, denied, error")
    return (utcnow(), actor or SYSTEM, action, target[:300], outcome, details or {})


async def write_audit(
    conn: AsyncConnection,
    *,
    actor: str | None,
    action: str,
    target: str,
    outcome: str = "ok",
    details: dict[str, Any] | None = None,
) -> None:
    """Insert one audit row inside the caller's transaction."""
    await conn.execute(
        insert(_audit).values(
            at=utcnow(),
            actor=actor or SYSTEM,
            action=action,
            target=target,
            outcome=outcome,
            details=details or {},
        )
    )


class AuditRepository:
    """Append-only audit log with filtered, newest-first listing."""

    def __init__(self, db: Database, writer: TurnWriter) -> None:
        self._db = db
        self._writer = writer

    async def record(
        self,
        *,
        actor: str | None,
        action: str,
        target: str,
        outcome: str = "ok",
        details: dict[str, Any] | None = None,
    ) -> None:
        """Append an entry. Durable on return (committed, group-committed with others)."""
        row = audit_values(
            actor=actor, action=action, target=target, outcome=outcome, details=details
        )
        with operation("audit", "record", action=action, target=target):
            await self._writer.record_audit((row,))

    async def write(self, rows: Sequence[AuditValues]) -> None:
        """Append rows made by ``audit_values``, in one transaction. Durable on return."""
        with operation("audit", "record", count=len(rows)):
            await self._writer.record_audit(rows)

    async def list(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        target: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[AuditEntry]:
        """Entries newest first; filters are exact matches (``since`` inclusive)."""
        limit = check_limit(limit)
        stmt = select(_audit).order_by(_audit.c.id.desc()).limit(limit + 1)
        if actor is not None:
            stmt = stmt.where(_audit.c.actor == actor)
        if action is not None:
            stmt = stmt.where(_audit.c.action == action)
        if target is not None:
            stmt = stmt.where(_audit.c.target == target)
        if since is not None:
            stmt = stmt.where(_audit.c.at >= since)
        if cursor is not None:
            if not cursor.isdigit():
                raise ValidationError("cursor", "not a cursor returned by this listing")
            stmt = stmt.where(_audit.c.id < int(cursor))
        with operation("audit", "list"):
            async with self._db.read() as conn:
                rows = (await conn.execute(stmt)).mappings().all()
        items = [AuditEntry.model_validate(dict(r)) for r in rows[:limit]]
        next_cursor = str(items[-1].id) if len(rows) > limit else None
        return Page(items=items, next_cursor=next_cursor)
