"""Per-agent metrics over time and live validation of a draft definition.

* ``GET /api/v1/agents/{agent_id}/series?window=3600&step=60`` (operator): the agent's turns
  from the store's executions (so they survive a node restart), in buckets of ``step``
  seconds over the last ``window`` seconds: ``t`` (each bucket's start, epoch seconds, for
  charts), ``turns``, ``errors`` (turns not succeeded), ``tokens_in``, ``tokens_out``,
  ``p50_ms``/``p99_ms`` (``null`` in a bucket without a finished turn). At most 200 buckets
  and the newest 20,000 turns of the window are read.
* ``POST /api/v1/agent-drafts/check`` (operator): checks a definition without storing it:
  either the JSON fields of a definition or ``{"yaml": "..."}``. 422 problem+json naming each
  field (the same checks as creating the agent, model usability included); 200 with the
  parsed definition (``draft``) and its YAML when it would be accepted. The dashboard's agent
  editor calls it as the operator types.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Query, Request
from pydantic import ValidationError as PydanticValidationError

from netsuke.store import AgentDraft, dump_agent_yaml

from .._model_guard import check_definition
from .._problems import ProblemError
from ..deps import Ctx, Operator
from .agents import AgentId

__all__ = ["router"]

router = APIRouter(tags=["agents"])

_MAX_TURNS = 20_000
_PAGE = 1000


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


@router.get("/agents/{agent_id}/series", summary="An agent's metrics over time")
async def series(
    ctx: Ctx,
    caller: Operator,
    agent_id: AgentId,
    window: Annotated[int, Query(ge=60, le=7 * 86400, description="Seconds back.")] = 3600,
    step: Annotated[int, Query(ge=10, le=86400, description="Bucket seconds.")] = 60,
) -> dict[str, Any]:
    await ctx.store.agents.get(agent_id)  # 404 for an unknown agent
    if window // step > 200:
        raise ProblemError(
            422,
            "Validation failed",
            "step: at most 200 buckets (window / step)",
            type="validation",
            errors=[{"field": "step", "reason": "at most 200 buckets (window / step)"}],
        )
    now = datetime.now(UTC)
    end = int(now.timestamp()) // step * step + step
    start = end - (window // step) * step
    since = datetime.fromtimestamp(start, UTC)
    n = (end - start) // step
    turns = [0] * n
    errors = [0] * n
    tin = [0] * n
    tout = [0] * n
    lat: list[list[float]] = [[] for _ in range(n)]
    offset = 0
    while offset < _MAX_TURNS:
        page = await ctx.store.executions.list(
            kind="agent_turn", agent_name=agent_id, since=since, limit=_PAGE, offset=offset
        )
        for e in page.items:
            at = e.started_at if e.started_at.tzinfo else e.started_at.replace(tzinfo=UTC)
            i = int((at.timestamp() - start) // step)
            if not 0 <= i < n:
                continue
            turns[i] += 1
            if e.status in ("failed", "cancelled"):
                errors[i] += 1
            tin[i] += e.tokens_in
            tout[i] += e.tokens_out
            if e.duration_ms is not None and e.status != "running":
                lat[i].append(e.duration_ms)
        if page.next_cursor is None:
            break
        offset += _PAGE
    return {
        "agent": agent_id,
        "window": window,
        "step": step,
        "from": since.isoformat(),
        "to": (since + timedelta(seconds=n * step)).isoformat(),
        "t": [start + i * step for i in range(n)],
        "turns": turns,
        "errors": errors,
        "tokens_in": tin,
        "tokens_out": tout,
        "p50_ms": [_pct(b, 0.50) for b in lat],
        "p99_ms": [_pct(b, 0.99) for b in lat],
    }


def _invalid(field: str, reason: str) -> ProblemError:
    return ProblemError(
        422,
        "Validation failed",
        f"{field}: {reason}",
        type="validation",
        errors=[{"field": field, "reason": reason}],
    )


def _field(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(root)"


@router.post("/agent-drafts/check", summary="Check a definition without storing it")
async def check_draft(ctx: Ctx, caller: Operator, request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise _invalid("(root)", "the body is not JSON") from None
    if not isinstance(body, dict):
        raise _invalid("(root)", "must be an object")
    data: Any = body
    if set(body) == {"yaml"}:
        text = body["yaml"]
        if not isinstance(text, str) or len(text) > 200_000:
            raise _invalid("yaml", "must be a string of at most 200,000 characters")
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or "cannot parse"
            raise _invalid("yaml", f"invalid YAML{where}: {problem}") from None
        if not isinstance(data, dict):
            raise _invalid("(root)", "must be a mapping of fields")
    try:
        draft = AgentDraft.model_validate(data)
    except PydanticValidationError as exc:
        errors = [{"field": _field(tuple(e["loc"])), "reason": e["msg"]} for e in exc.errors()]
        raise ProblemError(
            422,
            "Validation failed",
            "; ".join(f"{e['field']}: {e['reason']}" for e in errors[:5]),
            type="validation",
            errors=errors,
        ) from None
    await check_definition(ctx, draft)
    return {"ok": True, "draft": draft.model_dump(mode="json"), "yaml": dump_agent_yaml(draft)}
