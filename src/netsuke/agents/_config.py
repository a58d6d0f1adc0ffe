"""Agent configuration, from code or from a stored definition.

``AgentConfig`` is immutable and shared by every session of an agent: an idle session costs
only its own name and ids, not a copy of its configuration. Options (defaults in brackets):

* ``name`` [``"agent"``]: the definition name (recorded on conversations and executions;
  ``^[A-Za-z][A-Za-z0-9_.-]{0,63}$``).
* ``system_prompt`` [``""``]: a string, or a *generator* ``fn(ctx: PromptContext) -> str``
  (sync or async) called before every turn with the user, the time and the memory.
* ``model`` [``None``: the offline model]: a pydantic-ai model string or ``Model`` object;
  ``base_url`` for OpenAI-compatible, Ollama and Anthropic endpoints; the key from
  ``api_key_env`` (the name of an environment variable) or, in code only, ``api_key``;
  ``endpoint_guard`` [none] checks every request to ``base_url`` (the node sets it for stored
  definitions); ``model_settings`` [none]; ``model_retries`` [3] attempts on transient model
  errors. See ``netsuke.agents._endpoints`` and docs/agents.md "Models and credentials".
* ``memory`` [``MemoryPolicy()``: whole history]: the context window;
  ``initial_memory`` [none]: messages a new conversation starts with.
* ``input_schema`` / ``output_schema`` [none]: a pydantic model class or a JSON Schema
  (``dict``). Input is validated before the model is called; output is validated with
  ``output_retries`` [2] retries; ``tool_retries`` [2] per tool.
* ``tools`` [none]: Python callables (plain, or taking ``RunContext`` first) and
  ``pydantic_ai.Tool`` objects. A tool's exception goes back to the model as a tool error.
* ``capabilities`` [none]: what the agent can do (routing reads them from the registry).
* ``turn_timeout`` [``120.0`` s], ``max_queue`` [``16``]: turns waiting beyond it get
  ``AgentBusyError``.
* ``owner_policy`` [``"stop"``]: when the owner exits the agent stops (``"stop"``) or drops its
  in-process memory and waits for a new owner (``"hibernate"``).
* ``idle_hibernate`` [``30.0`` s]: idle time after which the session drops its in-process
  history (it is reloaded from the store on the next turn); ``idle_evict`` [``None``: never]:
  idle time after which the session leaves memory entirely; the next message restarts it.
* ``restart`` [``"transient"``]: the session's OTP restart type, as a child of its supervisor
  and when its node dies (docs/cluster.md, "Failover"): ``"permanent"`` (always restarted;
  never evicted when idle, only hibernated), ``"transient"`` (restarted when it ended
  abnormally: a crash, or its node's death, ``noconnection``), ``"temporary"`` (never
  restarted; a later call revives it from the store).
* ``version_policy`` [``"next_turn"``]: when a running session of a stored definition moves
  to a newer version of it: at its next turn (``"next_turn"``), or only when its process
  starts again (``"on_restart"``: a crash restart, a revival, ``stop`` then a new session).
  New sessions always start from the current version. ``version`` is the definition version
  the configuration was built from (``None``: not from the store; such a session never moves).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models import Model
from pydantic_ai.tools import Tool

from ._endpoints import EndpointGuard
from ._errors import AgentConfigError
from ._memory import MemoryPolicy

if TYPE_CHECKING:
    from netsuke.store import AgentSpec

__all__ = [
    "AgentConfig",
    "OwnerPolicy",
    "PromptContext",
    "RestartType",
    "SystemPrompt",
    "VersionPolicy",
]

OwnerPolicy = Literal["stop", "hibernate"]
VersionPolicy = Literal["next_turn", "on_restart"]
RestartType = Literal["permanent", "transient", "temporary"]
Schema = type[BaseModel] | Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class PromptContext:
    """What a system-prompt generator sees: the agent, session and user, the time of the turn
    (UTC), and the memory (the windowed history the model will get)."""

    agent: str
    session: str
    user: str | None
    now: datetime
    memory: Sequence[ModelMessage]


SystemPrompt = str | Callable[[PromptContext], str | Awaitable[str]]

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


@dataclass(frozen=True)
class AgentConfig:
    """How to run an agent (see the module documentation for every option)."""

    name: str = "agent"
    system_prompt: SystemPrompt = ""
    model: str | Model | None = None
    model_settings: Mapping[str, Any] | None = None
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    api_key_env: str | None = None
    endpoint_guard: EndpointGuard | None = field(default=None, repr=False, compare=False)
    model_retries: int = 3
    memory: MemoryPolicy = field(default_factory=MemoryPolicy)
    initial_memory: Sequence[ModelMessage] = ()
    input_schema: Schema | None = None
    output_schema: Schema | None = None
    output_retries: int = 2
    tool_retries: int = 2
    tools: Sequence[Callable[..., Any] | Tool[Any]] = ()
    capabilities: tuple[str, ...] = ()
    description: str = ""
    turn_timeout: float = 120.0
    max_queue: int = 16
    owner_policy: OwnerPolicy = "stop"
    idle_hibernate: float | None = 30.0
    idle_evict: float | None = None
    version_policy: VersionPolicy = "next_turn"
    restart: RestartType = "transient"
    version: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    _cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = self.name
        if not (0 < len(n) <= 64 and n[0].isascii() and n[0].isalpha() and set(n) <= _NAME_CHARS):
            raise AgentConfigError("name", f"{n!r} must match ^[A-Za-z][A-Za-z0-9_.-]{{0,63}}$")
        if not (isinstance(self.system_prompt, str) or callable(self.system_prompt)):
            raise AgentConfigError("system_prompt", "a string or a callable(PromptContext)")
        if not self.turn_timeout > 0:
            raise AgentConfigError("turn_timeout", "must be > 0 seconds")
        if self.max_queue < 1:
            raise AgentConfigError("max_queue", "must be >= 1")
        if self.owner_policy not in ("stop", "hibernate"):
            raise AgentConfigError("owner_policy", "'stop' or 'hibernate'")
        if self.restart not in ("permanent", "transient", "temporary"):
            raise AgentConfigError("restart", "'permanent', 'transient' or 'temporary'")
        if self.version_policy not in ("next_turn", "on_restart"):
            raise AgentConfigError("version_policy", "'next_turn' or 'on_restart'")
        for f in ("idle_hibernate", "idle_evict"):
            v = getattr(self, f)
            if v is not None and v <= 0:
                raise AgentConfigError(f, "must be > 0 seconds or None")
        if self.output_retries < 0 or self.tool_retries < 0 or self.model_retries < 1:
            raise AgentConfigError("retries", "output/tool retries >= 0, model_retries >= 1")
        for f in ("input_schema", "output_schema"):
            s = getattr(self, f)
            if s is not None and not (
                isinstance(s, Mapping) or (isinstance(s, type) and issubclass(s, BaseModel))
            ):
                raise AgentConfigError(f, "a pydantic model class or a JSON Schema dict")
        for t in self.tools:
            if not (isinstance(t, Tool) or callable(t)):
                raise AgentConfigError("tools", f"{t!r} is neither a callable nor a Tool")
        object.__setattr__(self, "capabilities", tuple(self.capabilities))
        object.__setattr__(self, "tools", tuple(self.tools))
        if self.input_schema is not None:
            from ._schema import InputSchema

            self._cache["input"] = InputSchema(self.input_schema)

    def replace(self, **changes: Any) -> AgentConfig:
        """A copy with ``changes`` (a fresh cache: the model and agent are built again)."""
        changes.setdefault("_cache", {})
        return replace(self, **changes)

    @property
    def generated_prompt(self) -> bool:
        return not isinstance(self.system_prompt, str)

    async def render_prompt(self, ctx: PromptContext) -> str:
        sp = self.system_prompt
        if isinstance(sp, str):
            return sp
        out = sp(ctx)
        if inspect.isawaitable(out):
            out = await out
        return str(out)

    @classmethod
    def from_spec(
        cls,
        spec: AgentSpec,
        *,
        tools: Sequence[Callable[..., Any] | Tool[Any]] = (),
        system_prompt: SystemPrompt | None = None,
        model: str | Model | None = None,
        **overrides: Any,
    ) -> AgentConfig:
        """A configuration from a stored definition (``await store.factory.spec(name)``).

        ``tools`` are the tool objects for the names the definition lists (the sandbox layer
        supplies ``pydantic_ai.Tool`` objects for stored functions, the routing layer
        delegation tools). ``spec.config`` may set ``turn_timeout``, ``max_queue``,
        ``owner_policy``, ``idle_hibernate``, ``idle_evict``, ``version_policy``, ``restart``,
        ``base_url``,
        ``api_key_env``, ``max_messages``, ``max_tokens``, ``output_retries``, ``tool_retries``;
        ``overrides`` win over both. A key is never read from a definition (``config.api_key``
        is ignored: the store refuses it)."""
        conf = dict(spec.config)
        settings = dict(spec.model_settings)
        base_url = overrides.pop("base_url", conf.get("base_url") or settings.pop("base_url", None))
        memory = overrides.pop(
            "memory",
            MemoryPolicy(max_messages=conf.get("max_messages"), max_tokens=conf.get("max_tokens")),
        )
        known: dict[str, Any] = {
            k: conf[k]
            for k in (
                "turn_timeout",
                "max_queue",
                "owner_policy",
                "idle_hibernate",
                "idle_evict",
                "version_policy",
                "restart",
                "output_retries",
                "tool_retries",
                "model_retries",
            )
            if k in conf
        }
        spec_model: str | None = spec.model
        if spec_model == "offline":
            spec_model = None
        kwargs: dict[str, Any] = {
            "name": spec.name,
            "system_prompt": spec.system_prompt if system_prompt is None else system_prompt,
            "model": spec_model if model is None else model,
            "model_settings": settings or None,
            "base_url": base_url,
            "api_key_env": conf.get("api_key_env") or None,
            "memory": memory,
            "input_schema": spec.input_schema,
            "output_schema": spec.output_schema,
            "tools": tuple(tools),
            "capabilities": tuple(spec.capabilities),
            "description": spec.description,
            "version": spec.version,
            "extra": {
                "delegates": list(spec.delegates),
                "max_chain_depth": spec.max_chain_depth,
                "chain_strategy": spec.chain_strategy,
                "tool_names": list(spec.tools),
            },
            **known,
        }
        kwargs.update(overrides)
        return cls(**kwargs)
