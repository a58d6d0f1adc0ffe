"""``netsuke keys``: issue, list and revoke API keys on a running server (admin key).

``keys create --local`` is the way back for whoever owns the node's data: it writes a key
straight into the store (``--database-url``, else the settings ``netsuke serve`` reads:
``$NETSUKE_DATABASE_URL``, ``netsuke.toml``, the SQLite file ``./.netsuke/netsuke.db``), with
no server and no key needed, and prints its secret once. The audit log names the OS user.
"""

from __future__ import annotations

import asyncio
import getpass
import json
from pathlib import Path
from typing import Annotated, Any, cast

import typer
from rich.console import Console
from rich.table import Table

from ._client import Client, CliError, JsonOpt, KeyOpt, UrlOpt, fail

__all__ = ["app"]

app = typer.Typer(
    name="keys", help="API keys (needs an admin key).", no_args_is_help=True, rich_markup_mode=None
)


async def _create_local(
    name: str, role: str, database_url: str | None, config: Path | None
) -> dict[str, Any]:
    from netsuke.api import load_settings
    from netsuke.store import Role, Store

    settings = load_settings(config, database_url=database_url)
    async with Store.open(settings.database_url) as store:
        issued = await store.api_keys.create(
            name, cast(Role, role), actor=f"local:{getpass.getuser()}"
        )
    return issued.model_dump(mode="json")


@app.command("create")
def create(
    name: Annotated[
        str | None,
        typer.Option("--name", help="Holder; for a user key, the user [--local: local-ROLE]."),
    ] = None,
    role: Annotated[str, typer.Option("--role", help="admin, operator or user.")] = "user",
    local: Annotated[
        bool,
        typer.Option("--local", help="Write the key into the store directly (no server, no key)."),
    ] = False,
    database_url: Annotated[
        str | None, typer.Option(help="With --local: the store [as netsuke serve finds it].")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="With --local: settings file [./netsuke.toml].")
    ] = None,
    url: UrlOpt = "http://127.0.0.1:8000",
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Issue a key; its secret is printed this once."""
    from netsuke.api import SettingsError
    from netsuke.store import StoreError

    try:
        if local:
            try:
                data = asyncio.run(
                    _create_local(name or f"local-{role}", role, database_url, config)
                )
            except (SettingsError, StoreError) as exc:
                raise CliError(str(exc), code=2) from None
        else:
            if database_url is not None or config is not None:
                raise CliError("--database-url and --config go with --local", code=2)
            if not name:
                raise CliError("--name is required (who holds the key)", code=2)
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
