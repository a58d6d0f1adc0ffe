"""``/api/v1/tasks`` and ``/api/v1/dead-letters``: the node's durable task queue
(``netsuke.routing.TaskQueue`` on the store's ``tasks`` table).

* ``POST /tasks {"kind", "payload"?, "capabilities"?, "priority"?, "delay"?,
  "idempotency_key"?, "max_attempts"?, "backoff_base"?, "backoff_cap"?, "timeout"?}`` (user):
  queue a task; answered once it is committed (201). An idempotency key is scoped to the
  API key (its immutable prefix, ``Principal.scope``): the same idempotency key from the same
  API key returns the first task (200); another key's never collides, whatever its name.
  Bad input is a 422 and queues nothing.
* A task **belongs to the API key that submitted it** (the audit entry ``task.submit``,
  target ``task:<id>``, actor ``Principal.owner_id``, committed in the task's own
  transaction with the request's audit record: under a locked or full store the answer is
  503 and nothing is queued). A ``user`` key lists and reads only its own tasks; another's is
  a 404. Operators and admins see every task.
* ``GET /tasks?status=&kind=&id_prefix=&limit=&cursor=``, ``GET /tasks/{id}``: attempts,
  status, ``last_error``, result (``id_prefix``: tasks whose id starts with it, how the CLI
  takes an id prefix).
* Dead letters (operator): ``GET /dead-letters``, ``POST /dead-letters/{id}/requeue`` (attempts
  reset, ready now), ``POST /dead-letters/purge {"ids"?}`` (all, or those).

The queue is consumed by the node's agents (those whose definitions declare the capabilities a
task asks for), by the handlers loaded with ``--worker module:name`` or ``[[workers]]``, and by
``netsuke worker`` processes on the same store. ``GET /tasks/{id}`` of a queued task nothing on
this node can take carries a ``detail`` saying so.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from netsuke.routing import (
    RetryPolicy,
    TaskHosting,
    TaskNotFoundError,
    TaskQueue,
    TaskRecord,
    TaskValidationError,
)
from netsuke.store import AuditValues, audit_values, json_problem, sanitize_json

from .._auth import Principal
from .._context import ApiContext
from .._middleware import mark_audited, request_audit
from .._problems import ProblemError
from ..deps import Caller, Ctx, Operator, Paging

__all__ = ["PurgeRequest", "TaskIn", "router"]

router = APIRouter(tags=["tasks"])

TaskId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.:-]{1,100}$")]
IdPrefix = Annotated[
    str | None,
    Query(pattern=r"^[A-Za-z0-9_.:-]{1,100}$", description="Only ids starting with this."),
]
SUBMIT = "task.submit"


class TaskIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    payload: dict[str, Any] = Field(default_factory=dict)
    capabilities: list[Annotated[str, Field(min_length=1, max_length=64, pattern=r"^\S+$")]] = (
        Field(default_factory=list, max_length=32)
    )
    priority: int = Field(default=0, ge=-1_000_000, le=1_000_000)
    delay: float = Field(default=0.0, ge=0, le=366 * 86400)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=150)
    max_attempts: int = Field(default=5, ge=1, le=1000)
    backoff_base: float = Field(default=1.0, gt=0, le=86400)
    backoff_cap: float = Field(default=60.0, gt=0, le=86400)
    timeout: float | None = Field(default=None, gt=0, le=86400)


class TaskPage(BaseModel):
    items: list[TaskRecord]
    next_cursor: str | None = None


class PurgeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[Annotated[str, Field(max_length=100)]] | None = Field(default=None, max_length=1000)


def queue_of(ctx: ApiContext) -> TaskQueue:
    queue = ctx.extras.get("tasks")
    if not isinstance(queue, TaskQueue):
        raise ProblemError(503, "Unavailable", "this node runs no task queue")
    return queue


def _invalid(exc: TaskValidationError) -> ProblemError:
    return ProblemError(
        422, "Validation failed", f"{exc.field}: {exc.reason}"[:300], type="validation",
        errors=[{"field": exc.field, "reason": exc.reason[:200]}],
    )  # fmt: skip


def servable(task: TaskRecord) -> TaskRecord:
    """``task`` as it can be answered: a row stored before bodies were checked at the door
    (a lone surrogate, nesting too deep) is served sanitised (``sanitize_json``) instead of
    failing the whole listing."""
    fields = {"payload": task.payload, "result": task.result, "last_error": task.last_error}
    if all(json_problem(value) is None for value in fields.values()):
        return task
    return task.model_copy(update={k: sanitize_json(v) for k, v in fields.items()})


def _target(task_id: str) -> str:
    return f"task:{task_id}"


async def submitter(ctx: ApiContext, task_id: str) -> str | None:
    page = await ctx.store.audit.list(action=SUBMIT, target=_target(task_id), limit=1)
    return page.items[0].actor if page.items else None


async def checked(ctx: ApiContext, caller: Principal, task_id: str) -> TaskRecord:
    queue = queue_of(ctx)
    try:
        task = await queue.get(task_id)
    except TaskNotFoundError:
        raise ProblemError(404, "Not found", "no such task") from None
    if not caller.owns(await submitter(ctx, task_id)):
        raise ProblemError(404, "Not found", "no such task")
    return servable(task)


@router.post("/tasks", status_code=201, response_model=TaskRecord)
async def submit(
    ctx: Ctx, caller: Caller, body: TaskIn, request: Request, response: Response
) -> TaskRecord:
    queue = queue_of(ctx)
    began = datetime.now(UTC)
    key = caller.scope(body.idempotency_key) if body.idempotency_key else None
    # The ownership record and the request's audit record commit in the task's transaction:
    # a task exists exactly when its owner is recorded (a locked store fails all, or none).
    answered = request_audit(request.scope, 201)

    def audit(task_id: str) -> tuple[AuditValues, ...]:
        owner = audit_values(
            actor=caller.owner_id,
            action=SUBMIT,
            target=_target(task_id),
            details={"kind": body.kind},
        )
        return (owner, answered)

    # A broker (Redis) cannot share the store's transaction: the rows follow the task there.
    in_task = queue.backend.commits_audit

    try:
        policy = RetryPolicy(
            max_attempts=body.max_attempts, base=body.backoff_base, cap=body.backoff_cap
        )
        task = await queue.submit(
            body.kind,
            body.payload,
            capabilities=body.capabilities,
            priority=body.priority,
            delay=body.delay,
            idempotency_key=key,
            retry=policy,
            timeout=body.timeout,
            audit=audit if in_task else None,
        )
    except TaskValidationError as exc:
        raise _invalid(exc) from None
    except ValueError as exc:
        raise ProblemError(422, "Validation failed", str(exc)[:300], type="validation") from None
    if key is not None and task.created_at.replace(tzinfo=task.created_at.tzinfo or UTC) < began:
        response.status_code = 200  # the first task with this key (the middleware audits)
    else:
        if not in_task:
            await ctx.store.audit.write(audit(task.id))
        mark_audited(request.scope)
    response.headers["Location"] = f"/api/v1/tasks/{task.id}"
    # a new task passed the check at the door; a replayed one may predate it
    return servable(task) if response.status_code == 200 else task


def _offset(cursor: str | None) -> int:
    if cursor is None:
        return 0
    if not cursor.isdigit() or len(cursor) > 12:
        raise ProblemError(422, "Validation failed", "cursor: not a cursor from this listing")
    return int(cursor)


def _page(items: list[TaskRecord], offset: int, limit: int) -> TaskPage:
    """A full page has a next cursor (the page after it may be empty)."""
    more = len(items) == limit
    return TaskPage(
        items=[servable(item) for item in items],
        next_cursor=str(offset + limit) if more else None,
    )


@router.get("/tasks", response_model=TaskPage)
async def list_tasks(
    ctx: Ctx,
    caller: Caller,
    page: Paging,
    status: Annotated[Literal["queued", "leased", "succeeded", "dead"] | None, Query()] = None,
    kind: Annotated[str | None, Query(max_length=64)] = None,
    id_prefix: IdPrefix = None,
) -> TaskPage:
    queue = queue_of(ctx)
    if caller.role != "user":
        offset = _offset(page.cursor)
        try:
            listed = await queue.list(
                status=status, kind=kind, limit=page.limit, offset=offset, id_prefix=id_prefix
            )
        except TaskValidationError as exc:
            raise _invalid(exc) from None
        return _page(list(listed.items), offset, page.limit)
    # a user: its own submissions, newest first, from the audit log
    entries = await ctx.store.audit.list(
        actor=caller.owner_id, action=SUBMIT, limit=page.limit, cursor=page.cursor
    )
    out: list[TaskRecord] = []
    for entry in entries.items:
        try:
            task = await queue.get(entry.target.removeprefix("task:"))
        except TaskNotFoundError:
            continue  # purged
        if (
            (status is None or task.status == status)
            and (kind is None or task.kind == kind)
            and (id_prefix is None or task.id.startswith(id_prefix))
        ):
            out.append(servable(task))
    return TaskPage(items=out, next_cursor=entries.next_cursor)


class TaskOut(TaskRecord):
    detail: str | None = None
    """Why a queued task waits, when no agent or worker of this node can take it."""


@router.get("/tasks/{task_id}", response_model=TaskOut)
async def get_task(ctx: Ctx, caller: Caller, task_id: TaskId) -> TaskOut:
    task = await checked(ctx, caller, task_id)
    hosting = ctx.extras.get("hosting")
    detail = hosting.detail(task) if isinstance(hosting, TaskHosting) else None
    return TaskOut(**task.model_dump(), detail=detail)


@router.get("/dead-letters", response_model=TaskPage)
async def dead_letters(
    ctx: Ctx, caller: Operator, page: Paging, id_prefix: IdPrefix = None
) -> TaskPage:
    offset = _offset(page.cursor)
    try:
        listed = await queue_of(ctx).dead_letters(
            limit=page.limit, offset=offset, id_prefix=id_prefix
        )
    except TaskValidationError as exc:
        raise _invalid(exc) from None
    return _page(list(listed.items), offset, page.limit)


@router.post("/dead-letters/{task_id}/requeue", response_model=TaskRecord)
async def requeue(ctx: Ctx, caller: Operator, task_id: TaskId) -> TaskRecord:
    try:
        return servable(await queue_of(ctx).requeue(task_id))
    except TaskNotFoundError:
        raise ProblemError(404, "Not found", "no such task in the dead-letter queue") from None


@router.post("/dead-letters/purge")
async def purge(ctx: Ctx, caller: Operator, body: PurgeRequest) -> dict[str, int]:
    return {"purged": await queue_of(ctx).purge_dead(body.ids)}
