"""Executions: agent turns, function calls and tasks, linked into chains by ``parent_id``.

``record`` and ``start`` insert a row and ``finish`` closes one; each is durable on return.
Agent turns are usually written by ``ConversationRepository.append_turn`` together with the
turn's messages, in the same transaction.
"""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Any

from sqlalchemy import Table, insert, literal, select, text, update
from sqlalchemy.exc import IntegrityError

from ._engine import Database
from ._errors import NotFoundError, ValidationError
from ._models import NOT_SUCCEEDED, Base, utcnow
from ._observe import operation
from ._records import Execution, ExecutionKind, ExecutionStatus, Page
from ._validation import check_limit

__all__ = ["ExecutionRepository"]

_executions: Table = Base.metadata.tables["executions"]
_FINAL = ("succeeded", "failed", "cancelled")


class ExecutionRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def record(self, execution: Execution) -> Execution:
        """Insert an execution as given (finished or not). ``ValidationError`` for a duplicate
        id or an unknown ``parent_id``."""
        with operation("executions", "record", kind=execution.kind):
            try:
                async with self._db.write() as conn:
                    await conn.execute(insert(_executions).values(**execution.model_dump()))
            except IntegrityError as exc:
                raise ValidationError("execution", f"refused by the database: {exc.orig}") from None
        return execution

    async def start(
        self,
        kind: ExecutionKind,
        *,
        agent_name: str | None = None,
        function_name: str | None = None,
        session_id: str | None = None,
        parent_id: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> Execution:
        """Insert a ``running`` execution started now."""
        return await self.record(
            Execution(
                kind=kind,
                status="running",
                agent_name=agent_name,
                function_name=function_name,
                session_id=session_id,
                parent_id=parent_id,
                details=details or {},
            )
        )

    async def finish(
        self,
        execution_id: str,
        *,
        status: ExecutionStatus,
        tokens_in: int | None = None,
        tokens_out: int | None = None,
        error: str | None = None,
        ended_at: datetime | None = None,
    ) -> Execution:
        """Close a running execution: status, end time, duration, tokens, error."""
        if status not in _FINAL:
            raise ValidationError("status", f"a finished execution is one of {', '.join(_FINAL)}")
        with operation("executions", "finish", execution_id=execution_id):
            async with self._db.write() as conn:
                row = (
                    (
                        await conn.execute(
                            select(_executions).where(_executions.c.id == execution_id)
                        )
                    )
                    .mappings()
                    .first()
                )
                if row is None:
                    raise NotFoundError("execution", execution_id)
                ended = ended_at or utcnow()
                values: dict[str, Any] = {
                    "status": status,
                    "ended_at": ended,
                    "duration_ms": (ended - row["started_at"]).total_seconds() * 1000.0,
                    "error": error,
                }
                if tokens_in is not None:
                    values["tokens_in"] = tokens_in
                if tokens_out is not None:
                    values["tokens_out"] = tokens_out
                await conn.execute(
                    update(_executions).where(_executions.c.id == execution_id).values(**values)
                )
        return Execution.model_validate({**dict(row), **values})

    async def get(self, execution_id: str) -> Execution:
        async with self._db.read() as conn:
            row = (
                (await conn.execute(select(_executions).where(_executions.c.id == execution_id)))
                .mappings()
                .first()
            )
        if row is None:
            raise NotFoundError("execution", execution_id)
        return Execution.model_validate(dict(row))

    async def list(
        self,
        *,
        kind: ExecutionKind | None = None,
        status: ExecutionStatus | None = None,
        agent_name: str | None = None,
        session_id: str | None = None,
        parent_id: str | None = None,
        function_name: str | None = None,
        since: datetime | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> Page[Execution]:
        """Executions newest first (by start), filtered; ``next_cursor`` is the next offset."""
        limit = check_limit(limit)
        if offset < 0:
            raise ValidationError("offset", "must be >= 0")
        stmt = (
            select(_executions)
            .order_by(_executions.c.started_at.desc(), _executions.c.id)
            .limit(limit + 1)
            .offset(offset)
        )
        for column, value in (
            ("kind", kind),
            ("status", status),
            ("agent_name", agent_name),
            ("session_id", session_id),
            ("parent_id", parent_id),
            ("function_name", function_name),
        ):
            if value is not None:
                stmt = stmt.where(_executions.c[column] == value)
        if status is not None and status != "succeeded":
            stmt = stmt.where(text(NOT_SUCCEEDED))  # lets SQLite use the partial index
        if since is not None:
            stmt = stmt.where(_executions.c.started_at >= since)
        with operation("executions", "list"):
            async with self._db.read() as conn:
                rows = (await conn.execute(stmt)).mappings().all()
        items = [Execution.model_validate(dict(r)) for r in rows[:limit]]
        return Page(items=items, next_cursor=str(offset + limit) if len(rows) > limit else None)

    async def chain(self, root_id: str) -> builtins.list[Execution]:
        """The execution ``root_id`` and every execution below it, parents before children."""
        tree = (
            select(_executions.c.id, literal(0).label("depth"))
            .where(_executions.c.id == root_id)
            .cte("tree", recursive=True)
        )
        tree = tree.union_all(
            select(_executions.c.id, (tree.c.depth + 1).label("depth")).join(
                tree, _executions.c.parent_id == tree.c.id
            )
        )
        stmt = (
            select(_executions)
            .join(tree, tree.c.id == _executions.c.id)
            .order_by(tree.c.depth, _executions.c.started_at, _executions.c.id)
        )
        with operation("executions", "chain"):
            async with self._db.read() as conn:
                rows = (await conn.execute(stmt)).mappings().all()
        if not rows:
            raise NotFoundError("execution", root_id)
        return [Execution.model_validate(dict(r)) for r in rows]
