"""Models for tests: instant, slow and scripted ``FunctionModel``s."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, TextPart, UserPromptPart
from pydantic_ai.models.function import AgentInfo, FunctionModel


def last_prompt(messages: list[ModelMessage]) -> str:
    for m in reversed(messages):
        if isinstance(m, ModelRequest):
            for p in m.parts:
                if isinstance(p, UserPromptPart) and isinstance(p.content, str):
                    return p.content
    return ""


def echo_model(counter: list[int] | None = None) -> FunctionModel:
    async def fn(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if counter is not None:
            counter.append(1)
        return ModelResponse(parts=[TextPart(f"echo {last_prompt(messages)} #{len(messages)}")])

    return FunctionModel(fn)


def slow_model(
    delay: float,
    started: asyncio.Event | None = None,
    cancelled: list[int] | None = None,
    release: asyncio.Event | None = None,
) -> FunctionModel:
    """A model that answers after ``delay`` seconds, or once ``release`` is set if given."""

    async def fn(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if started is not None:
            started.set()
        try:
            if release is not None:
                await release.wait()
            else:
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            if cancelled is not None:
                cancelled.append(1)
            raise
        return ModelResponse(parts=[TextPart(f"slow {last_prompt(messages)}")])

    return FunctionModel(fn)


def scripted(fn: Callable[[list[ModelMessage], AgentInfo], ModelResponse]) -> FunctionModel:
    async def afn(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return fn(messages, info)

    return FunctionModel(afn)
