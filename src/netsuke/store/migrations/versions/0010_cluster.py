"""Cluster membership and global names: ``cluster_nodes`` (one row per node name and
incarnation, with its lease judged by the database clock) and ``cluster_names`` (a name
registered cluster-wide, unique by its primary key, with the node incarnation that owns it).

Times are seconds since the epoch as read from the DATABASE clock (PostgreSQL
``clock_timestamp()``, SQLite ``julianday('now')``), never a node's clock.

Revision ID: 0010_cluster
Revises: 0009_manager
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from netsuke.store._models import JSONType

revision = "0010_cluster"
down_revision = "0009_manager"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cluster_nodes",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("incarnation", sa.BigInteger(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("renewed_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("lease_s", sa.Float(), nullable=False),
        sa.Column("processes", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("info", JSONType, nullable=False),
        sa.PrimaryKeyConstraint("name", "incarnation", name="pk_cluster_nodes"),
    )
    op.create_table(
        "cluster_names",
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("node_name", sa.String(64), nullable=False),
        sa.Column("incarnation", sa.BigInteger(), nullable=False),
        sa.Column("pid_id", sa.BigInteger(), nullable=False),
        sa.Column("meta", JSONType, nullable=False),
        sa.Column("registered_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_cluster_names"),
    )
    op.create_index("ix_cluster_names_node_name", "cluster_names", ["node_name", "incarnation"])


def downgrade() -> None:
    op.drop_index("ix_cluster_names_node_name", table_name="cluster_names")
    op.drop_table("cluster_names")
    op.drop_table("cluster_nodes")
