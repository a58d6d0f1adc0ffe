"""``netsuke chat AGENT [--user U]``: talk to an agent on a running server, streaming.

Get-or-starts the session ``<AGENT>-<USER>`` (``POST /api/v1/sessions``; ``--user`` defaults
to the key's own user), then reads one message per line from stdin and prints the reply as it
streams over Server-Sent Events (``POST /sessions/{id}/messages``, ``Accept:
text/event-stream``): text as it comes, tool calls as ``[tool name(args)]`` and
``[tool name → result]`` lines on stderr. An empty line is skipped; ``/quit`` or end of input
ends the chat (the session keeps running on the server; ``--end`` stops it on exit). A turn
that fails prints ``netsuke: error: ...`` and the chat goes on; at the end the exit status is 1
if any turn failed. ``--json`` prints each event as a JSON line instead.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Annotated, Any

import httpx
import typer

from ._client import Client, CliError, JsonOpt, KeyOpt, UrlOpt, _describe, fail, unreachable

__all__ = ["chat", "sse_events"]


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(event, data)`` pairs of a Server-Sent Events stream, as they arrive."""
    event = "message"
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield event, json.loads("\n".join(data))
            event, data = "message", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())
    if data:
        yield event, json.loads("\n".join(data))


def _turn(client: Client, session_id: str, message: str, as_json: bool) -> bool:
    """Stream one turn to stdout; whether it succeeded."""
    http = client._http
    try:
        with http.stream(
            "POST",
            f"/sessions/{session_id}/messages",
            json={"message": message},
            headers={"Accept": "text/event-stream"},
            timeout=httpx.Timeout(30.0, read=600.0),
        ) as response:
            if response.status_code >= 400:
                response.read()
                raise CliError(_describe(response), status=response.status_code)
            for name, data in sse_events(response.iter_lines()):
                if as_json:
                    typer.echo(json.dumps({"event": name, **data}))
                elif name == "delta":
                    sys.stdout.write(data["text"])
                    sys.stdout.flush()
                elif name == "tool_call_started":
                    typer.echo(f"[tool {data['tool_name']}({json.dumps(data['args'])})]", err=True)
                elif name == "tool_call_finished":
                    typer.echo(f"[tool {data['tool_name']} → {data['result']}]", err=True)
                elif name == "completed":
                    typer.echo("")
                elif name == "error":
                    detail = data.get("detail")
                    raise CliError(
                        f"{data.get('title')} ({data.get('status')})"
                        + (f": {detail}" if detail else "")
                    )
    except httpx.HTTPError as exc:
        raise unreachable(client.url, exc) from None
    return True


def chat(
    agent: Annotated[str, typer.Argument(help="Agent definition name.")],
    user: Annotated[str | None, typer.Option(help="Chat as this user [the key's name].")] = None,
    end: Annotated[bool, typer.Option("--end", help="Stop the session on exit.")] = False,
    url: UrlOpt = "http://127.0.0.1:8000",
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Chat with AGENT: one message per stdin line, replies streamed."""
    failed = False
    try:
        with Client(url, key) as client:
            body: dict[str, Any] = {"agent": agent}
            if user is not None:
                body["user"] = user
            session = client.request("POST", "/sessions", json=body).json()
            sid = session["session_id"]
            interactive = sys.stdin.isatty()
            if not as_json:
                typer.echo(f"chatting with {agent} as {session['user']} (session {sid})", err=True)
            while True:
                if interactive:
                    typer.echo("you> ", nl=False, err=True)
                line = sys.stdin.readline()
                if not line or line.strip() == "/quit":
                    break
                message = line.rstrip("\n")
                if not message.strip():
                    continue
                try:
                    _turn(client, sid, message, as_json)
                except CliError as exc:
                    if exc.status is None and exc.message.startswith("cannot reach"):
                        raise
                    failed = True
                    typer.echo(f"netsuke: error: {exc.message}", err=True)
            if end:
                client.request("DELETE", f"/sessions/{sid}", allow=(404,))
    except CliError as exc:
        raise fail(exc) from None
    if failed:
        raise typer.Exit(1)
