"""The exceptions of the agents layer.

Usage mistakes are kept apart from run-time failures; every exception carries fields a caller
can act on. A turn error never crashes the agent server: the caller gets it, the agent stays
alive, and its memory is unchanged::

    NetsukeError
    ├── UsageError
    │   └── AgentConfigError        a configuration that can never work (field, reason)
    └── AgentError                  a failure at run time; handle it
        ├── AgentNotFoundError      no running, hibernated or evicted agent by that name
        ├── UnknownAgentDefinitionError   no stored definition by that name
        ├── AgentBusyError          the turn queue is full (agent, queued, limit)
        ├── InvalidInputError       the message fails the input schema (agent, errors)
        ├── RequestKeyReusedError   a request id reused with another message (session, key)
        ├── RequestInProgressError  a turn with that request id is running (session, key)
        └── TurnError               a turn failed; memory unchanged (agent, execution_id,
            │                       reason)
            ├── TurnTimeoutError    the turn ran longer than the agent's turn timeout
            ├── TurnCancelledError  ``cancel`` stopped the turn (or the agent stopped)
            ├── OutputValidationError  the model's output kept failing the output schema
            ├── ModelConfigError    the model cannot be used as configured on this node (no
            │                       key, no client library, a refused endpoint): field
            ├── ModelCallError      the model failed (after retries of transient errors)
            └── SessionMovedError   the session was taken over (or is owned by another live
                                    node): the turn was fenced, nothing stored; retry

Every ``TurnError`` has a ``reason``: one line, safe to show to the caller and to log (no key,
no prompt, no model output), saying what failed and what to do, e.g. ``model
openai-chat:gpt-4o: OPENAI_API_KEY is not set``. The API's problem ``detail``, the CLI, the
logs, the ``turn.finished`` event and the execution row's ``error`` all carry it.
"""

from __future__ import annotations

from typing import Any

from netsuke.kernel import NetsukeError, UsageError

__all__ = [
    "AgentBusyError",
    "AgentConfigError",
    "AgentError",
    "AgentNotFoundError",
    "InvalidInputError",
    "ModelCallError",
    "ModelConfigError",
    "OutputValidationError",
    "RequestInProgressError",
    "RequestKeyReusedError",
    "SessionMovedError",
    "TurnCancelledError",
    "TurnError",
    "TurnTimeoutError",
    "UnknownAgentDefinitionError",
]


class AgentConfigError(UsageError, ValueError):
    """A configuration that can never work: ``field`` and ``reason``."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class AgentError(NetsukeError):
    """Base of the run-time failures of the agents layer."""


class AgentNotFoundError(AgentError, LookupError):
    """No agent is running, hibernated or evicted under ``name``."""

    def __init__(self, name: Any) -> None:
        super().__init__(f"no agent {name!r}")
        self.name = name


class UnknownAgentDefinitionError(AgentError, LookupError):
    """No stored agent definition ``name``."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no stored agent definition {name!r}")
        self.name = name


class AgentBusyError(AgentError):
    """The agent's turn queue holds ``limit`` turns already (``queued`` waiting + running)."""

    def __init__(self, agent: str, queued: int, limit: int) -> None:
        super().__init__(f"agent {agent!r} is busy: {queued} turns queued (limit {limit})")
        self.agent = agent
        self.queued = queued
        self.limit = limit


class InvalidInputError(AgentError, ValueError):
    """The message does not fit the agent's input schema; ``errors`` lists why. Nothing ran."""

    def __init__(self, agent: str, errors: list[str]) -> None:
        super().__init__(f"invalid input for agent {agent!r}: {'; '.join(errors)}")
        self.agent = agent
        self.errors = errors


class TurnError(AgentError):
    """A turn failed. The agent is alive and its memory is as before the turn."""

    def __init__(
        self,
        agent: str,
        message: str,
        *,
        execution_id: str | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.agent = agent
        self.execution_id = execution_id
        self.reason = reason if reason is not None else message
        """One safe, actionable line (see the module documentation)."""


class TurnTimeoutError(TurnError, TimeoutError):
    """The turn ran longer than ``timeout`` seconds and was stopped (model call and tools)."""

    def __init__(self, agent: str, timeout: float, *, execution_id: str | None = None) -> None:
        super().__init__(
            agent, f"turn of {agent!r} timed out after {timeout}s", execution_id=execution_id
        )
        self.timeout = timeout


class TurnCancelledError(TurnError):
    """The turn was cancelled before it finished (``cancel``, or the agent stopped)."""

    def __init__(self, agent: str, *, reason: str = "cancelled", execution_id: str | None = None):
        super().__init__(agent, f"turn of {agent!r} {reason}", execution_id=execution_id)
        self.reason = reason


class OutputValidationError(TurnError):
    """The model's output failed the output schema after every output retry."""

    def __init__(self, agent: str, detail: str, *, execution_id: str | None = None) -> None:
        super().__init__(
            agent,
            f"output of {agent!r} invalid: {detail}",
            execution_id=execution_id,
            reason=f"the output of {agent!r} never matched its output schema (after retries)",
        )
        self.detail = detail


class ModelConfigError(TurnError):
    """The agent's model cannot be used as configured on this node: ``field`` (``model``,
    ``config.base_url``, ``config.api_key_env``) and ``reason`` say what to change."""

    def __init__(
        self, agent: str, field: str, reason: str, *, execution_id: str | None = None
    ) -> None:
        super().__init__(agent, reason, execution_id=execution_id)
        self.field = field


class ModelCallError(TurnError):
    """The model call failed: ``kind`` is the exception class name, ``status`` an HTTP status
    when there was one, ``transient`` whether retries were tried and exhausted."""

    def __init__(
        self,
        agent: str,
        detail: str,
        *,
        kind: str,
        status: int | None = None,
        transient: bool = False,
        execution_id: str | None = None,
    ) -> None:
        super().__init__(
            agent, f"model call of {agent!r} failed: {detail}", execution_id=execution_id
        )
        self.reason = detail
        self.detail = detail
        self.kind = kind
        self.status = status
        self.transient = transient


class SessionMovedError(TurnError):
    """The turn was not committed because its node no longer owns the session at the turn's
    epoch (``current_epoch``, when known; ``owner``: the live owner, when known). Nothing of
    the turn is stored and the caller was never acknowledged: retrying is safe."""

    def __init__(
        self,
        agent: str,
        session: str,
        *,
        current_epoch: int | None = None,
        owner: str | None = None,
        execution_id: str | None = None,
    ) -> None:
        where = f"node {owner!r}" if owner is not None else "another owner"
        super().__init__(
            agent,
            f"session {session!r} moved to {where}; the turn was not committed",
            execution_id=execution_id,
            reason=f"session {session!r} is owned by {where}"
            + (f" (epoch {current_epoch})" if current_epoch is not None else "")
            + "; the turn was not committed: retry it",
        )
        self.session = session
        self.current_epoch = current_epoch
        self.owner = owner
        self.owner_id: str | None = None  # ``name#incarnation`` of the live owner, when known


class RequestKeyReusedError(AgentError, ValueError):
    """Request id ``key`` of session ``session`` was used before with a different message.
    Nothing ran."""

    def __init__(self, session: str, key: str) -> None:
        super().__init__(f"session {session!r}: request id reused with a different message")
        self.session = session
        self.key = key


class RequestInProgressError(AgentError):
    """A turn with request id ``key`` of session ``session`` is running on this node; retry
    once it finished to get its reply. Nothing ran."""

    def __init__(self, session: str, key: str) -> None:
        super().__init__(f"session {session!r}: a turn with this request id is still running")
        self.session = session
        self.key = key
