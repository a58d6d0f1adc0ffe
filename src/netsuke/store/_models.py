"""SQLAlchemy 2 ORM models. Only the repositories import this module.

The Alembic migrations in ``migrations/versions`` create exactly these tables; a test compares
the migrated database with this metadata on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

__all__ = [
    "AgentRow",
    "AgentVersionRow",
    "ApiKeyRow",
    "AuditRow",
    "Base",
    "ClusterNameRow",
    "ClusterNodeRow",
    "ConversationRow",
    "ExecutionRow",
    "FunctionRow",
    "FunctionVersionRow",
    "ManagerAgentEventRow",
    "ManagerAgentRow",
    "MessageRow",
    "TaskRow",
    "TurnRequestRow",
    "WebhookDeliveryRow",
    "WebhookRow",
    "WorkflowRunRow",
    "WorkflowStepRow",
    "utcnow",
]

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

EXECUTION_KINDS = ("agent_turn", "function_call", "task")
EXECUTION_STATUSES = ("pending", "running", "succeeded", "failed", "cancelled")
ROLES = ("admin", "operator", "user")
TASK_STATUSES = ("queued", "leased", "succeeded", "dead")
WORKFLOW_STATUSES = ("running", "succeeded", "failed")
STEP_STATUSES = ("pending", "running", "succeeded", "failed")
DELIVERY_STATUSES = ("pending", "succeeded", "failed")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on every dialect (SQLite keeps no zone, so it is added back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONType = JSON().with_variant(JSONB(), "postgresql")
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSONType}


class AgentRow(Base):
    __tablename__ = "agents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    current_version: Mapped[int] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(200), index=True)
    # " cap1 cap2 " for portable exact-word filtering with LIKE (names hold no spaces).
    capabilities_index: Mapped[str] = mapped_column(Text, default=" ")
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class AgentVersionRow(Base):
    __tablename__ = "agent_versions"
    __table_args__ = (
        UniqueConstraint("agent_id", "version", name="uq_agent_versions_agent_version"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    description: Mapped[str] = mapped_column(Text)
    system_prompt: Mapped[str] = mapped_column(Text)
    model: Mapped[str] = mapped_column(String(200))
    model_settings: Mapped[dict[str, Any]]
    input_schema: Mapped[dict[str, Any] | None]
    output_schema: Mapped[dict[str, Any] | None]
    capabilities: Mapped[list[str]] = mapped_column(JSONType)
    tools: Mapped[list[str]] = mapped_column(JSONType)
    delegates: Mapped[list[str]] = mapped_column(JSONType)
    max_chain_depth: Mapped[int] = mapped_column(Integer)
    chain_strategy: Mapped[str] = mapped_column(String(32))
    config: Mapped[dict[str, Any]]
    content_hash: Mapped[str] = mapped_column(String(64))
    comment: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime]


class FunctionRow(Base):
    __tablename__ = "functions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    current_version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class FunctionVersionRow(Base):
    __tablename__ = "function_versions"
    __table_args__ = (
        UniqueConstraint("function_id", "version", name="uq_function_versions_function_version"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    function_id: Mapped[int] = mapped_column(ForeignKey("functions.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    description: Mapped[str] = mapped_column(Text)
    code: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    input_schema: Mapped[dict[str, Any] | None]
    output_schema: Mapped[dict[str, Any] | None]
    is_async: Mapped[bool] = mapped_column(Boolean)
    limits: Mapped[dict[str, Any]]
    allowed_imports: Mapped[list[str]] = mapped_column(JSONType)
    content_hash: Mapped[str] = mapped_column(String(64))
    created_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime]


class ConversationRow(Base):
    __tablename__ = "conversations"
    __table_args__ = (Index("ix_conversations_owner", "owner_node", "owner_incarnation"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(String(200), unique=True)
    agent_name: Mapped[str] = mapped_column(String(64), index=True)
    user_id: Mapped[str | None] = mapped_column(String(200), index=True)
    message_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    #: Which process hosts the session (migration 0007): bumped by each claim, checked by
    #: every fenced turn commit.
    incarnation: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    #: The node holding the session and the run of that node (migration 0011); the claim
    #: that writes them moves ``incarnation`` (the ownership epoch) on by one.
    owner_node: Mapped[str | None] = mapped_column(String(200))
    owner_incarnation: Mapped[int | None] = mapped_column(BigInteger)
    #: The OTP restart type at the last claim and whether a process hosts the session
    #: (``active``, ``evicted``, ``stopped``; migration 0013): what failover restarts.
    restart: Mapped[str | None] = mapped_column(String(16))
    host_state: Mapped[str | None] = mapped_column(String(16))
    #: The session's owner process (migration 0014): the cluster codec's encoding of its
    #: pid (``{"$p":[node id, id]}``), written by each claim and by ``attach_owner``,
    #: cleared when the owner exits; a survivor that takes the session over monitors it.
    owner_pid: Mapped[str | None] = mapped_column(String(300))


class TurnRequestRow(Base):
    """A turn committed with a request id (``Idempotency-Key``), in the turn's transaction."""

    __tablename__ = "turn_requests"

    session_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    request_key: Mapped[str] = mapped_column(String(200), primary_key=True)
    body_hash: Mapped[str] = mapped_column(String(64))
    reply: Mapped[str] = mapped_column(Text)
    execution_id: Mapped[str | None] = mapped_column(String(64))
    epoch: Mapped[int | None] = mapped_column(Integer)
    first_seq: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(index=True)


