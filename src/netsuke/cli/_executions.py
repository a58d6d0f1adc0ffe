"""``netsuke executions ls|get``: what ran on a server (agent turns, function calls, tasks),
how it ended and why.

``ls [--session ID] [--agent NAME] [--function NAME] [--kind K] [--status S] [--limit N]``
lists executions newest first (a user key: its own); ``get ID`` shows one as JSON, with the
reason of a failure in ``error``. Every failed turn's error line names its execution id.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ._client import Client, CliError, JsonOpt, KeyOpt, UrlOpt, fail

__all__ = ["app"]

app = typer.Typer(
    name="executions",
    help="Agent turns, function calls and tasks that ran on a server.",
    no_args_is_help=True,
)
console = Console()


def _table(items: list[dict[str, Any]]) -> None:
    table = Table("id", "kind", "status", "agent/function", "session", "started", "error")
    for e in items:
        table.add_row(
            e["id"], e["kind"], e["status"], e.get("agent_name") or e.get("function_name") or "",
            e.get("session_id") or "", str(e["started_at"])[:19], (e.get("error") or "")[:80],
        )  # fmt: skip
    console.print(table)


@app.command("ls")
def ls(
    session: Annotated[str | None, typer.Option(help="Only this session.")] = None,
    agent: Annotated[str | None, typer.Option(help="Only this agent.")] = None,
    function: Annotated[str | None, typer.Option(help="Only this function.")] = None,
    kind: Annotated[str | None, typer.Option(help="agent_turn, function_call or task.")] = None,
    status: Annotated[
        str | None, typer.Option(help="running, succeeded, failed, cancelled or pending.")
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many (newest first).")] = 50,
    url: UrlOpt = "http://127.0.0.1:8000",
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List executions, newest first (a user key: its own)."""
    params: dict[str, Any] = {"limit": max(1, min(limit, 1000))}
    for name, value in (
        ("session_id", session),
        ("agent", agent),
        ("function", function),
        ("kind", kind),
        ("status", status),
    ):
        if value:
            params[name] = value
    try:
        with Client(url, key) as client:
            items = client.request("GET", "/executions", params=params).json()["items"]
    except CliError as exc:
        raise fail(exc) from None
    if as_json:
        typer.echo(json.dumps(items, indent=2))
    else:
        _table(items)


@app.command("get")
def get(
    execution_id: Annotated[str, typer.Argument(help="Execution id.")],
    url: UrlOpt = "http://127.0.0.1:8000",
    key: KeyOpt = None,
) -> None:
    """One execution as JSON (``error`` holds a failure's reason)."""
    try:
        with Client(url, key) as client:
            data = client.request("GET", f"/executions/{execution_id}").json()
    except CliError as exc:
        raise fail(exc) from None
    typer.echo(json.dumps(data, indent=2))
