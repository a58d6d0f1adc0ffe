"""Ownership by API key, not by key name.

Tasks (the ``task.submit`` audit entry's ``actor``) and functions (``created_by`` of their
versions) recorded their owner as the bare key name, so a key named like another
(``alice:x``, or a user key named like an operator's) reached the other's rows. The API now
records ``<key name>:<key prefix>`` (the prefix is the key's immutable, unique id). This
migration rewrites the rows recorded the old way: a bare name held by **exactly one** key
(revoked or not) becomes ``<name>:<prefix>`` of that key. A name held by several keys is
ambiguous and left as it is: no key owns those rows any more (operators and admins still
reach them). Idempotency keys of queued tasks are not rewritten (they were scoped
``<name>:<key>``, now ``<prefix>:<key>``): a retry across the upgrade may queue again.

Revision ID: 0008_owner_ids
Revises: 0007_incarnation
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_owner_ids"
down_revision = "0007_incarnation"
branch_labels = None
depends_on = None

# one key with the name, short enough that "<name>:<prefix>" fits the 200-character columns
_UNIQUE = "(SELECT count(*) FROM api_keys k WHERE k.name = {col}) = 1 AND length({col}) <= 190"
_PREFIX = "(SELECT k.prefix FROM api_keys k WHERE k.name = {col})"


def upgrade() -> None:
    actor = "audit_log.actor"
    op.execute(
        sa.text(
            f"UPDATE audit_log SET actor = actor || ':' || {_PREFIX.format(col=actor)} "
            f"WHERE action = 'task.submit' AND {_UNIQUE.format(col=actor)}"
        )
    )
    created_by = "function_versions.created_by"
    op.execute(
        sa.text(
            "UPDATE function_versions SET created_by = created_by || ':' || "
            f"{_PREFIX.format(col=created_by)} "
            f"WHERE created_by IS NOT NULL AND {_UNIQUE.format(col=created_by)}"
        )
    )


def downgrade() -> None:
    # "<name>:<prefix>" back to "<name>" where the prefix is a key's and the name is that key's
    for table, col, where in (
        ("audit_log", "actor", "action = 'task.submit'"),
        ("function_versions", "created_by", "created_by IS NOT NULL"),
    ):
        op.execute(
            sa.text(
                f"UPDATE {table} SET {col} = (SELECT k.name FROM api_keys k "
                f"WHERE k.name || ':' || k.prefix = {table}.{col}) "
                f"WHERE {where} AND EXISTS (SELECT 1 FROM api_keys k "
                f"WHERE k.name || ':' || k.prefix = {table}.{col})"
            )
        )
