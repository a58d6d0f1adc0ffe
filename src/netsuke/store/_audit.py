"""The audit log: who did what to which target, when, and with what outcome.

Definition changes are audited by their repositories in the same transaction as the change,
so an audit row exists exactly when the change does. Other layers (API, CLI) record their own
events with ``AuditRepository.record``, durable on return.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Table, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from ._engine import Database
from ._errors import ValidationError
from ._models import Base, utcnow
from ._observe import operation
from ._records import AuditEntry, Page
from ._validation import check_limit

__all__ = ["AuditRepository", "write_audit"]

_audit: Table = Base.metadata.tables["audit_log"]
SYSTEM = "system"


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

    def __init__(self, db: Database) -> None:
        self._db = db

    async def record(
        self,
        *,
        actor: str | None,
        action: str,
        target: str,
        outcome: str = "ok",
        details: dict[str, Any] | None = None,
    ) -> None:
        """Append an entry. Durable on return (committed)."""
        if not action or len(action) > 64:
            raise ValidationError("action", "must be 1..64 characters")
        if outcome not in ("ok", "refused", "denied", "error"):
            raise ValidationError("outcome", "one of ok, refused, denied, error")
        with operation("audit", "record", action=action, target=target):
            async with self._db.write() as conn:
                await write_audit(
                    conn,
                    actor=actor,
                    action=action,
                    target=target,
                    outcome=outcome,
                    details=details,
                )

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
