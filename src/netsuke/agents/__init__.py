"""Netsuke's agents: supervised, named, stateful LLM agents on the kernel and the store.

An agent session is a kernel process (``AgentServer``) under one ``DynamicSupervisor``; each
turn runs in a supervised task with a timeout, is committed to the store before its reply is
returned, and survives crashes of the server. ``Agents`` is the facade; ``AgentConfig`` says
how to run an agent (from code or from a stored definition); models come from pydantic-ai, with
the ``OfflineModel`` as the default. See ``docs/agents.md``.
"""

from ._config import AgentConfig, OwnerPolicy, PromptContext, SystemPrompt, VersionPolicy
from ._context import (
    ToolCall,
    TurnContext,
    current_tool_call,
    current_turn,
    tool_idempotency_key,
)
from ._endpoints import (
    PROVIDERS,
    EndpointGuard,
    EndpointRefusedError,
    ProviderInfo,
    key_env_for,
    model_problem,
    parse_allow_hosts,
    redact_secrets,
)
from ._errors import (
    AgentBusyError,
    AgentConfigError,
    AgentError,
    AgentNotFoundError,
    InvalidInputError,
    ModelCallError,
    ModelConfigError,
    OutputValidationError,
    RequestInProgressError,
    RequestKeyReusedError,
    SessionMovedError,
    TurnCancelledError,
    TurnError,
    TurnTimeoutError,
    UnknownAgentDefinitionError,
)
from ._memory import MemoryPolicy
from ._models import RetryingModel, is_transient, resolve_model
from ._offline import OFFLINE_MARK, OfflineModel
from ._queries import AgentQuery
from ._runner import TurnResult
from ._server import AgentServer, agent_load
from ._stream import StreamEvent, TextDelta, ToolCallFinished, ToolCallStarted, TurnCompleted
from ._system import AgentInfo, Agents, SessionRef, scoped_session_name

__all__ = [
    "OFFLINE_MARK",
    "PROVIDERS",
    "AgentBusyError",
    "AgentConfig",
    "AgentConfigError",
    "AgentError",
    "AgentInfo",
    "AgentNotFoundError",
    "AgentQuery",
    "AgentServer",
    "Agents",
    "EndpointGuard",
    "EndpointRefusedError",
    "InvalidInputError",
    "MemoryPolicy",
    "ModelCallError",
    "ModelConfigError",
    "OfflineModel",
    "OutputValidationError",
    "OwnerPolicy",
    "PromptContext",
    "ProviderInfo",
    "RequestInProgressError",
    "RequestKeyReusedError",
    "RetryingModel",
    "SessionMovedError",
    "SessionRef",
    "StreamEvent",
    "SystemPrompt",
    "TextDelta",
    "ToolCall",
    "ToolCallFinished",
    "ToolCallStarted",
    "TurnCancelledError",
    "TurnCompleted",
    "TurnContext",
    "TurnError",
    "TurnResult",
    "TurnTimeoutError",
    "UnknownAgentDefinitionError",
    "VersionPolicy",
    "agent_load",
    "current_tool_call",
    "current_turn",
    "is_transient",
    "key_env_for",
    "model_problem",
    "parse_allow_hosts",
    "redact_secrets",
    "resolve_model",
    "scoped_session_name",
    "tool_idempotency_key",
]
