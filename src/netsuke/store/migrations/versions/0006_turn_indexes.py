"""Fewer index pages per committed turn.

A turn's commit wrote 13 WAL frames on SQLite, one or more per b-tree it touched. Three of
those b-trees were indexes that a succeeded, top-level turn does not need:

* ``ix_messages_execution_id``: nothing queries messages by execution; the index only served
  the foreign key's ``ON DELETE SET NULL`` when an execution is deleted, and the store never
  deletes executions (a retention job that does should delete the messages first or accept
  the scan);
* ``ix_executions_status``: now partial, ``WHERE status <> 'succeeded'``: the rare statuses
  (running, failed, cancelled, pending) are the ones worth an index; a listing of succeeded
  executions walks ``ix_executions_started_at`` newest first, as it is ordered anyway;
* ``ix_executions_parent_id``: now partial, ``WHERE parent_id IS NOT NULL``: only delegated
  work has a parent, and ``parent_id = ?`` implies the condition on both engines.

Revision ID: 0006_turn_indexes
Revises: 0005_webhooks
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_turn_indexes"
down_revision = "0005_webhooks"
branch_labels = None
depends_on = None

_NOT_SUCCEEDED = sa.text("status <> 'succeeded'")
_HAS_PARENT = sa.text("parent_id IS NOT NULL")


def upgrade() -> None:
    op.drop_index("ix_messages_execution_id", table_name="messages")
    op.drop_index("ix_executions_status", table_name="executions")
    op.create_index(
        "ix_executions_status",
        "executions",
        ["status"],
        sqlite_where=_NOT_SUCCEEDED,
        postgresql_where=_NOT_SUCCEEDED,
    )
    op.drop_index("ix_executions_parent_id", table_name="executions")
    op.create_index(
        "ix_executions_parent_id",
        "executions",
        ["parent_id"],
        sqlite_where=_HAS_PARENT,
        postgresql_where=_HAS_PARENT,
    )


def downgrade() -> None:
    op.drop_index("ix_executions_parent_id", table_name="executions")
    op.create_index("ix_executions_parent_id", "executions", ["parent_id"])
    op.drop_index("ix_executions_status", table_name="executions")
    op.create_index("ix_executions_status", "executions", ["status"])
    op.create_index("ix_messages_execution_id", "messages", ["execution_id"])
