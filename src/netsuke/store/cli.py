"""``netsuke db``: schema migrations from the command line (a typer sub-app).

Mounted in the main CLI as ``netsuke db``.
Every command takes ``--url`` (default ``$NETSUKE_DATABASE_URL``, else the embedded SQLite
file). Exit codes: 0 done, 2 refused (bad URL or revision, or a database that cannot be
opened: corrupt, locked, unreadable; one line, never a traceback), 3 database newer than the
code.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Annotated, Any, TypeVar

import typer
from sqlalchemy.exc import DBAPIError

from ._engine import resolve_url
from ._errors import SchemaTooNewError, StoreError
from ._migrate import current_revision, downgrade, head_revision, upgrade
from ._store import unavailable

T = TypeVar("T")

__all__ = ["app"]

app = typer.Typer(
    name="db",
    help="Database schema: upgrade, downgrade, current.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

Url = Annotated[
    str | None,
    typer.Option("--url", help="Database URL (default: $NETSUKE_DATABASE_URL or SQLite file)."),
]


def _fail(exc: StoreError) -> typer.Exit:
    typer.echo(f"netsuke: error: {exc}", err=True)
    return typer.Exit(3 if isinstance(exc, SchemaTooNewError) else 2)


def _run(url: str | None, work: Coroutine[Any, Any, T]) -> T:
    """Run ``work``; a driver failure becomes ``StoreUnavailableError`` (one line)."""
    try:
        return asyncio.run(work)
    except DBAPIError as exc:
        # a driver thread of the failed connection may end after the loop closed: not reported
        threading.excepthook = lambda _args: None
        raise unavailable(resolve_url(url), exc) from None


@app.command("upgrade")
def upgrade_command(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    url: Url = None,
) -> None:
    """Migrate the database up to REVISION (default: the newest)."""
    try:
        new = _run(url, upgrade(url, revision))
    except StoreError as exc:
        raise _fail(exc) from None
    typer.echo(f"database at revision {new}")


@app.command("downgrade")
def downgrade_command(
    revision: Annotated[str, typer.Argument(help="Target revision, or 'base' to drop all.")],
    url: Url = None,
) -> None:
    """Migrate the database down to REVISION. Data in dropped tables is lost."""
    try:
        new = _run(url, downgrade(url, revision))
    except StoreError as exc:
        raise _fail(exc) from None
    typer.echo(f"database at revision {new or 'base'}")


@app.command("current")
def current_command(url: Url = None) -> None:
    """Show the database's revision and the newest this code knows."""
    try:
        revision = _run(url, current_revision(url))
    except StoreError as exc:
        raise _fail(exc) from None
    head = head_revision()
    state = "up to date" if revision == head else "behind" if revision else "empty"
    typer.echo(f"database: {revision or 'none'} ({state}); code head: {head}")
