"""``netsuke webhooks``: register, list, show and delete webhooks and read their deliveries
(admin key).

``add URL -t PATTERN [-t ...] [--description D] [--secret S]`` registers one and prints its
signing secret once (generated unless given); ``ls``; ``show ID``; ``rm ID``; ``deliveries ID
[--status S]``. Ids may be given by a prefix; tables show the shortest distinguishing prefix.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Column, Table

from ._client import Client, CliError, JsonOpt, KeyOpt, UrlOpt, fail, resolve_id, short_ids

__all__ = ["app"]

app = typer.Typer(
    name="webhooks",
    help="Webhooks of a running server (admin key).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
console = Console()
IdArg = Annotated[str, typer.Argument(help="Webhook id, or a prefix of one.")]


def _resolve(client: Client, webhook_id: str) -> str:
    return resolve_id(client, webhook_id, what="webhook", get="/webhooks", listing="/webhooks",
                      params={"limit": 1000})  # fmt: skip


@app.command("add")
def add(
    target_url: Annotated[str, typer.Argument(metavar="URL", help="http(s) URL to POST to.")],
    topics: Annotated[
        list[str], typer.Option("--topic", "-t", help="A topic pattern, e.g. agent.* (repeat).")
    ],
    description: Annotated[str, typer.Option(help="What it is for.")] = "",
    secret: Annotated[
        str | None, typer.Option(help="Signing secret (16..128 chars) [generated].")
    ] = None,
    url: UrlOpt = "http://127.0.0.1:8000",
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Register a webhook; prints its signing secret this once."""
    body: dict[str, Any] = {"url": target_url, "topics": topics, "description": description}
    if secret is not None:
        body["secret"] = secret
    try:
        with Client(url, key) as client:
            data = client.request("POST", "/webhooks", json=body).json()
    except CliError as exc:
        raise fail(exc) from None
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    hook = data["webhook"]
    typer.echo(f"webhook {hook['id']} → {hook['url']} ({', '.join(hook['topics'])})")
    typer.echo(data["secret"])


@app.command("ls")
def ls(url: UrlOpt = "http://127.0.0.1:8000", key: KeyOpt = None, as_json: JsonOpt = False) -> None:
    """Registered webhooks."""
    try:
        with Client(url, key) as client:
            items = client.pages("/webhooks", {"limit": 1000})
    except CliError as exc:
        raise fail(exc) from None
    if as_json:
        typer.echo(json.dumps(items, indent=2))
        return
    ids = short_ids([h["id"] for h in items])
    table = Table(Column("id", no_wrap=True), "url", "topics", "description")
    for h in items:
        table.add_row(ids[h["id"]], h["url"], ", ".join(h["topics"]), h["description"])
    console.print(table)


@app.command("show")
def show(
    webhook_id: IdArg,
    url: UrlOpt = "http://127.0.0.1:8000",
    key: KeyOpt = None,
) -> None:
    """One webhook as JSON (never its secret)."""
    try:
        with Client(url, key) as client:
            full = _resolve(client, webhook_id)
            typer.echo(json.dumps(client.request("GET", f"/webhooks/{full}").json(), indent=2))
    except CliError as exc:
        raise fail(exc) from None


@app.command("rm")
def rm(
    webhook_id: IdArg,
    url: UrlOpt = "http://127.0.0.1:8000",
    key: KeyOpt = None,
) -> None:
    """Delete a webhook and its deliveries log."""
    try:
        with Client(url, key) as client:
            full = _resolve(client, webhook_id)
            client.request("DELETE", f"/webhooks/{full}")
    except CliError as exc:
        raise fail(exc) from None
    typer.echo(f"webhook {full}: deleted")


@app.command("deliveries")
def deliveries(
    webhook_id: IdArg,
    status: Annotated[str | None, typer.Option(help="pending, succeeded or failed.")] = None,
    url: UrlOpt = "http://127.0.0.1:8000",
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A webhook's deliveries, newest first: status, attempts, last response."""
    params: dict[str, Any] = {"limit": 1000}
    if status:
        params["status"] = status
    try:
        with Client(url, key) as client:
            full = _resolve(client, webhook_id)
            items = client.pages(f"/webhooks/{full}/deliveries", params)
    except CliError as exc:
        raise fail(exc) from None
    if as_json:
        typer.echo(json.dumps(items, indent=2))
        return
    table = Table(Column("event", no_wrap=True), "topic", "status", "attempts", "response",
                  "error")  # fmt: skip
    for d in items:
        table.add_row(d["event_id"], d["topic"], d["status"], str(d["attempts"]),
                      str(d["response_status"] or ""), (d["error"] or "")[:60])  # fmt: skip
    console.print(table)
