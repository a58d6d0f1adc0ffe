"""``/api/v1/executions``: what ran (agent turns, function calls, tasks), how it ended and why.

* ``GET /executions?session_id=&agent=&function=&kind=&status=&limit=&cursor=``: newest first;
  ``cursor`` is the ``next_cursor`` of the previous page.
* ``GET /executions/{id}``: one execution: status, times, tokens, ``error`` (the failure's
  reason, e.g. ``ModelConfigError: model openai-chat:gpt-4o: OPENAI_API_KEY is not set``)
  and ``details`` (chain, depth, user, definition version).

Any key may read; a ``user`` key sees only its own: turns of its sessions (by the turn's
user, else the session's stored owner) and calls of functions it stored. Another user's
execution is answered 404 (its existence is not revealed), and a listing leaves it out (so a
page may hold fewer than ``limit`` items; follow ``next_cursor`` to the end). A failed turn's
502 answer carries its ``execution_id``, the key to this resource.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel

from netsuke.store import Execution, ExecutionKind, ExecutionStatus, NotFoundError

from .._auth import Principal
from .._context import ApiContext
from .._problems import ProblemError
from ..deps import Caller, Ctx, Paging
from .functions import owner as function_owner

__all__ = ["ExecutionPage", "router"]

router = APIRouter(prefix="/executions", tags=["executions"])

ExecutionId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.:-]{1,100}$")]
NAME = r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$"


class ExecutionPage(BaseModel):
    items: list[Execution]
    next_cursor: str | None = None


class _Owners:
    """Who owns each execution, looked up once per session or function per request."""

    def __init__(self, ctx: ApiContext, caller: Principal) -> None:
        self.ctx = ctx
        self.caller = caller
        self.sessions: dict[str, str | None] = {}
        self.functions: dict[str, str | None] = {}

    async def visible(self, ex: Execution) -> bool:
        caller = self.caller
        if caller.role != "user":
            return True
        user = ex.details.get("user") if isinstance(ex.details, dict) else None
        if isinstance(user, str):
            return caller.may_act_for(user)
        if ex.session_id is not None:
            if ex.session_id not in self.sessions:
                try:
                    conv = await self.ctx.store.conversations.get(ex.session_id)
                    self.sessions[ex.session_id] = conv.user_id
                except NotFoundError:
                    self.sessions[ex.session_id] = None
            who = self.sessions[ex.session_id]
            return who is not None and caller.may_act_for(who)
        if ex.function_name is not None:
            if ex.function_name not in self.functions:
                try:
                    self.functions[ex.function_name] = await function_owner(
                        self.ctx, ex.function_name
                    )
                except NotFoundError:
                    self.functions[ex.function_name] = None
            who = self.functions[ex.function_name]
            return who is not None and caller.owns(who)  # functions belong to a key
        return False


def _offset(cursor: str | None) -> int:
    if cursor is None:
        return 0
    if not cursor.isdigit() or len(cursor) > 12:
        raise ProblemError(
            422,
            "Validation failed",
            "cursor: not a cursor from this listing",
            type="validation",
            errors=[{"field": "cursor", "reason": "not a cursor from this listing"}],
        )
    return int(cursor)


@router.get("", response_model=ExecutionPage, summary="List executions")
async def list_executions(
    ctx: Ctx,
    caller: Caller,
    page: Paging,
    session_id: Annotated[str | None, Query(pattern=r"^[A-Za-z][A-Za-z0-9_.@-]{0,199}$")] = None,
    agent: Annotated[str | None, Query(pattern=NAME)] = None,
    function: Annotated[str | None, Query(pattern=NAME)] = None,
    kind: ExecutionKind | None = None,
    status: ExecutionStatus | None = None,
) -> ExecutionPage:
    """Newest first, filtered by session, agent, function, kind and status."""
    result = await ctx.store.executions.list(
        kind=kind,
        status=status,
        agent_name=agent,
        session_id=session_id,
        function_name=function,
        limit=page.limit,
        offset=_offset(page.cursor),
    )
    owners = _Owners(ctx, caller)
    items = [ex for ex in result.items if await owners.visible(ex)]
    return ExecutionPage(items=items, next_cursor=result.next_cursor)


@router.get("/{execution_id}", response_model=Execution, summary="Get an execution")
async def get_execution(ctx: Ctx, caller: Caller, execution_id: ExecutionId) -> Execution:
    try:
        ex = await ctx.store.executions.get(execution_id)
    except NotFoundError:
        raise ProblemError(404, "Not found", "no such execution") from None
    if not await _Owners(ctx, caller).visible(ex):
        raise ProblemError(404, "Not found", "no such execution")
    return ex
