"""Conversations, their messages, and executions.

Revision ID: 0002_runtime
Revises: 0001_definitions
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from netsuke.store._models import BigId, JSONType, UTCDateTime

revision = "0002_runtime"
down_revision = "0001_definitions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "conversations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("session_id", sa.String(200), nullable=False),
        sa.Column("agent_name", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(200), nullable=True),
        sa.Column("message_count", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_conversations"),
        sa.UniqueConstraint("session_id", name="uq_conversations_session_id"),
    )
    op.create_index("ix_conversations_agent_name", "conversations", ["agent_name"])
    op.create_index("ix_conversations_user_id", "conversations", ["user_id"])
    op.create_table(
        "executions",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("agent_name", sa.String(64), nullable=True),
        sa.Column("function_name", sa.String(64), nullable=True),
        sa.Column("session_id", sa.String(200), nullable=True),
        sa.Column("parent_id", sa.String(36), nullable=True),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=True),
        sa.Column("tokens_in", sa.Integer(), nullable=False),
        sa.Column("tokens_out", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("details", JSONType, nullable=False),
        sa.CheckConstraint(
            "kind IN ('agent_turn', 'function_call', 'task')", name="ck_executions_kind"
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')",
            name="ck_executions_status",
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["executions.id"],
            name="fk_executions_parent_id_executions",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_executions"),
    )
    for column in ("status", "agent_name", "session_id", "parent_id", "started_at"):
        op.create_index(f"ix_executions_{column}", "executions", [column])
    op.create_table(
        "messages",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("conversation_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("execution_id", sa.String(36), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name="fk_messages_conversation_id_conversations",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["execution_id"],
            ["executions.id"],
            name="fk_messages_execution_id_executions",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_messages"),
        sa.UniqueConstraint("conversation_id", "seq", name="uq_messages_conversation_seq"),
    )
    op.create_index("ix_messages_execution_id", "messages", ["execution_id"])


def downgrade() -> None:
    op.drop_index("ix_messages_execution_id", table_name="messages")
    op.drop_table("messages")
    for column in ("status", "agent_name", "session_id", "parent_id", "started_at"):
        op.drop_index(f"ix_executions_{column}", table_name="executions")
    op.drop_table("executions")
    op.drop_index("ix_conversations_user_id", table_name="conversations")
    op.drop_index("ix_conversations_agent_name", table_name="conversations")
    op.drop_table("conversations")
