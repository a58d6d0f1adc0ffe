"""One turn, as it runs inside its supervised task.

Order: set the turn context; render the system prompt (a generator sees the windowed memory);
run the pydantic-ai agent (model, tools, output validation and retries); commit the new
messages and the execution row to the store (``append_turn`` returns after the commit), fenced
by the server's session incarnation; return the result to the server, which then updates its
memory and answers the caller. A failure at any step before the commit is mapped to a typed
``TurnError``; nothing reaches the memory (nor the store). Once the messages are committed the
turn has succeeded: the server's memory must hold exactly the committed history.

The pydantic-ai ``Agent`` is built once per ``AgentConfig`` and reused by every session and
turn (per-turn data goes in ``run``'s arguments), so a turn pays for no construction.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic_ai import Agent
from pydantic_ai.exceptions import ModelAPIError, ModelHTTPError, UnexpectedModelBehavior
from pydantic_ai.messages import ModelMessage
from pydantic_core import to_jsonable_python

from netsuke.store import AuditValues, Execution

from ._config import AgentConfig, PromptContext
from ._context import TurnContext, set_turn
from ._endpoints import key_env_for
from ._errors import (
    AgentConfigError,
    ModelCallError,
    ModelConfigError,
    OutputValidationError,
    TurnCancelledError,
    TurnError,
)
from ._metrics import METRICS, log
from ._models import failure_reason, is_transient, model_label, refused_cause, resolve_model
from ._schema import output_type
from ._stream import stream_handler
from ._tools import build_toolset

if TYPE_CHECKING:
    from netsuke.store import Store

__all__ = ["TurnResult", "execute_turn", "pydantic_agent", "record_failure", "reply_json"]

_EPOCH_MONO = time.monotonic()
_EPOCH_WALL = datetime.now(UTC)


def wall(mono: float) -> datetime:
    """The UTC time of a ``time.monotonic()`` reading (one clock call per turn, not three)."""
    return _EPOCH_WALL + timedelta(seconds=mono - _EPOCH_MONO)


@dataclass(slots=True)
class TurnResult:
    output: Any
    messages: list[ModelMessage]
    execution_id: str
    tokens_in: int
    tokens_out: int
    duration_ms: float
    reply: str | None = None
    """With a request id: the stored reply (``reply_json``), the same bytes a retry gets."""
    replayed: bool = False
    """The reply was read from the store (a retry of a committed request id): nothing ran."""


def reply_json(
    session: str, output: Any, execution_id: str, tin: int, tout: int, duration_ms: float
) -> str:
    """The reply stored with a turn that carries a request id: the API's ``Reply`` body."""
    return json.dumps(
        {
            "session_id": session,
            "output": to_jsonable_python(output, fallback=str),
            "execution_id": execution_id,
            "tokens_in": tin,
            "tokens_out": tout,
            "duration_ms": duration_ms,
        },
        separators=(",", ":"),
    )


def pydantic_agent(config: AgentConfig) -> Agent[None, Any]:
    """The pydantic-ai agent of ``config``, built on first use and cached on the config."""
    cached: Agent[None, Any] | None = config._cache.get("agent")
    if cached is not None:
        return cached
    model = resolve_model(
        config.model,
        base_url=config.base_url,
        api_key=config.api_key,
        api_key_env=config.api_key_env,
        retries=config.model_retries,
        guard=config.endpoint_guard,
    )
    out, check = output_type(config.output_schema)
    toolset = build_toolset(config.tools, retries=config.tool_retries)
    agent: Agent[None, Any] = Agent(  # type: ignore[call-overload]
        model,
        output_type=out,
        instructions=config.system_prompt if isinstance(config.system_prompt, str) else None,
        model_settings=dict(config.model_settings) if config.model_settings else None,
        retries={"tools": config.tool_retries, "output": config.output_retries},
        toolsets=[toolset] if toolset is not None else None,
        name=config.name,
    )
    if check is not None:
        agent.output_validator(check)
    config._cache["agent"] = agent
    config._cache["model"] = model
    return agent


