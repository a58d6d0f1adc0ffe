"""Alembic environment: runs on a connection handed over by ``netsuke.store._migrate``.

Only online migrations on a given connection are supported; the store opens the connection
(async engine, ``run_sync``) so SQLite pragmas and PostgreSQL settings are the store's own.
"""

from __future__ import annotations

from alembic import context

from netsuke.store._models import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # pragma: no cover - guarded by _migrate
    raise RuntimeError("run the store's migrations through netsuke.store.upgrade()/downgrade()")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
