"""``netsuke audit``: the audit log of a running server, newest first (admin key).

Filters are exact matches (``--actor``, ``--action``, ``--target``) and ``--since`` (ISO 8601);
``-n`` bounds the number of records (default 50).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Column, Table

from ._client import Client, CliError, JsonOpt, KeyOpt, UrlOpt, fail

__all__ = ["audit"]


def audit(
    actor: Annotated[
        str | None, typer.Option(help="Only this actor (<key name>:<prefix>).")
    ] = None,
    action: Annotated[str | None, typer.Option(help="Only this action, e.g. agent.create.")] = None,
    target: Annotated[str | None, typer.Option(help="Only this target, e.g. agent:writer.")] = None,
    since: Annotated[str | None, typer.Option(help="ISO 8601 time, inclusive.")] = None,
    limit: Annotated[int, typer.Option("-n", "--limit", min=1, max=10_000)] = 50,
    url: UrlOpt = "http://127.0.0.1:8000",
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Who did what to which target, when, and the outcome (newest first)."""
    params: dict[str, Any] = {"limit": min(limit, 1000)}
    for name, value in (("actor", actor), ("action", action), ("target", target)):
        if value:
            params[name] = value
    try:
        if since:
            try:
                params["since"] = datetime.fromisoformat(since).isoformat()
            except ValueError:
                raise CliError(f"--since: not an ISO 8601 time: {since!r}", code=2) from None
        items: list[dict[str, Any]] = []
        with Client(url, key) as client:
            while len(items) < limit:
                body = client.request("GET", "/audit", params=params).json()
                items.extend(body["items"])
                if not body.get("next_cursor"):
                    break
                params["cursor"] = body["next_cursor"]
    except CliError as exc:
        raise fail(exc) from None
    items = items[:limit]
    if as_json:
        typer.echo(json.dumps(items, indent=2))
        return
    table = Table(Column("at (UTC)", no_wrap=True), "actor", "action", "target", "outcome")
    for e in items:
        table.add_row(e["at"][:19].replace("T", " "), e["actor"], e["action"], e["target"],
                      e["outcome"])  # fmt: skip
    Console().print(table)