#: The predicate of the partial status index; a query for another status adds it so that
#: SQLite (which does not prove ``status = 'failed'`` implies it) can use the index.
NOT_SUCCEEDED = "status <> 'succeeded'"


class ExecutionRow(Base):
    __tablename__ = "executions"
    __table_args__ = (
        CheckConstraint(f"kind IN {EXECUTION_KINDS!r}", name="kind"),
        CheckConstraint(f"status IN {EXECUTION_STATUSES!r}", name="status"),
        # Partial (migration 0006): a succeeded, top-level turn writes neither.
        Index(
            "ix_executions_status",
            "status",
            sqlite_where=text(NOT_SUCCEEDED),
            postgresql_where=text(NOT_SUCCEEDED),
        ),
        Index(
            "ix_executions_parent_id",
            "parent_id",
            sqlite_where=text("parent_id IS NOT NULL"),
            postgresql_where=text("parent_id IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    agent_name: Mapped[str | None] = mapped_column(String(64), index=True)
    function_name: Mapped[str | None] = mapped_column(String(64))
    session_id: Mapped[str | None] = mapped_column(String(200), index=True)
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("executions.id", ondelete="SET NULL"))
    started_at: Mapped[datetime] = mapped_column(index=True)
    ended_at: Mapped[datetime | None]
    duration_ms: Mapped[float | None] = mapped_column(Float)
    tokens_in: Mapped[int] = mapped_column(Integer, default=0)
    tokens_out: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]]


