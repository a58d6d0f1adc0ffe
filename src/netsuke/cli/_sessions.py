"""``netsuke sessions``: running sessions of a server: list, show, history, end.

``ls [--agent A]`` lists running sessions (a user key: its own); ``show ID`` prints one
session's state, restarts, queue, turns and tokens; ``history ID [-n N]`` prints its stored
conversation (``you:`` and the agent's lines; ``--json``: the stored messages); ``end ID
[--purge]`` stops it (``--purge`` deletes the stored conversation too). A session id is
``<agent>-<user>``; a prefix of a running session's id works too.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Column, Table

from ._client import Client, CliError, JsonOpt, KeyOpt, UrlOpt, fail, resolve_id

__all__ = ["app"]

app = typer.Typer(
    name="sessions",
    help="Sessions of a running server.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
console = Console()
IdArg = Annotated[str, typer.Argument(help="Session id (<agent>-<user>), or a prefix of one.")]


def _resolve(client: Client, session_id: str) -> str:
    return resolve_id(client, session_id, what="session", get="/sessions",
                      listing="/sessions", params={"limit": 1000}, field="session_id")  # fmt: skip


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S") if ts else ""


@app.command("ls")
def ls(
    agent: Annotated[str | None, typer.Option(help="Only this agent's sessions.")] = None,
    url: UrlOpt = "http://127.0.0.1:8000",
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Running sessions (a user key: its own)."""
    params: dict[str, Any] = {"limit": 1000}
    if agent:
        params["agent"] = agent
    try:
        with Client(url, key) as client:
            items = client.pages("/sessions", params)
    except CliError as exc:
        raise fail(exc) from None
    if as_json:
        typer.echo(json.dumps(items, indent=2))
        return
    table = Table(
        Column("session", no_wrap=True), "agent", "user", "state", "node", "turns",
        "last activity (UTC)",
    )  # fmt: skip
    for s in items:
        table.add_row(
            s["session_id"], s["agent"] or "", s["user"] or "", s["state"],
            (s.get("node") or "").split("#", 1)[0], str(s["turns"]), _when(s["last_activity"]),
        )  # fmt: skip
    console.print(table)


@app.command("show")
def show(
    session_id: IdArg,
    url: UrlOpt = "http://127.0.0.1:8000",
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One session: state, restarts, queue, turns, tokens, last activity."""
    try:
        with Client(url, key) as client:
            data = client.request("GET", f"/sessions/{_resolve(client, session_id)}").json()
    except CliError as exc:
        raise fail(exc) from None
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    typer.echo(
        f"{data['session_id']}: {data['state']} (agent {data['agent']}, user {data['user']}, "
        f"{data['turns']} turns, {data['tokens_in']}+{data['tokens_out']} tokens, "
        f"{data['restarts']} restarts, {data['queued']} queued"
        + (f", last activity {_when(data['last_activity'])} UTC)" if data["last_activity"] else ")")
    )


def _lines(agent: str, message: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for part in message.get("parts", []):
        kind = part.get("part_kind")
        content = part.get("content")
        if kind == "user-prompt":
            out.append(f"you: {content if isinstance(content, str) else json.dumps(content)}")
        elif kind == "text":
            out.append(f"{agent}: {content}")
        elif kind == "tool-call":
            out.append(f"[tool {part.get('tool_name')}({json.dumps(part.get('args'))})]")
        elif kind == "tool-return":
            out.append(f"[tool {part.get('tool_name')} → {json.dumps(content, default=str)}]")
    return out


@app.command("history")
def history(
    session_id: IdArg,
    last: Annotated[int, typer.Option("-n", "--last", min=0, help="Only the last N lines.")] = 0,
    url: UrlOpt = "http://127.0.0.1:8000",
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The session's stored conversation, oldest first."""
    try:
        with Client(url, key) as client:
            full = _resolve(client, session_id)
            agent = client.request("GET", f"/sessions/{full}").json()["agent"] or "agent"
            messages = client.pages(f"/sessions/{full}/messages", {"limit": 1000})
    except CliError as exc:
        raise fail(exc) from None
    if as_json:
        typer.echo(json.dumps(messages, indent=2))
        return
    lines = [line for m in messages for line in _lines(agent, m)]
    for line in lines[-last:] if last else lines:
        typer.echo(line)


@app.command("end")
def end(
    session_id: IdArg,
    purge: Annotated[
        bool, typer.Option("--purge", help="Delete the stored conversation too.")
    ] = False,
    url: UrlOpt = "http://127.0.0.1:8000",
    key: KeyOpt = None,
) -> None:
    """Stop a session (its conversation stays stored unless --purge)."""
    try:
        with Client(url, key) as client:
            full = _resolve(client, session_id)
            client.request("DELETE", f"/sessions/{full}", params={"purge": purge})
    except CliError as exc:
        raise fail(exc) from None
    typer.echo(f"{full}: ended" + (" and purged" if purge else ""))
