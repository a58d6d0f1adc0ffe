"""Schema migrations, run programmatically (``netsuke db upgrade`` calls these).

The Alembic environment and revisions ship inside the package (``migrations/``), so a wheel
migrates its own database without an ``alembic.ini``. Every entry point refuses a database
whose revision this code does not know (``SchemaTooNewError``) before changing anything.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy.engine import Connection

from ._engine import Database
from ._errors import SchemaOutdatedError, SchemaTooNewError, ValidationError

__all__ = [
    "check_revision",
    "current_revision",
    "downgrade",
    "head_revision",
    "known_revisions",
    "upgrade",
]

_SCRIPTS = Path(__file__).with_name("migrations")


def _config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_SCRIPTS))
    cfg.attributes["connection"] = connection
    return cfg


def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


def head_revision() -> str:
    """The newest revision this code knows."""
    head = _script().get_current_head()
    assert head is not None
    return head


def known_revisions() -> list[str]:
    """Every revision this code knows, oldest first."""
    return [rev.revision for rev in reversed(list(_script().walk_revisions()))]


def check_revision(database_revision: str | None, *, allow_outdated: bool = True) -> None:
    """Raise ``SchemaTooNewError`` for an unknown revision; ``SchemaOutdatedError`` for an old
    one unless ``allow_outdated``."""
    head = head_revision()
    if database_revision is None or database_revision == head:
        if database_revision is None and not allow_outdated:
            raise SchemaOutdatedError(None, head)
        return
    if database_revision not in known_revisions():
        raise SchemaTooNewError(database_revision, head)
    if not allow_outdated:
        raise SchemaOutdatedError(database_revision, head)


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def current_revision(
    url: str | None = None, *, database: Database | None = None
) -> str | None:
    """The database's revision (``None`` for an empty database)."""
    db = database or Database(url)
    try:
        async with db.read() as conn:
            return await conn.run_sync(_current)
    finally:
        if database is None:
            await db.dispose()


async def upgrade(
    url: str | None = None, revision: str = "head", *, database: Database | None = None
) -> str | None:
    """Migrate the database up to ``revision`` (default: the newest). Returns the new revision.

    Durable on return (one transaction, committed; DDL is transactional on both engines).
    Raises ``SchemaTooNewError`` if the database is ahead of the code."""
    return await _migrate("upgrade", url, revision, database)


async def downgrade(
    url: str | None, revision: str, *, database: Database | None = None
) -> str | None:
    """Migrate the database down to ``revision`` (``"base"`` drops every store table).

    Data in dropped tables is lost. Returns the new revision (``None`` at base)."""
    return await _migrate("downgrade", url, revision, database)


async def _migrate(
    direction: str, url: str | None, revision: str, database: Database | None
) -> str | None:
    db = database or Database(url)

    def run(connection: Connection) -> str | None:
        check_revision(_current(connection))
        cfg = _config(connection)
        try:
            if direction == "upgrade":
                command.upgrade(cfg, revision)
            else:
                command.downgrade(cfg, revision)
        except CommandError as exc:
            raise ValidationError("revision", str(exc)) from None
        return _current(connection)

    try:
        async with db.write() as conn:
            return await conn.run_sync(run)
    finally:
        if database is None:
            await db.dispose()
