"""Node labels: ``cluster_nodes.labels``, the ``k=v`` labels a node was started with
(``--label``, ``NETSUKE_NODE_LABELS``), written with its lease when it joins; placement reads
them to pin sessions of agent definitions that require labels (``node_labels``).

Revision ID: 0012_node_labels
Revises: 0011_session_owners
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from netsuke.store._models import JSONType

revision = "0012_node_labels"
down_revision = "0011_session_owners"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cluster_nodes") as batch:
        batch.add_column(sa.Column("labels", JSONType, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("cluster_nodes") as batch:
        batch.drop_column("labels")
