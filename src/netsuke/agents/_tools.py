"""Tools: Python callables and ``pydantic_ai.Tool`` objects, with errors sent to the model.

A tool that raises goes back to the model as a tool error (a retry prompt naming the exception
type and message), never up into the agent server; the model may try again up to the tool's
retries (``tool_retries``, default 2), after which the turn fails with a typed error. pydantic-ai's
own signals (``ModelRetry``, ``CallDeferred``, ``ApprovalRequired``) and cancellation pass
through unchanged. Async tools run in the turn's task, so cancelling the turn cancels them; a
sync tool runs in a worker thread (pydantic-ai's rule) and its result is dropped when the turn
is cancelled.

Each call sees its ``ToolCall`` through ``current_tool_call()`` (set here, around the call):
its index among the turn's tool calls and a stable idempotency key (see ``_context``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from pydantic_ai.exceptions import ApprovalRequired, CallDeferred, ModelRetry
from pydantic_ai.tools import RunContext, Tool
from pydantic_ai.toolsets import AbstractToolset, FunctionToolset, WrapperToolset
from pydantic_ai.toolsets.abstract import ToolsetTool

from netsuke.observability import get_logger

from ._context import (
    ToolCall,
    current_turn,
    reset_tool_call,
    set_tool_call,
    tool_idempotency_key,
)

__all__ = ["ToolErrorsToModel", "build_toolset", "wait_tools"]

log = get_logger("netsuke.agents")
_PASS = (ModelRetry, CallDeferred, ApprovalRequired)


class ToolErrorsToModel(WrapperToolset[Any]):
    """Turns a tool's exception into a ``ModelRetry`` the model sees as a tool error."""

    errors = 0

    async def call_tool(
        self, name: str, tool_args: dict[str, Any], ctx: RunContext[Any], tool: ToolsetTool[Any]
    ) -> Any:
        turn = current_turn()
        task = asyncio.current_task()
        inflight: set[asyncio.Task[Any]] | None = None
        token = None
        if turn is not None:
            if task is not None:
                inflight = turn.extra.setdefault("inflight", set())
                inflight.add(task)
            index = turn.extra.get("tool_calls", 0)
            turn.extra["tool_calls"] = index + 1
            request = turn.request_id or turn.execution_id
            key = tool_idempotency_key(turn.session, request, index)
            token = set_tool_call(ToolCall(name, ctx.tool_call_id, index, key))
        try:
            return await self.wrapped.call_tool(name, tool_args, ctx, tool)
        except _PASS:
            raise
        except Exception as e:
            ToolErrorsToModel.errors += 1
            log.info("agent_tool_error", tool=name, error=type(e).__name__)
            raise ModelRetry(f"tool {name!r} raised {type(e).__name__}: {e}") from e
        finally:
            if token is not None:
                reset_tool_call(token)
            if inflight is not None:
                inflight.discard(task)


async def wait_tools(turn: Any, timeout: float = 1.0) -> None:
    """Wait (up to ``timeout``) for the tool calls still unwinding in a killed turn."""
    inflight = turn.extra.get("inflight") if turn is not None else None
    if inflight:
        await asyncio.wait(list(inflight), timeout=timeout)


def build_toolset(
    tools: Sequence[Callable[..., Any] | Tool[Any]], *, retries: int
) -> AbstractToolset[Any] | None:
    if not tools:
        return None
    return ToolErrorsToModel(FunctionToolset(list(tools), max_retries=retries))
