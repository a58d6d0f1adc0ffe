"""``netsuke events``: follow the node's events over the WebSocket (``/api/v1/events``)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated

import typer
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.sync.client import connect

from ._client import CliError, JsonOpt, KeyOpt, UrlOpt, fail

__all__ = ["events"]


def events(
    topics: Annotated[
        str, typer.Option("--topics", "-t", help="Comma-separated topic patterns.")
    ] = "*",
    count: Annotated[int, typer.Option(help="Stop after this many events (0: never).")] = 0,
    url: UrlOpt = "http://127.0.0.1:8000",
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Print events as they happen (one line each; --json for JSON lines)."""
    if not key:
        raise fail(CliError("no API key: pass --key or set NETSUKE_API_KEY", code=2))
    ws_url = url.rstrip("/").replace("http", "ws", 1) + "/api/v1/events"
    seen = 0
    try:
        with connect(
            f"{ws_url}?topics={topics}", additional_headers={"Authorization": f"Bearer {key}"}
        ) as ws:
            for raw in ws:
                frame = json.loads(raw)
                if frame.get("type") != "event":
                    continue
                if as_json:
                    typer.echo(json.dumps(frame))
                else:
                    when = datetime.fromtimestamp(frame["time"]).strftime("%H:%M:%S")
                    data = " ".join(f"{k}={v}" for k, v in frame["data"].items())
                    typer.echo(f"{when} {frame['topic']} {data}")
                seen += 1
                if count and seen >= count:
                    return
    except ConnectionClosed as exc:
        reason = exc.rcvd.reason if exc.rcvd is not None else "connection closed"
        raise fail(CliError(f"events stream closed: {reason}")) from None
    except (OSError, InvalidHandshake, InvalidURI) as exc:
        raise fail(CliError(f"cannot reach {url}: {type(exc).__name__}")) from None
