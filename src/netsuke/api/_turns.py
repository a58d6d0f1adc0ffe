"""What the session, control and chat routes share: the agent system from the context, the
problem for each agent error, and JSON forms of stream events and messages.

Agent errors map to problems (the agent stays alive with its memory unchanged):

| error | status |
|---|---|
| ``AgentNotFoundError``, ``UnknownAgentDefinitionError`` | 404 |
| ``AgentBusyError`` (queue full) | 429, ``Retry-After: 1`` |
| ``InvalidInputError`` | 422 (``errors``) |
| ``RequestKeyReusedError`` (``Idempotency-Key`` reused, other message) | 422 |
| ``RequestInProgressError`` (that ``Idempotency-Key`` is running) | 409, ``Retry-After: 1`` |
| ``SessionMovedError`` (fenced: another node owns the session) | 503, ``Retry-After: 1`` |
| ``TurnCancelledError`` | 409 |
| ``OutputValidationError``, ``ModelCallError`` | 502 |
| ``ModelConfigError`` (no key, no client library, a refused endpoint) | 502 |
| ``TurnTimeoutError`` | 504 |
| ``AgentConfigError`` (a stored definition that cannot run) | 422 |
| the store could not commit the turn (locked, full, read-only) | 503, ``Retry-After`` |
| any other ``TurnError`` | 502 |

A failed turn's ``detail`` is the error's ``reason``: one safe, actionable line such as
``model openai-chat:gpt-4o: OPENAI_API_KEY is not set`` (the same text as the execution's
``error``, ``GET /api/v1/executions/{execution_id}``). Details never carry a key, the prompt
or a model's raw answer.
"""

from __future__ import annotations

from typing import Any

from pydantic_ai.messages import ModelMessagesTypeAdapter

from netsuke.agents import (
    AgentBusyError,
    AgentConfigError,
    AgentNotFoundError,
    Agents,
    InvalidInputError,
    ModelCallError,
    ModelConfigError,
    OutputValidationError,
    RequestInProgressError,
    RequestKeyReusedError,
    SessionMovedError,
    StreamEvent,
    TextDelta,
    ToolCallFinished,
    ToolCallStarted,
    TurnCancelledError,
    TurnCompleted,
    TurnError,
    TurnTimeoutError,
    UnknownAgentDefinitionError,
)
from netsuke.kernel import NetsukeError
from netsuke.store import unavailable_reason

from ._context import ApiContext
from ._monitor import AgentMonitor
from ._problems import ProblemError, store_unavailable

__all__ = [
    "agent_problem",
    "agents_of",
    "dump_messages",
    "event_json",
    "jsonable",
    "monitor_of",
]


def agents_of(ctx: ApiContext) -> Agents:
    """The node's agent system; 503 when the app was made without one."""
    agents = ctx.extras.get("agents")
    if not isinstance(agents, Agents):
        raise ProblemError(503, "Unavailable", "this node runs no agent system")
    return agents


def monitor_of(ctx: ApiContext) -> AgentMonitor:
    monitor = ctx.extras.get("monitor")
    if not isinstance(monitor, AgentMonitor):
        raise ProblemError(503, "Unavailable", "this node runs no agent monitor")
    return monitor


