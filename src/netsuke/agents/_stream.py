"""Stream events: what ``Agents.stream`` yields while a turn runs.

In order: ``TextDelta`` pieces of the reply as the model produces them, ``ToolCallStarted`` and
``ToolCallFinished`` around each tool the model calls, and last ``TurnCompleted`` once the turn
is committed to the store (the same moment ``run`` would return). A failed turn raises its
typed error from the iterator instead of ``TurnCompleted``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable
from dataclasses import dataclass
from typing import Any

from pydantic_ai.messages import (
    FunctionToolCallEvent,
    FunctionToolResultEvent,
    PartDeltaEvent,
    PartStartEvent,
    RetryPromptPart,
    TextPart,
    TextPartDelta,
)
from pydantic_ai.tools import RunContext

__all__ = ["StreamEvent", "TextDelta", "ToolCallFinished", "ToolCallStarted", "TurnCompleted"]


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the reply text."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCallStarted:
    tool_name: str
    tool_call_id: str
    args: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToolCallFinished:
    """``error`` is true when the tool failed (its error went back to the model)."""

    tool_name: str
    tool_call_id: str
    result: str
    error: bool


@dataclass(frozen=True, slots=True)
class TurnCompleted:
    """The turn is committed: its ``output`` (what ``run`` returns) and execution."""

    output: Any
    execution_id: str
    tokens_in: int
    tokens_out: int


StreamEvent = TextDelta | ToolCallStarted | ToolCallFinished | TurnCompleted


def stream_handler(sink: asyncio.Queue[Any]) -> Any:
    """An ``event_stream_handler`` for pydantic-ai that puts our events into ``sink``."""

    async def handle(ctx: RunContext[Any], events: AsyncIterable[Any]) -> None:
        put = sink.put_nowait
        async for e in events:
            if isinstance(e, PartDeltaEvent):
                d = e.delta
                if isinstance(d, TextPartDelta) and d.content_delta:
                    put(TextDelta(d.content_delta))
            elif isinstance(e, PartStartEvent):
                p = e.part
                if isinstance(p, TextPart) and p.content:
                    put(TextDelta(p.content))
            elif isinstance(e, FunctionToolCallEvent):
                part = e.part
                put(ToolCallStarted(part.tool_name, part.tool_call_id, part.args_as_dict()))
            elif isinstance(e, FunctionToolResultEvent):
                r: Any = e.part
                error = isinstance(r, RetryPromptPart) or getattr(r, "outcome", None) in (
                    "retried",
                    "failed",
                )
                text = (
                    r.model_response() if isinstance(r, RetryPromptPart) else r.model_response_str()
                )
                put(ToolCallFinished(r.tool_name or "", r.tool_call_id, text, error))

    return handle
