"""The incarnation of a session, to fence turns of a process that is gone.

``conversations.incarnation`` counts the processes that have hosted the session: each agent
server claims the session when it starts (``ConversationRepository.open(..., claim=True)``
adds one and returns the new value), and a turn commits only while the row still holds the
incarnation its process claimed. A turn of a killed process, still running when its successor
claimed the session and loaded the history, is refused (``FencedError``) instead of landing
behind the successor's back. The check is part of the commit's own statements (the count read
or the ``UPDATE ... RETURNING``), not an extra round trip.

Revision ID: 0007_incarnation
Revises: 0006_turn_indexes
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_incarnation"
down_revision = "0006_turn_indexes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(
            sa.Column("incarnation", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )


def downgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("incarnation")
