"""``netsuke cluster status``: the cluster's nodes as the store sees them (the authority):
name, incarnation, state, lease age and time left (by the database's clock), processes and
global names of each. Reads the database directly (``--url``, default
``$NETSUKE_DATABASE_URL`` or the embedded SQLite file); no server needs to run.

Exit codes: 0 done; 2 for a store that cannot be read (one line, never a traceback) or a
database without the cluster tables (``netsuke db upgrade``)."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Annotated, Any

import typer
from sqlalchemy.exc import DBAPIError

__all__ = ["app"]

app = typer.Typer(
    name="cluster",
    help="Cluster membership, from the store: nodes, leases, process counts.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


async def _nodes(url: str | None, include_gone: bool) -> list[dict[str, Any]]:
    from netsuke.cluster import list_nodes
    from netsuke.store import Database, current_revision

    if await current_revision(url) is None:
        raise LookupError("the database has no schema yet: run `netsuke db upgrade`")
    db = Database(url)
    try:
        return [n.as_dict() for n in await list_nodes(db, include_gone=include_gone)]
    finally:
        await db.dispose()


@app.command("status")
def status(
    url: Annotated[
        str | None,
        typer.Option("--url", help="Database URL (default: $NETSUKE_DATABASE_URL or SQLite)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    all_: Annotated[
        bool, typer.Option("--all", help="Also nodes that left, fenced or expired.")
    ] = False,
) -> None:
    """List the cluster's live nodes (with --all, also gone ones): incarnation, state, lease
    age and time left, processes, global names."""
    from netsuke.store import StoreError, resolve_url
    from netsuke.store._store import unavailable

    try:
        nodes = asyncio.run(_nodes(url, all_))
    except DBAPIError as exc:
        threading.excepthook = lambda _args: None
        raise _fail(str(unavailable(resolve_url(url), exc))) from None
    except (StoreError, LookupError, OSError) as exc:
        raise _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    if as_json:
        typer.echo(json.dumps({"nodes": nodes}, indent=2))
        return
    if not nodes:
        typer.echo("no live cluster nodes" + ("" if all_ else " (--all shows gone ones)"))
        return
    header = ("NODE", "INCARNATION", "STATE", "LEASE AGE", "EXPIRES IN", "PROCESSES", "NAMES")
    rows = [
        (
            n["name"],
            str(n["incarnation"]),
            n["state"],
            f"{n['lease_age_s']:.1f}s",
            f"{n['expires_in_s']:.1f}s" if n["live"] else "-",
            str(n["processes"]),
            str(n["names"]),
        )
        for n in nodes
    ]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    for r in (header, *rows):
        typer.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _fail(message: str) -> typer.Exit:
    typer.echo(f"netsuke: error: {message}", err=True)
    return typer.Exit(2)
