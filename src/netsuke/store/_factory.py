"""The factory: runnable agent specifications from stored definitions.

``AgentSpec`` is everything the agents layer needs to run an agent (model string, settings,
prompt, schemas, tools, delegates, limits), as a plain frozen pydantic model with the
definition version it came from. ``AgentFactory.register_agent`` stores a definition while the
system runs (seed 004's ``registry.register_agent``) and tells subscribers, so a supervisor can
start the new agent at once.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

from pydantic import BaseModel, ConfigDict
from pydantic_ai.settings import ModelSettings as PydanticAIModelSettings

from ._agents import AgentRepository
from ._definitions import AgentDefinition, AgentDraft
from ._observe import log, operation
from ._validation import parse_model

__all__ = ["AgentFactory", "AgentSpec", "build_spec"]

Listener = Callable[["AgentSpec"], Awaitable[None] | None]


class AgentSpec(BaseModel):
    """A runnable agent specification built from definition ``name`` at ``version``."""

    model_config = ConfigDict(frozen=True)

    name: str
    version: int
    description: str
    system_prompt: str
    model: str
    model_settings: dict[str, Any]
    input_schema: dict[str, Any] | None
    output_schema: dict[str, Any] | None
    tools: tuple[str, ...]
    capabilities: tuple[str, ...]
    delegates: tuple[str, ...]
    max_chain_depth: int
    chain_strategy: str
    config: dict[str, Any]

    def pydantic_ai_settings(self) -> PydanticAIModelSettings:
        """The settings as ``pydantic_ai.settings.ModelSettings`` (only those that are set)."""
        return cast(PydanticAIModelSettings, dict(self.model_settings))


def build_spec(definition: AgentDefinition) -> AgentSpec:
    return AgentSpec(
        name=definition.name,
        version=definition.version,
        description=definition.description,
        system_prompt=definition.system_prompt,
        model=definition.model,
        model_settings=definition.model_settings.as_dict(),
        input_schema=definition.input_schema,
        output_schema=definition.output_schema,
        tools=tuple(definition.tools),
        capabilities=tuple(definition.capabilities),
        delegates=tuple(definition.delegates),
        max_chain_depth=definition.max_chain_depth,
        chain_strategy=definition.chain_strategy,
        config=definition.config,
    )


class AgentFactory:
    """Specs from the agent repository, and run-time registration with notification."""

    def __init__(self, agents: AgentRepository) -> None:
        self._agents = agents
        self._listeners: list[Listener] = []

    async def spec(self, name: str, version: int | None = None) -> AgentSpec:
        """The spec of the current (or given) version. ``NotFoundError`` if missing."""
        return build_spec(await self._agents.get(name, version))

    def on_register(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(spec)`` (sync or async) after each ``register_agent``; returns a
        function that unsubscribes it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    async def register_agent(
        self, draft: AgentDraft | Mapping[str, Any], *, actor: str | None = None
    ) -> AgentSpec:
        """Store ``draft`` (create, or a new version if its content changed; nothing if equal)
        and return its spec once durable. Listeners are then called in order; a listener's
        exception is logged and does not undo the registration."""
        draft = parse_model(AgentDraft, draft)
        with operation("factory", "register_agent", name=draft.name):
            await self._agents.sync([draft], actor=actor, comment="registered at run time")
            spec = await self.spec(draft.name)
        for listener in list(self._listeners):
            try:
                outcome = listener(spec)
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception as exc:
                log.warning("store.factory.listener_failed", name=spec.name, error=repr(exc))
        return spec
