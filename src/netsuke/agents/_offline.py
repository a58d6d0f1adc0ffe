"""The offline model: the default model, with no network, no key, and deterministic replies.

It reads the conversation and answers from it, so demos and tests show memory at work:

* a user prompt that names one of the agent's tools (``"add 2 and 3"`` with a tool ``add``)
  makes it call that tool once, with arguments taken from the prompt (numbers in order for
  numeric parameters, a quoted string or the prompt for text, ``true`` for booleans);
* after the tool returns (or fails) it reports the result in text;
* when the agent has a structured output, it calls the output tool with arguments built the
  same way;
* otherwise it answers ``[offline] You said '<prompt>' (turn N).`` and, from the second turn
  on, recalls the previous prompt.

Every text reply starts with ``[offline]``. Streaming yields the same reply word by word.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    RetryPromptPart,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel
from pydantic_ai.tools import ToolDefinition

__all__ = ["OFFLINE_MARK", "OfflineModel"]

OFFLINE_MARK = "[offline]"
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_QUOTED = re.compile(r"['\"]([^'\"]+)['\"]")


class OfflineModel(FunctionModel):
    """A deterministic local model (see the module documentation). ``model_name`` is
    ``"offline"``; token usage is estimated from the text, as for ``FunctionModel``."""

    def __init__(self) -> None:
        super().__init__(_respond, stream_function=_stream, model_name="offline")
        self._system = "offline"


def _prompts(messages: list[ModelMessage]) -> list[str]:
    out = []
    for m in messages:
        if isinstance(m, ModelRequest):
            for p in m.parts:
                if isinstance(p, UserPromptPart):
                    out.append(p.content if isinstance(p.content, str) else str(p.content))
    return out


def _decide(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    last = messages[-1] if messages else None
    prompts = _prompts(messages)
    prompt = prompts[-1] if prompts else ""
    if isinstance(last, ModelRequest):
        returns = [p for p in last.parts if isinstance(p, ToolReturnPart | RetryPromptPart)]
        if returns:
            if info.output_tools and not info.allow_text_output:
                return _call(info.output_tools[0], prompt)
            return ModelResponse(parts=[TextPart(_report(returns))])
        if any(isinstance(p, UserPromptPart) for p in last.parts):
            tool = _named_tool(prompt, info.function_tools)
            if tool is not None:
                return _call(tool, prompt)
    if info.output_tools and not info.allow_text_output:
        return _call(info.output_tools[0], prompt)
    text = f"{OFFLINE_MARK} You said {prompt!r} (turn {len(prompts)})."
    if len(prompts) > 1:
        text += f" Before that you said {prompts[-2]!r}."
    return ModelResponse(parts=[TextPart(text)])


async def _respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    return _decide(messages, info)


async def _stream(
    messages: list[ModelMessage], info: AgentInfo
) -> AsyncIterator[str | DeltaToolCalls]:
    response = _decide(messages, info)
    part = response.parts[0]
    if isinstance(part, TextPart):
        words = part.content.split(" ")
        for i, word in enumerate(words):
            yield word if i == len(words) - 1 else word + " "
    else:
        assert isinstance(part, ToolCallPart)
        yield {0: DeltaToolCall(name=part.tool_name, json_args=part.args_as_json_str())}


def _report(parts: list[ToolReturnPart | RetryPromptPart]) -> str:
    lines = []
    for p in parts:
        if isinstance(p, ToolReturnPart) and getattr(p, "outcome", None) in ("retried", "failed"):
            lines.append(f"{p.tool_name} failed: {p.model_response_str()}")
        elif isinstance(p, ToolReturnPart):
            lines.append(f"{p.tool_name} returned {p.model_response_str()}")
        else:
            lines.append(f"{p.tool_name or 'the tool'} failed: {_retry_text(p)}")
    return f"{OFFLINE_MARK} " + "; ".join(lines) + "."


def _retry_text(p: RetryPromptPart) -> str:
    c = p.content
    if isinstance(c, str):
        return c
    return "; ".join(str(e.get("msg", e)) for e in c)


def _named_tool(prompt: str, tools: list[ToolDefinition]) -> ToolDefinition | None:
    low = prompt.lower()
    for t in tools:
        name = t.name.lower()
        if re.search(rf"\b{re.escape(name)}\b", low) or name.replace("_", " ") in low:
            return t
    return None


def _call(tool: ToolDefinition, prompt: str) -> ModelResponse:
    args = synthesize_args(tool.parameters_json_schema, prompt)
    return ModelResponse(parts=[ToolCallPart(tool.name, json.dumps(args))])


def synthesize_args(schema: dict[str, Any], prompt: str) -> dict[str, Any]:
    """Arguments for an object schema, taken from ``prompt`` (see the module documentation)."""
    numbers = [float(n) for n in _NUMBER.findall(prompt)]
    quoted = _QUOTED.findall(prompt)
    out: dict[str, Any] = {}
    for name, prop in (schema.get("properties") or {}).items():
        kind = prop.get("type") if isinstance(prop, dict) else None
        if isinstance(prop, dict) and "enum" in prop and prop["enum"]:
            out[name] = prop["enum"][0]
        elif kind == "integer":
            out[name] = int(numbers.pop(0)) if numbers else 0
        elif kind == "number":
            out[name] = numbers.pop(0) if numbers else 0.0
        elif kind == "boolean":
            out[name] = True
        elif kind == "array":
            out[name] = []
        elif kind == "object":
            out[name] = synthesize_args(prop, prompt)
        else:
            out[name] = quoted.pop(0) if quoted else prompt
    return out
