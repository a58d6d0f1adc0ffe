"""Session ownership (node and node incarnation next to the epoch) and idempotent turns.

* ``conversations.owner_node`` / ``owner_incarnation``: the node (and the run of that node)
  that holds the session. ``conversations.incarnation`` (0007) is the ownership *epoch*: each
  successful claim adds one, in the same compare-and-set statement that writes the owner, and
  every fenced turn commit checks it (see ``netsuke.store._ownership``).
* ``turn_requests``: one row per turn committed with a request id (the API's
  ``Idempotency-Key``): the key, a hash of the request body, the reply, the execution and the
  epoch it committed at, written in the turn's own transaction. The primary key
  ``(session_id, request_key)`` makes a second commit with the same key impossible.

Revision ID: 0011_session_owners
Revises: 0010_cluster
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from netsuke.store._models import UTCDateTime

revision = "0011_session_owners"
down_revision = "0010_cluster"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("owner_node", sa.String(200), nullable=True))
        batch.add_column(sa.Column("owner_incarnation", sa.BigInteger(), nullable=True))
    op.create_table(
        "turn_requests",
        sa.Column("session_id", sa.String(200), nullable=False),
        sa.Column("request_key", sa.String(200), nullable=False),
        sa.Column("body_hash", sa.String(64), nullable=False),
        sa.Column("reply", sa.Text(), nullable=False),
        sa.Column("execution_id", sa.String(64), nullable=True),
        sa.Column("epoch", sa.Integer(), nullable=True),
        sa.Column("first_seq", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("session_id", "request_key", name="pk_turn_requests"),
    )
    op.create_index("ix_turn_requests_created_at", "turn_requests", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_turn_requests_created_at", table_name="turn_requests")
    op.drop_table("turn_requests")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("owner_incarnation")
        batch.drop_column("owner_node")
