"""Tools: Python callables and ``pydantic_ai.Tool`` objects, with errors sent to the model.

A tool that raises goes back to the model as a tool error (a retry prompt naming the exception
type and message), never up into the agent server; the model may try again up to the tool's
retries (``tool_retries``, default 2), after which the turn fails with a typed error. pydantic-ai's
own signals (``ModelRetry``, ``CallDeferred``, ``ApprovalRequired``) and cancellation pass
through unchanged. Async tools run in the turn's task, so cancelling the turn cancels them; a
sync tool runs in a worker thread (pydantic-ai's rule) and its result is dropped when the turn
is cancelled.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pydantic_ai.exceptions import ApprovalRequired, CallDeferred, ModelRetry
from pydantic_ai.tools import RunContext, Tool
from pydantic_ai.toolsets import AbstractToolset, FunctionToolset, WrapperToolset
from pydantic_ai.toolsets.abstract import ToolsetTool

from netsuke.observability import get_logger

__all__ = ["ToolErrorsToModel", "build_toolset"]

log = get_logger("netsuke.agents")
_PASS = (ModelRetry, CallDeferred, ApprovalRequired)


class ToolErrorsToModel(WrapperToolset[Any]):
    """Turns a tool's exception into a ``ModelRetry`` the model sees as a tool error."""

    errors = 0

    async def call_tool(
        self, name: str, tool_args: dict[str, Any], ctx: RunContext[Any], tool: ToolsetTool[Any]
    ) -> Any:
        try:
            return await self.wrapped.call_tool(name, tool_args, ctx, tool)
        except _PASS:
            raise
        except Exception as e:
            ToolErrorsToModel.errors += 1
            log.info("agent_tool_error", tool=name, error=type(e).__name__)
            raise ModelRetry(f"tool {name!r} raised {type(e).__name__}: {e}") from e


def build_toolset(
    tools: Sequence[Callable[..., Any] | Tool[Any]], *, retries: int
) -> AbstractToolset[Any] | None:
    if not tools:
        return None
    return ToolErrorsToModel(FunctionToolset(list(tools), max_retries=retries))
