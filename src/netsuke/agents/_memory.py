"""Memory policy: how much of the conversation the model sees.

The full conversation is in the store; the policy decides the window sent to the model. A turn is
a user prompt and every message up to the next user prompt (model responses, tool calls, tool
returns, retries), so dropping whole turns never separates a tool call from its result. Rules:

* ``max_messages`` [``None``: no limit] and ``max_tokens`` [``None``] bound the history; the
  oldest whole turns go first until both hold. The newest turn is always kept, even alone over
  a bound. Tokens are estimated at four characters per token.
* The system prompt is kept: it is passed as instructions on every run, and system-prompt parts
  found at the head of a stored history move to the first kept turn.
* A history that starts in the middle of a turn (a partial read) loses that partial turn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    SystemPromptPart,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)

__all__ = ["MemoryPolicy", "estimate_tokens", "turn_starts"]


@dataclass(frozen=True, slots=True)
class MemoryPolicy:
    """The context window: ``max_messages`` and/or ``max_tokens`` (``None``: unbounded)."""

    max_messages: int | None = None
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.max_messages is not None and self.max_messages < 1:
            raise ValueError("max_messages must be >= 1 or None")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError("max_tokens must be >= 1 or None")

    @property
    def bounded(self) -> bool:
        return self.max_messages is not None or self.max_tokens is not None

    def load_limit(self) -> int | None:
        """How many stored messages to read to fill the window (``None``: all)."""
        if self.max_messages is None:
            return None
        return self.max_messages * 2 + 8

    def apply(self, messages: Sequence[ModelMessage]) -> list[ModelMessage]:
        """The window of ``messages`` this policy keeps (see the module documentation)."""
        starts = turn_starts(messages)
        if not starts:
            return []
        head_system = _system_parts(messages[: starts[0] + 1])
        first = starts[0]
        if self.bounded:
            count = len(messages) - first
            tokens = estimate_tokens(messages[first:]) if self.max_tokens is not None else 0
            i = 0
            while i < len(starts) - 1 and not self._fits(count, tokens):
                nxt = starts[i + 1]
                dropped = messages[starts[i] : nxt]
                count -= len(dropped)
                if self.max_tokens is not None:
                    tokens -= estimate_tokens(dropped)
                i += 1
            first = starts[i]
        kept = list(messages[first:])
        if head_system and not _system_parts(kept[:1]):
            req = kept[0]
            assert isinstance(req, ModelRequest)
            kept[0] = ModelRequest(
                parts=[*head_system, *req.parts],
                instructions=req.instructions,
                timestamp=req.timestamp,
            )
        return kept

    def _fits(self, count: int, tokens: int) -> bool:
        if self.max_messages is not None and count > self.max_messages:
            return False
        return not (self.max_tokens is not None and tokens > self.max_tokens)


def turn_starts(messages: Sequence[ModelMessage]) -> list[int]:
    """Indexes of the requests that open a turn (those carrying a user prompt)."""
    return [
        i
        for i, m in enumerate(messages)
        if isinstance(m, ModelRequest) and any(isinstance(p, UserPromptPart) for p in m.parts)
    ]


def _system_parts(messages: Sequence[ModelMessage]) -> list[SystemPromptPart]:
    out: list[SystemPromptPart] = []
    for m in messages:
        if isinstance(m, ModelRequest):
            out.extend(p for p in m.parts if isinstance(p, SystemPromptPart))
    return out


def estimate_tokens(messages: Sequence[ModelMessage]) -> int:
    """A cheap token estimate: characters of text, prompts, tool args and returns / 4."""
    chars = 0
    for m in messages:
        if isinstance(m, ModelRequest):
            for p in m.parts:
                if isinstance(p, UserPromptPart | SystemPromptPart):
                    c = p.content
                    chars += len(c) if isinstance(c, str) else len(str(c))
                elif isinstance(p, ToolReturnPart):
                    chars += len(p.model_response_str())
                else:
                    chars += len(str(getattr(p, "content", "")))
        elif isinstance(m, ModelResponse):
            for q in m.parts:
                if isinstance(q, TextPart):
                    chars += len(q.content)
                elif isinstance(q, ToolCallPart):
                    chars += len(q.tool_name) + len(q.args_as_json_str())
    return (chars + 3) // 4