async def execute_turn(
    config: AgentConfig,
    store: Store,
    ctx: TurnContext,
    prompt: str,
    history: Sequence[ModelMessage],
    sink: asyncio.Queue[Any] | None,
    parent: TurnContext | None,
    incarnation: int | None = None,
    guard: Any = None,
    audit: Sequence[AuditValues] = (),
    request: tuple[str, str] | None = None,
) -> TurnResult:
    """Run one turn and commit it (see the module documentation). ``incarnation``: the
    session incarnation of the calling server, the commit's fence (``FencedError`` once a
    successor claimed the session). ``guard.commit_begins()`` is called right before the
    commit (the server then no longer cancels or times out the turn); when it answers
    ``False`` (the caller abandoned the turn) nothing is committed: ``TurnCancelledError``.
    ``audit`` rows are committed in the turn's transaction, and so is ``request`` (``(request
    id, body hash)``) with the turn's reply (``reply_json``), which the result carries."""
    set_turn(ctx)
    try:
        agent = pydantic_agent(config)
    except AgentConfigError as e:
        raise ModelConfigError(
            config.name, e.field, _config_reason(e), execution_id=ctx.execution_id
        ) from None
    instructions = None
    if config.generated_prompt:
        instructions = await config.render_prompt(
            PromptContext(config.name, ctx.session, ctx.user, wall(ctx.started_at), history)
        )
    try:
        if sink is None:
            result = await agent.run(
                prompt, message_history=history, instructions=instructions, infer_name=False
            )
        else:
            result = await agent.run(
                prompt,
                message_history=history,
                instructions=instructions,
                infer_name=False,
                event_stream_handler=stream_handler(sink),
            )
    except TurnError:
        raise
    except UnexpectedModelBehavior as e:
        raise OutputValidationError(config.name, str(e), execution_id=ctx.execution_id) from e
    except (ModelAPIError, RuntimeError, ValueError, TypeError, OSError) as e:
        refused = refused_cause(e)
        reason = _model_reason(config, e)
        if refused is not None:
            raise ModelConfigError(
                config.name, "config.base_url", reason, execution_id=ctx.execution_id
            ) from e
        raise ModelCallError(
            config.name,
            reason,
            kind=type(e).__name__,
            status=e.status_code if isinstance(e, ModelHTTPError) else None,
            transient=isinstance(e, ModelAPIError) and is_transient(e),
            execution_id=ctx.execution_id,
        ) from e
    new = result.new_messages()
    usage = result.usage
    ended = time.monotonic()
    duration = (ended - ctx.started_at) * 1000.0
    tin, tout = usage.input_tokens or 0, usage.output_tokens or 0
    if parent is not None:
        await ensure_row(parent, store)
    conv = store.conversations
    if guard is not None and not guard.commit_begins():
        raise TurnCancelledError(
            config.name, reason="abandoned: its server is gone", execution_id=ctx.execution_id
        )
    stored = None
    if request is not None:
        reply = reply_json(ctx.session, result.output, ctx.execution_id, tin, tout, duration)
        stored = (request[0], request[1], reply)
    if ctx._row.future is None:
        await conv.append_turn_row(
            ctx.session,
            new,
            {
                "id": ctx.execution_id,
                "kind": "agent_turn",
                "status": "succeeded",
                "agent_name": config.name,
                "function_name": None,
                "session_id": ctx.session,
                "parent_id": ctx.parent_execution_id,
                "started_at": wall(ctx.started_at),
                "ended_at": wall(ended),
                "duration_ms": duration,
                "tokens_in": tin,
                "tokens_out": tout,
                "error": None,
                "details": _details(ctx, config),
            },
            lone=METRICS.running <= 1,
            incarnation=incarnation,
            audit=audit,
            request=stored,
        )
    else:  # a delegate wrote our row early: append the messages, then close the row
        await ctx._row.future
        await conv.append_turn_row(
            ctx.session, new, None, incarnation=incarnation, audit=audit, request=stored
        )
        # the messages are committed: the turn succeeded, and the server's memory must get
        # them (it would otherwise lack a stored turn); closing the row is best effort
        try:
            await store.executions.finish(
                ctx.execution_id, status="succeeded", tokens_in=tin, tokens_out=tout
            )
        except Exception as e:
            log.warning(
                "agent_turn_row_not_closed",
                session=ctx.session,
                execution=ctx.execution_id,
                error=repr(e),
            )
    return TurnResult(
        result.output,
        new,
        ctx.execution_id,
        tin,
        tout,
        duration,
        None if stored is None else stored[2],
    )


def _config_reason(e: AgentConfigError) -> str:
    """``AgentConfigError`` as one line: ``model X: reason`` (the reason names the model)."""
    if e.reason.startswith("model "):
        return e.reason
    return f"{e.field}: {e.reason}"


def _model_reason(config: AgentConfig, e: BaseException) -> str:
    model = config.model if isinstance(config.model, str) else model_label(config.model)
    return failure_reason(
        e,
        model=model,
        base_url=config.base_url,
        key_env=key_env_for(config.model, config.base_url, config.api_key_env),
        attempts=config.model_retries,
    )


def _details(ctx: TurnContext, config: AgentConfig) -> dict[str, Any]:
    d: dict[str, Any] = {"chain": list(ctx.chain), "depth": ctx.depth}
    if ctx.user is not None:
        d["user"] = ctx.user
    if config.version is not None:
        d["version"] = config.version
    return d


async def ensure_row(ctx: TurnContext, store: Store) -> None:
    """Write ``ctx``'s execution row as ``running`` if not yet written (its parents first), so
    a delegated turn's row can name it as parent. Concurrent callers share one write."""
    st = ctx._row
    if st.future is not None:
        await asyncio.shield(st.future)
        return
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    st.future = fut
    try:
        if st.parent is not None:
            await ensure_row(st.parent, store)
        await store.executions.record(
            Execution(
                id=ctx.execution_id,
                kind="agent_turn",
                status="running",
                agent_name=ctx.agent,
                session_id=ctx.session,
                parent_id=ctx.parent_execution_id,
                started_at=wall(ctx.started_at),
                details={"chain": list(ctx.chain), "depth": ctx.depth},
            )
        )
    except BaseException as e:
        st.future = None
        fut.set_exception(e)
        fut.exception()  # mark retrieved
        raise
    fut.set_result(None)


async def record_failure(
    store: Store, config: AgentConfig, ctx: TurnContext, status: str, error: str
) -> None:
    """Record a failed or cancelled turn's execution row (no messages: memory unchanged)."""
    if ctx._row.future is not None:
        try:
            await ctx._row.future
        except Exception:
            return
        await store.executions.finish(ctx.execution_id, status=status, error=error)  # type: ignore[arg-type]
        return
    parent = ctx._row.parent
    if parent is not None:
        await ensure_row(parent, store)
    ended = time.monotonic()
    await store.executions.record(
        Execution(
            id=ctx.execution_id,
            kind="agent_turn",
            status=status,  # type: ignore[arg-type]
            agent_name=config.name,
            session_id=ctx.session,
            parent_id=ctx.parent_execution_id,
            started_at=wall(ctx.started_at),
            ended_at=wall(ended),
            error=error[:2000],
            details=_details(ctx, config),
        )
    )
