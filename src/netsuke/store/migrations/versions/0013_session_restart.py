"""Failover with memory (issue 17): what a session's restart type is, and whether a process
hosts it.

* ``conversations.restart``: the OTP restart type of the session's agent at its last claim
  (``permanent``, ``transient``, ``temporary``; ``NULL``: ``transient``, the type every
  session had before), written by the claim's own compare-and-set statement.
* ``conversations.host_state``: ``active`` (a process hosts it: written by each claim),
  ``evicted`` (it left memory when idle: it comes back lazily on the next call) or
  ``stopped`` (stopped for good, or with its owner; ``NULL``: ``active``). When a node dies,
  survivors restart the ``active`` sessions it owned per their restart type (see
  ``netsuke.cluster._failover``).
* An index on ``(owner_node, owner_incarnation)``: the sessions of one node incarnation.

Revision ID: 0013_session_restart
Revises: 0011_session_owners
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_session_restart"
down_revision = "0012_node_labels"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("restart", sa.String(16), nullable=True))
        batch.add_column(sa.Column("host_state", sa.String(16), nullable=True))
    op.create_index("ix_conversations_owner", "conversations", ["owner_node", "owner_incarnation"])


def downgrade() -> None:
    op.drop_index("ix_conversations_owner", table_name="conversations")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("host_state")
        batch.drop_column("restart")
