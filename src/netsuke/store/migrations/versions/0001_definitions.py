"""Agent and function definitions, each with its versions.

Revision ID: 0001_definitions
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from netsuke.store._models import JSONType, UTCDateTime

revision = "0001_definitions"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("current_version", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("capabilities_index", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_agents"),
        sa.UniqueConstraint("name", name="uq_agents_name"),
    )
    op.create_index("ix_agents_model", "agents", ["model"])
    op.create_table(
        "agent_versions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("agent_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("system_prompt", sa.Text(), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("model_settings", JSONType, nullable=False),
        sa.Column("input_schema", JSONType, nullable=True),
        sa.Column("output_schema", JSONType, nullable=True),
        sa.Column("capabilities", JSONType, nullable=False),
        sa.Column("tools", JSONType, nullable=False),
        sa.Column("delegates", JSONType, nullable=False),
        sa.Column("max_chain_depth", sa.Integer(), nullable=False),
        sa.Column("chain_strategy", sa.String(32), nullable=False),
        sa.Column("config", JSONType, nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["agents.id"],
            name="fk_agent_versions_agent_id_agents",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_agent_versions"),
        sa.UniqueConstraint("agent_id", "version", name="uq_agent_versions_agent_version"),
    )
    op.create_table(
        "functions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("current_version", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_functions"),
        sa.UniqueConstraint("name", name="uq_functions_name"),
    )
    op.create_table(
        "function_versions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("function_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("input_schema", JSONType, nullable=True),
        sa.Column("output_schema", JSONType, nullable=True),
        sa.Column("is_async", sa.Boolean(), nullable=False),
        sa.Column("limits", JSONType, nullable=False),
        sa.Column("allowed_imports", JSONType, nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["function_id"],
            ["functions.id"],
            name="fk_function_versions_function_id_functions",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_function_versions"),
        sa.UniqueConstraint("function_id", "version", name="uq_function_versions_function_version"),
    )
    op.create_index("ix_function_versions_sha256", "function_versions", ["sha256"])


def downgrade() -> None:
    op.drop_index("ix_function_versions_sha256", table_name="function_versions")
    op.drop_table("function_versions")
    op.drop_table("functions")
    op.drop_table("agent_versions")
    op.drop_index("ix_agents_model", table_name="agents")
    op.drop_table("agents")
