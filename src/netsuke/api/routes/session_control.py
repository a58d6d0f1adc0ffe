"""``/api/v1/sessions/{id}/cancel`` and ``/restart``: act on a running session.

* ``POST /sessions/{id}/cancel``: cancel the turn the session is running (its caller gets
  ``409 Turn cancelled``; the memory is unchanged). Answers ``{"cancelled": bool}``: whether
  a turn was running. The session's user or an operator; another user's session is 404.
* ``POST /sessions/{id}/restart`` (operator): kill the session's process; its supervisor
  starts it again (same name, same owner) and it reloads its conversation from the store.
  Counted as a restart (``restarts`` of ``GET /sessions/{id}``). 409 when it is not running.

Stopping is ``DELETE /sessions/{id}`` (routes/sessions.py). All are audited by the middleware.
"""

from __future__ import annotations

import asyncio

from fastapi import Response
from pydantic import BaseModel

from netsuke.agents import AgentNotFoundError
from netsuke.kernel import NetsukeError
from netsuke.observability import get_logger

from .._context import ApiContext
from .._forwarding import NODE_HEADER, forward, here, owner_elsewhere
from .._problems import ProblemError
from .._turns import agent_problem, agents_of
from ..deps import Caller, Ctx, Operator
from .sessions import SessionId, checked, router

__all__ = ["CancelResult", "RestartResult", "router"]

log = get_logger("netsuke.api")
_RESTART_WAIT = 5.0  # seconds to wait for the supervisor to start the session again


class CancelResult(BaseModel):
    session_id: str
    cancelled: bool


class RestartResult(BaseModel):
    session_id: str
    restarted: bool


@router.post("/{session_id}/cancel", response_model=CancelResult)
async def cancel_turn(
    ctx: Ctx, caller: Caller, session_id: SessionId, response: Response
) -> CancelResult:
    _, _, running = await checked(ctx, caller, session_id)
    owner = None if running else await owner_elsewhere(ctx, session_id)
    response.headers[NODE_HEADER] = owner or here(ctx)
    if owner is not None:
        cancelled = bool(await forward(ctx, owner, "cancel", {"session": session_id}))
        log.info("api.turn_cancelled", session=session_id, cancelled=cancelled, node=owner)
        return CancelResult(session_id=session_id, cancelled=cancelled)
    if not running:
        return CancelResult(session_id=session_id, cancelled=False)
    try:
        cancelled = await agents_of(ctx).cancel(session_id)
    except AgentNotFoundError:
        cancelled = False
    except NetsukeError as exc:
        raise agent_problem(exc) from None
    log.info("api.turn_cancelled", session=session_id, cancelled=cancelled)
    return CancelResult(session_id=session_id, cancelled=bool(cancelled))


@router.post("/{session_id}/restart", response_model=RestartResult)
async def restart_session(
    ctx: Ctx, caller: Operator, session_id: SessionId, response: Response
) -> RestartResult:
    _, _, running = await checked(ctx, caller, session_id)
    owner = None if running else await owner_elsewhere(ctx, session_id)
    response.headers[NODE_HEADER] = owner or here(ctx)
    if owner is not None:
        restarted = bool(await forward(ctx, owner, "restart", {"session": session_id}))
    else:
        restarted = await restart_here(ctx, session_id)
    if not restarted:
        response.status_code = 202  # killed; the supervisor has not started it again (yet)
    return RestartResult(session_id=session_id, restarted=restarted)


async def restart_here(ctx: ApiContext, session_id: str) -> bool:
    """Kill the session's process on this node; whether its supervisor started it again
    within a few seconds. 409 when it is not running here."""
    pid = ctx.runtime.whereis(session_id)
    if pid is None:
        raise ProblemError(409, "Conflict", "the session is not running; nothing to restart")
    ctx.runtime.kill(pid)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _RESTART_WAIT
    while loop.time() < deadline:
        now = ctx.runtime.whereis(session_id)
        if now is not None and now != pid:
            log.info("api.session_restarted", session=session_id, old=repr(pid), new=repr(now))
            return True
        await asyncio.sleep(0.01)
    return False
