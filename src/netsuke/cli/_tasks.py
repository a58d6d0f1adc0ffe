"""``netsuke tasks submit|ls|get|dlq``: the node's durable task queue over HTTP.

``submit KIND [--payload JSON] [--capability C ...] [--priority N] [--delay S]
[--idempotency-key K] [--max-attempts N] [--timeout S]`` queues a task (printed once
committed); ``ls [--status S] [--kind K]`` lists tasks (a user key: its own); ``get ID`` shows
one; ``dlq`` lists the dead-letter queue, ``dlq --requeue ID`` puts one back, ``dlq --purge``
deletes them all (operator). An id may be given by a prefix (``tasks get 01a2``); tables show
each id by the shortest prefix that tells it apart from the others listed.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Column, Table

from ._client import (
    Client,
    CliError,
    JsonOpt,
    KeyOpt,
    UrlOpt,
    fail,
    json_object,
    resolve_id,
    short_ids,
)

__all__ = ["app"]

app = typer.Typer(
    name="tasks",
    help="The durable task queue of a running server.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
console = Console()


def _table(items: list[dict[str, Any]]) -> None:
    ids = short_ids([t["id"] for t in items])
    width = max((len(v) for v in ids.values()), default=2)
    table = Table(
        Column("id", no_wrap=True, min_width=width),
        "kind", "status", "attempts", "priority", "capabilities", "last error",
    )  # fmt: skip
    for t in items:
        table.add_row(
            ids[t["id"]], t["kind"], t["status"], f"{t['attempts']}/{t['max_attempts']}",
            str(t["priority"]), ", ".join(t["capabilities"]), (t["last_error"] or "")[:60],
        )  # fmt: skip
    console.print(table)


@app.command("submit")
def submit(
    kind: Annotated[str, typer.Argument(help="Task kind.")],
    payload: Annotated[str, typer.Option(help="Payload as a JSON object.")] = "{}",
    capability: Annotated[
        list[str] | None, typer.Option(help="A capability a worker needs.")
    ] = None,
    priority: Annotated[int, typer.Option(help="Higher first.")] = 0,
    delay: Annotated[float, typer.Option(help="Seconds before it is due.")] = 0.0,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Submit at most once per key.")
    ] = None,
    max_attempts: Annotated[int, typer.Option(help="Attempts before the dead-letter queue.")] = 5,
    timeout: Annotated[float | None, typer.Option(help="Seconds per attempt.")] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print only the id (for scripts).")
    ] = False,
    url: UrlOpt = "http://127.0.0.1:8000",
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Queue a task; prints its id once it is committed."""
    try:
        body_payload = json_object(payload, "--payload")
        body: dict[str, Any] = {
            "kind": kind, "payload": body_payload, "capabilities": list(capability or []),
            "priority": priority, "delay": delay, "max_attempts": max_attempts,
        }  # fmt: skip
        if idempotency_key is not None:
            body["idempotency_key"] = idempotency_key
        if timeout is not None:
            body["timeout"] = timeout
        with Client(url, key) as client:
            r = client.request("POST", "/tasks", json=body)
    except CliError as exc:
        raise fail(exc) from None
    task = r.json()
    if as_json:
        typer.echo(json.dumps(task))
    elif quiet:
        typer.echo(task["id"])
    else:
        typer.echo(f"{task['id']}: {'queued' if r.status_code == 201 else 'already submitted'}")


@app.command("ls")
def ls(
    status: Annotated[str | None, typer.Option(help="queued, leased, succeeded or dead.")] = None,
    kind: Annotated[str | None, typer.Option(help="Only this kind.")] = None,
    url: UrlOpt = "http://127.0.0.1:8000",
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List tasks (a user key: its own)."""
    params: dict[str, Any] = {"limit": 200}
    if status:
        params["status"] = status
    if kind:
        params["kind"] = kind
    try:
        with Client(url, key) as client:
            items = client.pages("/tasks", params)
    except CliError as exc:
        raise fail(exc) from None
    if as_json:
        typer.echo(json.dumps(items, indent=2))
    else:
        _table(items)


@app.command("get")
def get(
    task_id: Annotated[str, typer.Argument(help="Task id, or a prefix of one.")],
    url: UrlOpt = "http://127.0.0.1:8000",
    key: KeyOpt = None,
) -> None:
    """One task as JSON."""
    try:
        with Client(url, key) as client:
            full = resolve_id(client, task_id, what="task", get="/tasks", listing="/tasks",
                              params={"limit": 1000}, server_filter="id_prefix")  # fmt: skip
            typer.echo(json.dumps(client.request("GET", f"/tasks/{full}").json(), indent=2))
    except CliError as exc:
        raise fail(exc) from None


@app.command("dlq")
def dlq(
    requeue: Annotated[
        str | None, typer.Option(help="Put this dead task back (id or prefix).")
    ] = None,
    purge: Annotated[bool, typer.Option("--purge", help="Delete every dead task.")] = False,
    url: UrlOpt = "http://127.0.0.1:8000",
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The dead-letter queue: list, requeue one, or purge."""
    try:
        with Client(url, key) as client:
            if requeue is not None:
                full = resolve_id(client, requeue, what="dead task", get="/tasks",
                                  listing="/dead-letters", params={"limit": 1000},
                                  server_filter="id_prefix")  # fmt: skip
                task = client.request("POST", f"/dead-letters/{full}/requeue").json()
                typer.echo(json.dumps(task) if as_json else f"{task['id']}: requeued")
                return
            if purge:
                n = client.request("POST", "/dead-letters/purge", json={}).json()["purged"]
                typer.echo(json.dumps({"purged": n}) if as_json else f"purged {n} dead task(s)")
                return
            items = client.pages("/dead-letters", {"limit": 200})
    except CliError as exc:
        raise fail(exc) from None
    if as_json:
        typer.echo(json.dumps(items, indent=2))
    else:
        _table(items)
