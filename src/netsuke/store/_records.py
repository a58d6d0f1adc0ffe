"""Plain pydantic models for runtime records: conversations, executions, audit, API keys."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ._ids import new_id
from ._models import utcnow

__all__ = [
    "ApiKey",
    "AuditEntry",
    "Conversation",
    "Execution",
    "ExecutionKind",
    "ExecutionStatus",
    "IssuedApiKey",
    "Page",
    "Role",
    "TurnReceipt",
    "TurnRequest",
]

T = TypeVar("T")
ExecutionKind = Literal["agent_turn", "function_call", "task"]
ExecutionStatus = Literal["pending", "running", "succeeded", "failed", "cancelled"]
Role = Literal["admin", "operator", "user"]


class Page(BaseModel, Generic[T]):
    """One page of a listing. Pass ``next_cursor`` back as ``cursor`` for the next page;
    ``None`` means this was the last page."""

    model_config = ConfigDict(frozen=True)

    items: list[T]
    next_cursor: str | None = None


class Conversation(BaseModel):
    model_config = ConfigDict(frozen=True)

    session_id: str
    agent_name: str
    user_id: str | None
    message_count: int
    created_at: datetime
    updated_at: datetime
    incarnation: int = 0
    """The ownership epoch: moved on by each claim (``open(..., claim=True)``)."""
    owner_node: str | None = None
    """The node holding the session (``None``: never claimed since migration 0011)."""
    owner_incarnation: int | None = None
    """The run of ``owner_node`` that claimed it."""
    restart: str | None = None
    """The OTP restart type at the last claim (``None``: ``transient``)."""
    host_state: str | None = None
    """``active`` (a process hosts it), ``evicted`` or ``stopped`` (``None``: ``active``)."""
    owner_pid: str | None = None
    """The session's owner process (``Agents.attach_owner``, ``start_agent(owner=...)``) in
    the cluster codec's pid encoding, ``{"$p":[node id, id]}``; ``None``: no owner (or one
    that is not a cluster pid). Not the hosting node (``owner_node``)."""


class TurnRequest(BaseModel):
    """A turn committed with a request id: its stored reply (``reply``, JSON text), the hash
    of the request body it answered, the execution, the epoch it committed at and the
    position of its first message."""

    model_config = ConfigDict(frozen=True)

    session_id: str
    request_key: str
    body_hash: str
    reply: str
    execution_id: str | None
    epoch: int | None
    first_seq: int
    created_at: datetime


class Execution(BaseModel):
    """One execution: an agent turn, a function call or a task.

    ``id`` defaults to a new UUID; ``started_at`` to now; ``duration_ms`` is computed from
    ``started_at``/``ended_at`` when both are set and it is not given. ``parent_id`` links the
    steps of a chain (delegation, tool calls) to the execution that caused them."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(default_factory=new_id)
    kind: ExecutionKind = "agent_turn"
    status: ExecutionStatus = "succeeded"
    agent_name: str | None = None
    function_name: str | None = None
    session_id: str | None = None
    parent_id: str | None = None
    started_at: datetime = Field(default_factory=utcnow)
    ended_at: datetime | None = None
    duration_ms: float | None = None
    tokens_in: int = Field(default=0, ge=0)
    tokens_out: int = Field(default=0, ge=0)
    error: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _duration(self) -> Execution:
        if self.duration_ms is None and self.ended_at is not None:
            self.duration_ms = (self.ended_at - self.started_at).total_seconds() * 1000.0
        return self


class TurnReceipt(BaseModel):
    """What ``append_turn`` returns once the turn is committed: the positions of its messages
    (``first_seq``..``last_seq``, 0-based in the conversation) and the execution id."""

    model_config = ConfigDict(frozen=True)

    session_id: str
    first_seq: int
    last_seq: int
    execution_id: str | None


class AuditEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int
    at: datetime
    actor: str
    action: str
    target: str
    outcome: str
    details: dict[str, Any]


class ApiKey(BaseModel):
    """An API key as stored: the clear ``prefix`` identifies it; the secret is kept only as a
    sha256 hash."""

    model_config = ConfigDict(frozen=True)

    prefix: str
    name: str
    role: Role
    created_by: str | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class IssuedApiKey(BaseModel):
    """A new key and its secret. The secret is shown this once and never stored."""

    model_config = ConfigDict(frozen=True)

    key: ApiKey
    secret: str
