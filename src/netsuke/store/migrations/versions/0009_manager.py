"""The AgentManager's state: ``manager_agents`` (last state and desired state per package
agent) and ``manager_agent_events`` (history of state changes).

Revision ID: 0009_manager
Revises: 0008_owner_ids
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from netsuke.store._models import BigId, JSONType, UTCDateTime

revision = "0009_manager"
down_revision = "0008_owner_ids"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "manager_agents",
        sa.Column("agent_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("desired", sa.String(16), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("restarts", sa.Integer(), nullable=False),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("exit_signal", sa.String(16), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("agent_id", name="pk_manager_agents"),
    )
    op.create_table(
        "manager_agent_events",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("agent_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("details", JSONType, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_manager_agent_events"),
    )
    op.create_index("ix_manager_agent_events_agent_id", "manager_agent_events", ["agent_id"])


def downgrade() -> None:
    op.drop_index("ix_manager_agent_events_agent_id", table_name="manager_agent_events")
    op.drop_table("manager_agent_events")
    op.drop_table("manager_agents")
