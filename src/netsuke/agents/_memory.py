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

The agent server keeps its session's messages in memory between turns and appends each
committed turn's messages; under a bounded policy it keeps them ``trim``med: the turns no later
window can show are dropped (a window only moves forward as turns are added), their head system
parts kept in one leading request, so the memory, and the work of windowing it per turn, stays
about the size of the window however long the conversation grows. ``apply`` of a trimmed list
is the window of the untrimmed one.
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

_HEAD = "netsuke_memory_head"
"""Metadata key of the leading request ``trim`` keeps the dropped turns' head system parts in."""


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
        head_system = _head_system(messages, starts)
        first = self._first_kept(messages, starts)
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

    def trim(self, messages: list[ModelMessage]) -> list[ModelMessage]:
        """``messages`` without the turns no window will show again: ``messages`` itself when
        none is dropped, else a new list: a request holding the head system parts (maybe
        none; never sent, it is no turn), then the turns from the window's first on. ``apply``
        of it is ``apply(messages)``, and so is ``apply`` of it with turns appended (a window
        only moves forward)."""
        if not self.bounded:
            return messages
        if self.max_tokens is None and len(messages) <= 2 * (self.max_messages or 0) + 8:
            return messages  # cheap: trimmed in batches
        starts = turn_starts(messages)
        if not starts:
            return messages
        first = self._first_kept(messages, starts)
        if first == starts[0]:
            return messages
        head = _head_system(messages, starts)
        return [ModelRequest(parts=head, metadata={_HEAD: True}), *messages[first:]]

    def _first_kept(self, messages: Sequence[ModelMessage], starts: list[int]) -> int:
        """Index of the first message of the window (a turn start)."""
        if not self.bounded:
            return starts[0]
        first = starts[0]
        count = len(messages) - first
        # characters, not tokens, are subtracted: the estimate of what is left is exact, so a
        # window only moves forward as turns are added (what ``trim`` relies on)
        chars = _chars(messages[first:]) if self.max_tokens is not None else 0
        i = 0
        while i < len(starts) - 1 and not self._fits(count, (chars + 3) // 4):
            nxt = starts[i + 1]
            dropped = messages[starts[i] : nxt]
            count -= len(dropped)
            if self.max_tokens is not None:
                chars -= _chars(dropped)
            i += 1
        return starts[i]

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


def _is_head(m: ModelMessage) -> bool:
    return isinstance(m, ModelRequest) and bool(m.metadata) and _HEAD in (m.metadata or {})


def _head_system(messages: Sequence[ModelMessage], starts: list[int]) -> list[SystemPromptPart]:
    """The system parts at the head of ``messages``: those of the requests up to the first
    turn's, or, in a trimmed list, those ``trim`` kept in its leading request."""
    if _is_head(messages[0]):
        return _system_parts(messages[:1])
    return _system_parts(messages[: starts[0] + 1])


def _system_parts(messages: Sequence[ModelMessage]) -> list[SystemPromptPart]:
    out: list[SystemPromptPart] = []
    for m in messages:
        if isinstance(m, ModelRequest):
            out.extend(p for p in m.parts if isinstance(p, SystemPromptPart))
    return out


def estimate_tokens(messages: Sequence[ModelMessage]) -> int:
    """A cheap token estimate: characters of text, prompts, tool args and returns / 4."""
    return (_chars(messages) + 3) // 4


def _chars(messages: Sequence[ModelMessage]) -> int:
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
    return chars
