"""Owner links that survive a failover (issue 17): the pid of a session's owner process.

* ``conversations.owner_pid``: the process the session is linked to as its owner (a
  browser's WebSocket process, a request, a delegating session), node-qualified in the
  cluster codec's pid encoding (``{"$p":["alpha#1765000000000000",42]}``; ``NULL``: no
  owner). Written by every claim (the claiming process's owner, in the claim's own
  compare-and-set statement) and by ``attach_owner``; cleared when the owner exits. A
  survivor that takes the session over monitors that pid again (``Agents.revive``), so the
  owner's exit, or its node's death, applies the agent's ``owner_policy`` as on one node.
  Not to be confused with ``owner_node`` (the node *hosting* the session, migration 0011).

Revision ID: 0014_session_owner_pid
Revises: 0013_session_restart
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014_session_owner_pid"
down_revision = "0013_session_restart"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("owner_pid", sa.String(300), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("owner_pid")
