"""``netsuke events``: follow the node's events over the WebSocket (``/api/v1/events``).

Each ``--topics`` pattern is checked here first (a refused one says why, exit 2); a server that
refuses the stream says why too (a bad key, a pattern, the rate limit), in one line.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated
from urllib.parse import urlencode

import typer
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.sync.client import connect

from netsuke.events import check_pattern

from ._client import CliError, JsonOpt, KeyOpt, UrlOpt, fail, unreachable

_CLOSE_REASONS = {
    4400: "the server refused the topic pattern",
    4401: "the server refused the key (missing, unknown or revoked)",
    4429: "rate limited; try again shortly",
}

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
    patterns = [p.strip() for p in topics.split(",") if p.strip()] or ["*"]
    for pattern in patterns:
        try:
            check_pattern(pattern)
        except ValueError as exc:
            raise fail(CliError(f"--topics: {exc}", code=2)) from None
    ws_url = url.rstrip("/").replace("http", "ws", 1) + "/api/v1/events"
    query = urlencode({"topics": ",".join(patterns)})
    seen = 0
    try:
        with connect(
            f"{ws_url}?{query}", additional_headers={"Authorization": f"Bearer {key}"}
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
        frame = exc.rcvd
        if frame is None:
            raise fail(CliError("events stream closed: connection closed")) from None
        why = _CLOSE_REASONS.get(frame.code)
        detail = f"{why}: {frame.reason}" if why and frame.reason else why or frame.reason
        raise fail(CliError(f"events stream closed: {detail or f'code {frame.code}'}")) from None
    except InvalidURI as exc:
        raise fail(CliError(f"--url: not a server URL ({exc})", code=2)) from None
    except InvalidHandshake as exc:
        raise fail(CliError(f"{url} refused the events stream: {exc}")) from None
    except OSError as exc:
        raise fail(unreachable(url, exc)) from None
