"""A stored conversation (pydantic-ai messages) as chat bubbles for the dashboard.

Each user prompt is one ``user`` item; everything the model answered until the next prompt
(text parts, tool calls with their returns) is one ``agent`` item, its tool calls as chips
(name, arguments, result or error). System prompts are not shown. Texts are rendered as
Markdown by ``render_markdown`` (raw HTML escaped).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from markupsafe import Markup, escape
from pydantic_ai.messages import (
    ModelRequest,
    ModelResponse,
    RetryPromptPart,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)

from ._markdown import render_markdown

__all__ = ["ChatItem", "ToolChip", "transcript"]

_MAX_IO = 4000  # characters of a tool's arguments or result shown in a chip


@dataclass
class ToolChip:
    name: str
    call_id: str
    args: str
    result: str | None = None
    error: bool = False


@dataclass
class ChatItem:
    role: str  # "user" or "agent"
    text: str = ""
    time: datetime | None = None
    model: str | None = None
    tools: list[ToolChip] = field(default_factory=list)

    @property
    def html(self) -> Markup:
        if self.role == "user":
            return Markup(escape(self.text))  # shown as typed (pre-wrap), never as markup
        return render_markdown(self.text)


def _show(value: Any) -> str:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return str(value)[:_MAX_IO]
    try:
        out = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        out = str(value)
    return out[:_MAX_IO]


def _prompt_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(c if isinstance(c, str) else f"[{type(c).__name__}]" for c in content)


def transcript(messages: list[Any]) -> list[ChatItem]:
    """The bubbles of ``messages`` in order."""
    items: list[ChatItem] = []
    chips: dict[str, ToolChip] = {}
    agent: ChatItem | None = None
    for message in messages:
        if isinstance(message, ModelRequest):
            for part in message.parts:
                if isinstance(part, UserPromptPart):
                    items.append(ChatItem("user", _prompt_text(part.content), time=part.timestamp))
                    agent = None
                elif isinstance(part, ToolReturnPart) and part.tool_call_id in chips:
                    chips[part.tool_call_id].result = _show(part.content)
                    chips[part.tool_call_id].error = part.outcome != "success"
                elif isinstance(part, RetryPromptPart) and part.tool_call_id in chips:  # older
                    chip = chips[part.tool_call_id]
                    chip.result = _show(part.content)
                    chip.error = True
        elif isinstance(message, ModelResponse):
            if agent is None:
                agent = ChatItem("agent", time=message.timestamp, model=message.model_name)
                items.append(agent)
            agent.time = message.timestamp
            for rpart in message.parts:
                if isinstance(rpart, TextPart):
                    agent.text += rpart.content
                elif isinstance(rpart, ToolCallPart):
                    chip = ToolChip(rpart.tool_name, rpart.tool_call_id, _show(rpart.args))
                    chips[rpart.tool_call_id] = chip
                    agent.tools.append(chip)
    return items