class MessageRow(Base):
    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("conversation_id", "seq", name="uq_messages_conversation_seq"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    payload: Mapped[str] = mapped_column(Text)
    # Not indexed (migration 0006): nothing reads messages by execution, and executions are
    # never deleted, so the foreign key's ON DELETE never needs to find them.
    execution_id: Mapped[str | None] = mapped_column(
        ForeignKey("executions.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime]


class AuditRow(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(String(200), index=True)
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(String(300), index=True)
    outcome: Mapped[str] = mapped_column(String(16))
    details: Mapped[dict[str, Any]]


class ApiKeyRow(Base):
    __tablename__ = "api_keys"
    __table_args__ = (CheckConstraint(f"role IN {ROLES!r}", name="role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    created_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class TaskRow(Base):
    """A task of the durable queue. ``route`` is the sorted capabilities joined by spaces, so a
    worker filters with ``route IN (...)``; ``lease_*`` say who holds it and until when."""

    __tablename__ = "tasks"
    __table_args__ = (
        CheckConstraint(f"status IN {TASK_STATUSES!r}", name="status"),
        Index("ix_tasks_ready", "status", "run_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64), index=True)
    payload: Mapped[dict[str, Any]]
    capabilities: Mapped[list[str]] = mapped_column(JSONType)
    route: Mapped[str] = mapped_column(String(300))
    priority: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    max_attempts: Mapped[int] = mapped_column(Integer)
    backoff_base: Mapped[float] = mapped_column(Float)
    backoff_cap: Mapped[float] = mapped_column(Float)
    timeout: Mapped[float | None] = mapped_column(Float)
    run_at: Mapped[datetime]
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None]
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    result: Mapped[Any | None] = mapped_column(JSONType)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]


class WorkflowRunRow(Base):
    __tablename__ = "workflow_runs"
    __table_args__ = (CheckConstraint(f"status IN {WORKFLOW_STATUSES!r}", name="status"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    workflow: Mapped[str] = mapped_column(String(200), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    input: Mapped[Any | None] = mapped_column(JSONType)
    steps: Mapped[list[str]] = mapped_column(JSONType)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]


class WorkflowStepRow(Base):
    __tablename__ = "workflow_steps"
    __table_args__ = (
        CheckConstraint(f"status IN {STEP_STATUSES!r}", name="status"),
        UniqueConstraint("run_id", "step", name="uq_workflow_steps_run_step"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("workflow_runs.id", ondelete="CASCADE"))
    step: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    output: Mapped[Any | None] = mapped_column(JSONType)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class WebhookRow(Base):
    __tablename__ = "webhooks"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    topics: Mapped[list[str]] = mapped_column(JSONType)
    secret: Mapped[str] = mapped_column(String(128))
    description: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime]


class WebhookDeliveryRow(Base):
    __tablename__ = "webhook_deliveries"
    __table_args__ = (CheckConstraint(f"status IN {DELIVERY_STATUSES!r}", name="status"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    webhook_id: Mapped[str] = mapped_column(
        ForeignKey("webhooks.id", ondelete="CASCADE"), index=True
    )
    event_id: Mapped[str] = mapped_column(String(100))
    topic: Mapped[str] = mapped_column(String(100))
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    response_status: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    next_attempt_at: Mapped[datetime | None]


class ManagerAgentRow(Base):
    """The AgentManager's last known state of one package agent (seed 003's Agent State DB):
    ``desired`` is what a restarted manager restores (``running`` or ``stopped``)."""

    __tablename__ = "manager_agents"

    agent_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    desired: Mapped[str] = mapped_column(String(16))
    pid: Mapped[int | None] = mapped_column(Integer)
    restarts: Mapped[int] = mapped_column(Integer)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    exit_signal: Mapped[str | None] = mapped_column(String(16))
    updated_at: Mapped[datetime]


class ManagerAgentEventRow(Base):
    """One state change of a package agent, with its details (exit code, signal, reason)."""

    __tablename__ = "manager_agent_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    agent_id: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime]
    details: Mapped[dict[str, Any]]


class ClusterNodeRow(Base):
    """One run (incarnation) of a cluster node and its membership lease. Times are seconds
    since the epoch read from the database's clock; the lease is live while
    ``expires_at`` is later than the database's ``now``."""

    __tablename__ = "cluster_nodes"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    incarnation: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    started_at: Mapped[float] = mapped_column(Float)
    renewed_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)
    lease_s: Mapped[float] = mapped_column(Float)
    processes: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    info: Mapped[dict[str, Any]]
    labels: Mapped[dict[str, Any] | None]  # 0012: the node's k=v labels


class ClusterNameRow(Base):
    """A name registered cluster-wide: unique (its primary key), owned by one process of one
    node incarnation."""

    __tablename__ = "cluster_names"
    __table_args__ = (Index("ix_cluster_names_node_name", "node_name", "incarnation"),)

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    node_name: Mapped[str] = mapped_column(String(64))
    incarnation: Mapped[int] = mapped_column(BigInteger)
    pid_id: Mapped[int] = mapped_column(BigInteger)
    meta: Mapped[dict[str, Any]]
    registered_at: Mapped[float] = mapped_column(Float)
