"""Package agents through the AgentManager (seed 003): ``/api/v1/manager/agents/...``.

The seed's Management API talks to the AgentManager over NATS; these routes do exactly that
(``agent.manager.command`` / ``agent.manager.query``) and return the manager's ``result``.
They live under ``/manager/agents`` because ``/agents/{agent_id}/...`` already controls the
node's own agents (stored definitions); an agent package is a different thing with the same
verbs. The manager is reached through ``extras["manager"]`` (a ``ManagerClient``), else through
``$NETSUKE_MANAGER_NATS_URL``; without either every route answers 404 (there are no
package agents on this node); a configured manager that does not answer is 503.

* ``GET /manager/agents`` (user), ``GET .../{agent_id}/status`` (user)
* ``POST .../{agent_id}/start|stop|restart`` (operator); an ``Idempotency-Key`` header is
  passed as the command id, so a retried request runs once
* ``GET .../{agent_id}/metrics`` (operator), ``GET .../{agent_id}/history`` (operator)
* ``GET .../{agent_id}/logs?lines=`` (operator); ``?follow=true`` streams new lines as
  server-sent events, polling the manager every ``interval`` seconds with the
  ``cursor`` of the previous answer (no gaps, no repeats)
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query
from fastapi.responses import StreamingResponse

from netsuke.manager import MANAGER_NATS_ENV, ManagerClient, ManagerUnavailableError

from .._problems import ProblemError
from ..deps import Caller, Ctx, Operator

__all__ = ["router"]

router = APIRouter(prefix="/manager/agents", tags=["agent packages"])

AgentId = Annotated[
    str, Path(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$", description="The package agent's id.")
]
_STATUS = {"unknown_agent": 404, "missing_agent_id": 422, "bad_params": 422}


def _client(ctx: Any) -> ManagerClient:
    client = ctx.extras.get("manager")
    if client is None and os.environ.get(MANAGER_NATS_ENV):
        client = ctx.extras["manager"] = ManagerClient(os.environ[MANAGER_NATS_ENV])
    if not isinstance(client, ManagerClient):
        raise ProblemError(
            404,
            "Manager not configured",
            f"this node knows no AgentManager: set {MANAGER_NATS_ENV} to the manager's NATS URL",
        )
    return client


async def _ask(
    ctx: Any,
    command: str,
    agent_id: str | None,
    params: dict[str, Any] | None = None,
    *,
    query: bool = False,
    command_id: str | None = None,
) -> dict[str, Any]:
    try:
        body = await _client(ctx).request(
            command, agent_id, params, query=query, command_id=command_id
        )
    except ManagerUnavailableError as exc:
        raise ProblemError(503, "Manager unavailable", str(exc)) from None
    if body.get("status") != "success":
        error = body.get("error") or {}
        code = str(error.get("code", "error"))
        raise ProblemError(
            _STATUS.get(code, 502), "Manager refused", str(error.get("message")), code=code
        )
    result: dict[str, Any] = body.get("result") or {}
    return result


@router.get("")
async def list_package_agents(ctx: Ctx, caller: Caller) -> dict[str, Any]:
    return await _ask(ctx, "list", None, query=True)


@router.get("/{agent_id}/status")
async def package_agent_status(ctx: Ctx, caller: Caller, agent_id: AgentId) -> dict[str, Any]:
    return await _ask(ctx, "status", agent_id, query=True)


async def _control(ctx: Any, command: str, agent_id: str, key: str | None) -> dict[str, Any]:
    return await _ask(ctx, command, agent_id, command_id=key)


IdempotencyKey = Annotated[str | None, Header(max_length=200)]


@router.post("/{agent_id}/start")
async def start_package_agent(
    ctx: Ctx, caller: Operator, agent_id: AgentId, idempotency_key: IdempotencyKey = None
) -> dict[str, Any]:
    return await _control(ctx, "start", agent_id, idempotency_key)


@router.post("/{agent_id}/stop")
async def stop_package_agent(
    ctx: Ctx, caller: Operator, agent_id: AgentId, idempotency_key: IdempotencyKey = None
) -> dict[str, Any]:
    return await _control(ctx, "stop", agent_id, idempotency_key)


@router.post("/{agent_id}/restart")
async def restart_package_agent(
    ctx: Ctx, caller: Operator, agent_id: AgentId, idempotency_key: IdempotencyKey = None
) -> dict[str, Any]:
    return await _control(ctx, "restart", agent_id, idempotency_key)


@router.get("/{agent_id}/metrics")
async def package_agent_metrics(ctx: Ctx, caller: Operator, agent_id: AgentId) -> dict[str, Any]:
    return await _ask(ctx, "metrics", agent_id, query=True)


@router.get("/{agent_id}/history")
async def package_agent_history(ctx: Ctx, caller: Operator, agent_id: AgentId) -> dict[str, Any]:
    return await _ask(ctx, "history", agent_id, query=True)


@router.get("/{agent_id}/logs", response_model=None)
async def package_agent_logs(
    ctx: Ctx,
    caller: Operator,
    agent_id: AgentId,
    lines: Annotated[int, Query(ge=1, le=10000)] = 100,
    follow: bool = False,
    interval: Annotated[float, Query(ge=0.1, le=60)] = 1.0,
) -> dict[str, Any] | StreamingResponse:
    first = await _ask(ctx, "logs", agent_id, {"lines": lines}, query=True)
    if not follow:
        return first

    async def stream() -> AsyncIterator[bytes]:
        cursor = int(first.get("cursor", 0))
        for line in first.get("lines", []):
            yield f"data: {json.dumps(line)}\n\n".encode()
        while True:
            await asyncio.sleep(interval)
            try:
                now = await _ask(
                    ctx, "logs", agent_id, {"lines": 10000, "after": cursor}, query=True
                )
            except ProblemError as exc:
                yield f"event: error\ndata: {json.dumps(exc.detail)}\n\n".encode()
                return
            cursor = int(now.get("cursor", cursor))
            for line in now.get("lines", []):
                yield f"data: {json.dumps(line)}\n\n".encode()

    return StreamingResponse(stream(), media_type="text/event-stream")