def agent_problem(exc: NetsukeError) -> ProblemError:
    """The problem answering ``exc`` (see the module documentation)."""
    if isinstance(exc, AgentNotFoundError | UnknownAgentDefinitionError):
        return ProblemError(404, "Not found", "no such session or agent")
    if isinstance(exc, AgentBusyError):
        return ProblemError(
            429,
            "Agent busy",
            f"the agent's queue is full ({exc.queued} of {exc.limit}); retry later",
            type="agent-busy",
            headers={"Retry-After": "1"},
        )
    if isinstance(exc, InvalidInputError):
        errors = [_field_error(e) for e in exc.errors]
        return ProblemError(
            422,
            "Validation failed",
            "the message does not match the agent's input schema",
            type="validation",
            errors=errors,
        )
    if isinstance(exc, RequestKeyReusedError):
        return ProblemError(
            422,
            "Idempotency-Key reused",
            "this Idempotency-Key was used with a different message; use a new key",
            type="idempotency-key-reused",
            field="Idempotency-Key",
        )
    if isinstance(exc, RequestInProgressError):
        return ProblemError(
            409,
            "Request in progress",
            "a turn with this Idempotency-Key is still running; retry to get its reply",
            type="request-in-progress",
            headers={"Retry-After": "1"},
        )
    if isinstance(exc, SessionMovedError):
        return ProblemError(
            503,
            "Session moved",
            exc.reason,
            type="session-moved",
            headers={"Retry-After": "1"},
            execution_id=exc.execution_id,
        )
    reason = unavailable_reason(exc)
    if reason is not None:  # the turn was not committed: nothing changed
        return store_unavailable(reason)
    if isinstance(exc, AgentConfigError):
        return ProblemError(
            422,
            "Agent definition cannot run",
            f"{exc.field}: {exc.reason}"[:300],
            type="agent-config",
        )
    if isinstance(exc, TurnTimeoutError):
        return ProblemError(
            504,
            "Turn timed out",
            f"the turn ran over {exc.timeout} s",
            type="turn-timeout",
            execution_id=exc.execution_id,
        )
    if isinstance(exc, TurnCancelledError):
        return ProblemError(
            409,
            "Turn cancelled",
            "the turn was cancelled",
            type="turn-cancelled",
            execution_id=exc.execution_id,
        )
    if isinstance(exc, OutputValidationError):
        return ProblemError(
            502,
            "Invalid model output",
            "the model's output never matched the output schema",
            type="output-invalid",
            execution_id=exc.execution_id,
        )
    if isinstance(exc, ModelConfigError):
        return ProblemError(
            502,
            "Model unavailable",
            exc.reason,
            type="model-unavailable",
            field=exc.field,
            execution_id=exc.execution_id,
        )
    if isinstance(exc, ModelCallError):
        return ProblemError(
            502,
            "Model call failed",
            exc.reason,
            type="model-failed",
            execution_id=exc.execution_id,
        )
    if isinstance(exc, TurnError):
        return ProblemError(
            502, "Turn failed", exc.reason, type="turn-failed", execution_id=exc.execution_id
        )
    return ProblemError(502, "Turn failed", type(exc).__name__, type="turn-failed")


def _field_error(error: str) -> dict[str, str]:
    """``"path: message"`` as ``{"field", "reason"}``, without the offending value (a schema
    message starts with the value: ``'abc' is not of type 'integer'``)."""
    path, _, message = str(error).partition(": ")
    for verb in (" is ", " does ", " should ", " has "):
        if verb in message:
            message = verb.strip() + " " + message.split(verb, 1)[1]
            break
    return {"field": path or "$", "reason": message[:200]}


def jsonable(value: Any) -> Any:
    """``value`` as JSON-compatible data (pydantic models dumped, others via ``str``)."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return str(value)


def event_json(event: StreamEvent) -> tuple[str, dict[str, Any]]:
    """``(sse event name, data)`` for one stream event."""
    if isinstance(event, TextDelta):
        return "delta", {"text": event.text}
    if isinstance(event, ToolCallStarted):
        return "tool_call_started", {
            "tool_name": event.tool_name,
            "tool_call_id": event.tool_call_id,
            "args": jsonable(event.args),
        }
    if isinstance(event, ToolCallFinished):
        return "tool_call_finished", {
            "tool_name": event.tool_name,
            "tool_call_id": event.tool_call_id,
            "result": jsonable(event.result),
            "error": event.error,
        }
    assert isinstance(event, TurnCompleted)
    return "completed", {
        "output": jsonable(event.output),
        "execution_id": event.execution_id,
        "tokens_in": event.tokens_in,
        "tokens_out": event.tokens_out,
    }


def dump_messages(messages: list[Any]) -> list[dict[str, Any]]:
    """pydantic-ai messages as JSON data (the store's format)."""
    out: list[dict[str, Any]] = ModelMessagesTypeAdapter.dump_python(messages, mode="json")
    return out
