"""``netsuke cluster status``: the cluster's nodes as the store sees them (the authority):
name, incarnation, state, lease age and time left (by the database's clock), processes and
global names of each. Reads the database directly (``--url``, default
``$NETSUKE_DATABASE_URL`` or the embedded SQLite file); no server needs to run.

Exit codes: 0 done; 2 for a store that cannot be read (one line, never a traceback) or a
database without the cluster tables (``netsuke db upgrade``).

``netsuke cluster agents [MATCH] [--count] [--stop]`` asks a running server (``--url``,
``--key``) for the running agents of every live node (``GET /api/v1/cluster/agents``, ``POST
/api/v1/cluster/agents/stop``); exit 3 when the answer is partial (a node did not answer)."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Annotated, Any

import typer
from sqlalchemy.exc import DBAPIError

from ._client import Client, CliError, JsonOpt, KeyOpt, UrlOpt, fail

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


@app.command("agents")
def agents(
    match: Annotated[
        str | None, typer.Argument(help="Substring of the agents' names, or a glob (*?[).")
    ] = None,
    count: Annotated[bool, typer.Option("--count", help="Print only how many.")] = False,
    stop: Annotated[
        bool, typer.Option("--stop", help="Stop every matching agent (needs MATCH).")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each node.")] = 5.0,
    url: UrlOpt = "http://127.0.0.1:8000",
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Running agents on every live node of a server's cluster (find, count, stop matching).
    A node that did not answer in time is named on stderr and the exit code is 3."""
    if stop and not match:
        raise _fail("--stop needs a MATCH")
    params: dict[str, Any] = {"timeout": timeout}
    if match:
        params["match"] = match
    try:
        with Client(url, key, timeout=timeout * 3 + 10) as client:
            if stop:
                body = client.request("POST", "/cluster/agents/stop", params=params).json()
            else:
                if count:
                    params["count"] = "true"
                body = client.request("GET", "/cluster/agents", params=params).json()
    except CliError as exc:
        raise fail(exc) from None
    if as_json:
        typer.echo(json.dumps(body, indent=2))
    elif stop:
        typer.echo(f"stopped {body['total']}")
    elif count:
        typer.echo(str(body["total"]))
    else:
        for a in body["agents"]:
            typer.echo(f"{a['name']}\t{a['node'].split('#', 1)[0]}\t{a.get('user') or ''}")
    if body["partial"]:
        typer.echo(f"partial: no answer from {', '.join(body['unreachable'])}", err=True)
        raise typer.Exit(3)
