"""Workflow runs and their steps, so a run resumes after a crash without redoing finished steps.

A run row names its workflow, its input and its step names; one row per step holds the step's
status, attempts, output (JSON) and error. ``start_step``/``finish_step`` each commit before they
return: a step recorded ``succeeded`` is never run again by a resumed run.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Table, insert, select, update

from ._engine import Database
from ._errors import NotFoundError, ValidationError
from ._ids import new_id
from ._models import Base
from ._observe import operation

__all__ = [
    "RunStatus",
    "StepStatus",
    "WorkflowRepository",
    "WorkflowRunRecord",
    "WorkflowStepRecord",
]

_runs: Table = Base.metadata.tables["workflow_runs"]
_steps: Table = Base.metadata.tables["workflow_steps"]
RunStatus = Literal["running", "succeeded", "failed"]
StepStatus = Literal["pending", "running", "succeeded", "failed"]


class WorkflowStepRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    step: str
    status: StepStatus
    attempts: int
    output: Any = None
    error: str | None
    started_at: datetime | None
    finished_at: datetime | None


class WorkflowRunRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    workflow: str
    status: RunStatus
    input: Any = None
    steps: dict[str, WorkflowStepRecord]
    error: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


class WorkflowRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self,
        workflow: str,
        steps: Sequence[str],
        *,
        input: Any,
        now: datetime,
        run_id: str | None = None,
    ) -> WorkflowRunRecord:
        """Insert a ``running`` run with every step ``pending``. ``ValidationError`` when
        ``run_id`` is taken."""
        rid = run_id or new_id()
        with operation("workflows", "create", workflow=workflow):
            async with self._db.write() as conn:
                taken = (await conn.execute(select(_runs.c.id).where(_runs.c.id == rid))).first()
                if taken is not None:
                    raise ValidationError("run_id", f"a workflow run {rid!r} exists")
                await conn.execute(
                    insert(_runs).values(
                        id=rid,
                        workflow=workflow,
                        status="running",
                        input=input,
                        steps=list(steps),
                        error=None,
                        created_at=now,
                        updated_at=now,
                        finished_at=None,
                    )
                )
                await conn.execute(
                    insert(_steps),
                    [
                        {
                            "run_id": rid,
                            "step": s,
                            "status": "pending",
                            "attempts": 0,
                            "output": None,
                            "error": None,
                            "started_at": None,
                            "finished_at": None,
                        }
                        for s in steps
                    ],
                )
        return await self.get(rid)

    async def get(self, run_id: str) -> WorkflowRunRecord:
        async with self._db.read() as conn:
            run = (await conn.execute(select(_runs).where(_runs.c.id == run_id))).mappings().first()
            if run is None:
                raise NotFoundError("workflow run", run_id)
            rows = (
                (await conn.execute(select(_steps).where(_steps.c.run_id == run_id)))
                .mappings()
                .all()
            )
        steps = {r["step"]: WorkflowStepRecord.model_validate(dict(r)) for r in rows}
        data = dict(run)
        data["steps"] = {name: steps[name] for name in data["steps"] if name in steps}
        return WorkflowRunRecord.model_validate(data)

    async def list(
        self, *, status: RunStatus | None = None, workflow: str | None = None
    ) -> builtins.list[str]:
        """Run ids, oldest first, filtered by status and workflow name."""
        stmt = select(_runs.c.id).order_by(_runs.c.created_at, _runs.c.id)
        if status is not None:
            stmt = stmt.where(_runs.c.status == status)
        if workflow is not None:
            stmt = stmt.where(_runs.c.workflow == workflow)
        async with self._db.read() as conn:
            return list((await conn.execute(stmt)).scalars())

    async def start_step(self, run_id: str, step: str, *, now: datetime) -> int:
        """Mark a step ``running`` and count an attempt; returns the attempt number."""
        with operation("workflows", "start_step", run_id=run_id, step=step):
            async with self._db.write() as conn:
                res = await conn.execute(
                    update(_steps)
                    .where(_steps.c.run_id == run_id, _steps.c.step == step)
                    .values(status="running", attempts=_steps.c.attempts + 1, started_at=now)
                    .returning(_steps.c.attempts)
                )
                attempts = res.scalar_one_or_none()
        if attempts is None:
            raise NotFoundError("workflow step", f"{run_id}/{step}")
        return int(attempts)

    async def finish_step(
        self,
        run_id: str,
        step: str,
        *,
        status: Literal["succeeded", "failed", "pending"],
        output: Any = None,
        error: str | None = None,
        now: datetime,
    ) -> None:
        """Record a step's outcome (``pending`` puts it back for a retry)."""
        with operation("workflows", "finish_step", run_id=run_id, step=step):
            async with self._db.write() as conn:
                await conn.execute(
                    update(_steps)
                    .where(_steps.c.run_id == run_id, _steps.c.step == step)
                    .values(
                        status=status,
                        output=output,
                        error=error,
                        finished_at=None if status == "pending" else now,
                    )
                )

    async def finish(
        self, run_id: str, *, status: RunStatus, error: str | None = None, now: datetime
    ) -> None:
        with operation("workflows", "finish", run_id=run_id):
            async with self._db.write() as conn:
                await conn.execute(
                    update(_runs)
                    .where(_runs.c.id == run_id)
                    .values(
                        status=status,
                        error=error,
                        updated_at=now,
                        finished_at=None if status == "running" else now,
                    )
                )
