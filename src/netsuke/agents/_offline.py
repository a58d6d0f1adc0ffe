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

Cost per call: independent of the conversation's length in the common case. Only the current
turn (from its user prompt on) goes through pydantic-ai's ``prepare_messages``; the earlier
messages are passed as they are, and what the model needs from them (the number of user
prompts, the last two, the token estimate) is tallied once per message: the tally of a history
is kept under its last message and extended by the messages appended since (``_Tally``), so a
session's next turn reads only its new messages. A history that is not an extension of one seen
before (a reload, a moved memory window, a list cut) is tallied in full once; messages
replaced in place before the last one tallied are not noticed (the offline model is a demo: its
turn count could then be off). A history whose earlier messages carry instruction state (which
pydantic-ai must project) is prepared in full, as before. ``OfflineModel.scanned`` counts the
earlier messages tallied (a test reads it).
"""

from __future__ import annotations

import json
import re
import weakref
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from typing import Any

from pydantic_ai.messages import (
    InstructionBaselinePart,
    InstructionDeltaPart,
    ModelMessage,
    ModelRequest,
    ModelResponse,
    RetryFeedbackPart,
    RetryPromptPart,
    SystemPromptPart,
    TextPart,
    ThinkingPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models import ModelRequestParameters
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel
from pydantic_ai.tools import ToolDefinition
from pydantic_ai.usage import RequestUsage

__all__ = ["OFFLINE_MARK", "OfflineModel"]

OFFLINE_MARK = "[offline]"
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_QUOTED = re.compile(r"['\"]([^'\"]+)['\"]")
_TOKEN_SPLIT = re.compile(r'[\s",.:]+')
_TALLY_KEY = "netsuke_offline_tally"
"""The key, in the metadata of the current turn's first prepared request, of the tally (as a
dictionary) of the messages before it (set by ``prepare_messages`` on its own copy of that
request, never on a stored one)."""
_USAGE_OVERHEAD = 50  # as ``FunctionModel``'s estimate


class _Tally:
    """What the model needs from a run of messages: its user prompts (count and last one),
    its estimated request and response tokens, and whether a request records instruction state
    (which only pydantic-ai's full ``prepare_messages`` may project)."""

    __slots__ = ("last_prompt", "previous_prompt", "prompts", "special", "tokens_in", "tokens_out")

    def __init__(self) -> None:
        self.prompts = 0
        self.last_prompt: str | None = None
        self.previous_prompt: str | None = None
        self.tokens_in = 0
        self.tokens_out = 0
        self.special = False

    def copy(self) -> _Tally:
        t = _Tally()
        t.prompts, t.last_prompt, t.previous_prompt = (
            self.prompts,
            self.last_prompt,
            self.previous_prompt,
        )
        t.tokens_in, t.tokens_out, t.special = self.tokens_in, self.tokens_out, self.special
        return t

    def as_dict(self) -> dict[str, Any]:
        return {
            "prompts": self.prompts,
            "last": self.last_prompt,
            "previous": self.previous_prompt,
            "in": self.tokens_in,
            "out": self.tokens_out,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> _Tally:
        t = cls()
        t.prompts, t.last_prompt, t.previous_prompt = d["prompts"], d["last"], d["previous"]
        t.tokens_in, t.tokens_out = d["in"], d["out"]
        return t

    def add(self, m: ModelMessage) -> None:
        if isinstance(m, ModelRequest):
            for p in m.parts:
                if isinstance(p, UserPromptPart):
                    text = p.content if isinstance(p.content, str) else str(p.content)
                    self.prompts += 1
                    self.previous_prompt = self.last_prompt
                    self.last_prompt = text
                    self.tokens_in += _content_tokens(p.content)
                elif isinstance(p, SystemPromptPart | RetryFeedbackPart):
                    self.tokens_in += _content_tokens(p.content)
                elif isinstance(p, ToolReturnPart):
                    self.tokens_in += _tokens(p.model_response_str())
                elif isinstance(p, RetryPromptPart):
                    self.tokens_in += _tokens(p.model_response())
                elif isinstance(p, InstructionDeltaPart | InstructionBaselinePart):
                    self.special = True
        else:
            self.tokens_out += _response_tokens(m)


class _Seen:
    """A history tallied before: its length, its last message and its tally (kept under its
    last message's id)."""

    __slots__ = ("last", "length", "tally")

    def __init__(self, length: int, last: weakref.ref[Any], tally: _Tally) -> None:
        self.length = length
        self.last = last
        self.tally = tally


class OfflineModel(FunctionModel):
    """A deterministic local model (see the module documentation). ``model_name`` is
    ``"offline"``; token usage is estimated from the text, as for ``FunctionModel``: input
    tokens of every request part and output tokens of every response so far."""

    def __init__(self) -> None:
        super().__init__(_respond, stream_function=_stream, model_name="offline")
        self._system = "offline"
        self._seen: dict[int, _Seen] = {}
        self.scanned = 0
        """Earlier messages tallied so far (not those found in a tally kept from before)."""

    def prepare_messages(
        self,
        messages: list[ModelMessage],
        model_request_parameters: ModelRequestParameters | None = None,
    ) -> list[ModelMessage]:
        """pydantic-ai's preparation of the current turn only (see the module documentation):
        the messages before it are returned as they are, and their tally rides in the
        metadata of a copy of the turn's first request."""
        start = _turn_start(messages)
        if start <= 0:
            return super().prepare_messages(messages, model_request_parameters)
        earlier = messages[:start]
        tally = self._tally(earlier)
        if tally.special:
            return super().prepare_messages(messages, model_request_parameters)
        tail = super().prepare_messages(messages[start:], model_request_parameters)
        first = tail[0] if tail else None
        if not isinstance(first, ModelRequest):
            return super().prepare_messages(messages, model_request_parameters)
        meta = dict(first.metadata or {})
        meta[_TALLY_KEY] = tally.as_dict()
        return [*earlier, replace(first, metadata=meta), *tail[1:]]

    def _tally(self, earlier: Sequence[ModelMessage]) -> _Tally:
        """The tally of ``earlier``: that of a history tallied before that it extends (as
        long, and ending with the same message object: found walking back from the end, two
        messages back for a session's next turn), plus the messages since. Kept by last
        message, not first: pydantic-ai merges a leading system-prompt request into the first
        turn's on every run (a new object each time), and sessions share their
        ``initial_memory`` objects."""
        seen = self._seen
        n = len(earlier)
        tally: _Tally | None = None
        begin = 0
        for j in range(n - 1, -1, -1):
            m = earlier[j]
            hit = seen.get(id(m))
            if hit is not None and hit.last() is m and hit.length == j + 1:
                tally, begin = hit.tally.copy(), j + 1
                if j < n - 1:
                    del seen[id(m)]  # superseded by this longer history
                break
        if tally is None:
            tally = _Tally()
        for m in earlier[begin:]:
            tally.add(m)
        self.scanned += n - begin
        last = earlier[-1]
        key = id(last)
        seen[key] = _Seen(n, weakref.ref(last, self._forget(key)), tally)
        return tally.copy()

    def _forget(self, key: int) -> Any:
        seen = self._seen

        def gone(ref: weakref.ref[Any]) -> None:
            s = seen.get(key)
            if s is not None and s.last is ref:
                del seen[key]

        return gone


def _turn_start(messages: Sequence[ModelMessage]) -> int:
    """Index of the last request carrying a user prompt (the current turn's first), or -1."""
    for i in range(len(messages) - 1, -1, -1):
        m = messages[i]
        if isinstance(m, ModelRequest) and any(isinstance(p, UserPromptPart) for p in m.parts):
            return i
    return -1


def _tokens(text: str) -> int:
    return len(_TOKEN_SPLIT.split(text.strip())) if text else 0


def _content_tokens(content: Any) -> int:
    if isinstance(content, str):
        return _tokens(content)
    if isinstance(content, Sequence):
        return sum(_tokens(c) for c in content if isinstance(c, str))
    return 0


def _response_tokens(m: ModelResponse) -> int:
    n = 0
    for q in m.parts:
        if isinstance(q, TextPart | ThinkingPart):
            n += _tokens(q.content)
        elif isinstance(q, ToolCallPart):
            n += 1 + _tokens(q.args_as_json_str())
    return n


def _history_tally(messages: list[ModelMessage]) -> _Tally:
    """The tally of ``messages`` (prepared for this call): the one ``prepare_messages`` left
    on the current turn's first request, plus that turn's messages; else all of them."""
    start = -1
    tally: _Tally | None = None
    for i in range(len(messages) - 1, -1, -1):
        m = messages[i]
        if isinstance(m, ModelRequest) and m.metadata and _TALLY_KEY in m.metadata:
            found = m.metadata[_TALLY_KEY]
            if isinstance(found, dict):
                tally, start = _Tally.from_dict(found), i
            break
    if tally is None:
        tally, start = _Tally(), 0
    for m in messages[start:]:
        tally.add(m)
    return tally


def _decide(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    response = _choose(messages, info, tally := _history_tally(messages))
    response.usage = RequestUsage(
        input_tokens=_USAGE_OVERHEAD + tally.tokens_in,
        output_tokens=tally.tokens_out + _response_tokens(response),
    )
    return response


def _choose(messages: list[ModelMessage], info: AgentInfo, tally: _Tally) -> ModelResponse:
    last = messages[-1] if messages else None
    prompt = tally.last_prompt or ""
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
    text = f"{OFFLINE_MARK} You said {prompt!r} (turn {tally.prompts})."
    if tally.prompts > 1:
        text += f" Before that you said {tally.previous_prompt!r}."
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
