"""``/api/v1/workflows``: start the node's registered workflows and read their runs.

* ``GET /workflows`` (user): the registered workflows: name, strategy, steps and their
  dependencies.
* ``POST /workflows/{name}/runs {"input"?}`` (operator): start a run; 202 with its ``run_id``
  at once (the run goes on in the node; every step's outcome is committed as it ends).
* ``GET /workflows/runs/{run_id}`` (operator): the run's ``status`` (``pending`` until its
  record is written, then ``running``, ``succeeded``, ``failed``), its steps (status,
  attempts, output, error) and error.

Workflows are code: a node serves those added to its ``WorkflowCatalog``
(``node.workflows.add(workflow)``); none by default.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict

from netsuke.store import NotFoundError

from .._context import ApiContext
from .._problems import ProblemError
from .._workflows import WorkflowCatalog
from ..deps import Caller, Ctx, Operator

__all__ = ["RunRequest", "router"]

router = APIRouter(prefix="/workflows", tags=["workflows"])

WorkflowName = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.:-]{1,100}$")]
RunId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.:-]{1,100}$")]


class RunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: Any = None


def catalog_of(ctx: ApiContext) -> WorkflowCatalog:
    catalog = ctx.extras.get("workflows")
    if not isinstance(catalog, WorkflowCatalog):
        raise ProblemError(503, "Unavailable", "this node runs no workflows")
    return catalog


@router.get("")
async def list_workflows(ctx: Ctx, caller: Caller) -> dict[str, Any]:
    catalog = catalog_of(ctx)
    items = [
        {
            "name": wf.name,
            "strategy": wf.strategy,
            "steps": [{"name": s.name, "after": list(s.after)} for s in wf.steps.values()],
        }
        for wf in sorted(catalog.workflows.values(), key=lambda w: w.name)
    ]
    return {"items": items, "next_cursor": None}


@router.post("/{name}/runs", status_code=202)
async def start_run(
    ctx: Ctx, caller: Operator, name: WorkflowName, body: RunRequest
) -> dict[str, Any]:
    catalog = catalog_of(ctx)
    if name not in catalog.workflows:
        raise ProblemError(404, "Not found", f"no workflow named {name}")
    run_id = catalog.start(name, body.input)
    return {"run_id": run_id, "workflow": name, "status": "pending"}


@router.get("/runs/{run_id}")
async def get_run(ctx: Ctx, caller: Operator, run_id: RunId) -> dict[str, Any]:
    catalog = catalog_of(ctx)
    try:
        record = await catalog.runner.get(run_id)
    except NotFoundError:
        if run_id in catalog.pending:
            return {"id": run_id, "workflow": catalog.pending[run_id], "status": "pending"}
        raise ProblemError(404, "Not found", "no such workflow run") from None
    out: dict[str, Any] = record.model_dump(mode="json")
    return out
