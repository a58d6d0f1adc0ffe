"""``netsuke keys``: issue, list and revoke API keys on a running server (admin key)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ._client import Client, CliError, JsonOpt, KeyOpt, UrlOpt, fail

__all__ = ["app"]

app = typer.Typer(name="keys", help="API keys (needs an admin key).", no_args_is_help=True)


@app.command("create")
def create(
    name: Annotated[str, typer.Option("--name", help="Holder; for a user key, the user.")],
    role: Annotated[str, typer.Option("--role", help="admin, operator or user.")] = "user",
    url: UrlOpt = "http://127.0.0.1:8000",
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Issue a key; its secret is printed this once."""
    try:
        with Client(url, key) as client:
            data = client.request("POST", "/keys", json={"name": name, "role": role}).json()
    except CliError as exc:
        raise fail(exc) from None
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    typer.echo(f"key {data['key']['prefix']} ({data['key']['role']}) for {data['key']['name']}")
    typer.echo(data["secret"])


@app.command("ls")
def list_keys(
    url: UrlOpt = "http://127.0.0.1:8000", key: KeyOpt = None, as_json: JsonOpt = False
) -> None:
    """List active keys (prefixes and roles, never secrets)."""
    try:
        with Client(url, key) as client:
            items = client.pages("/keys", {"limit": 500})
    except CliError as exc:
        raise fail(exc) from None
    if as_json:
        typer.echo(json.dumps(items, indent=2))
        return
    table = Table("prefix", "name", "role", "created", "last used")
    for k in items:
        table.add_row(k["prefix"], k["name"], k["role"], k["created_at"], k["last_used_at"] or "")
    Console().print(table)


@app.command("revoke")
def revoke(
    prefix: Annotated[str, typer.Argument(help="The key's prefix (8 hex characters).")],
    url: UrlOpt = "http://127.0.0.1:8000",
    key: KeyOpt = None,
) -> None:
    """Revoke a key."""
    try:
        with Client(url, key) as client:
            client.request("DELETE", f"/keys/{prefix}")
    except CliError as exc:
        raise fail(exc) from None
    typer.echo(f"key {prefix}: revoked")
