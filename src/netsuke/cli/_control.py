"""``netsuke agents start|stop|restart|status|logs NAME``: seed 003's agent control.

``start`` runs the agent's instance from its current definition; ``stop`` stops it and every
session of the agent; ``restart`` does both, picking up the definition as it is now.
``status`` prints the state; ``logs`` prints the recent lines of the agent's in-memory log
ring (``-n`` lines, ``--follow`` polls for new ones until interrupted or ``--count`` lines).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from ._agents import app
from ._client import Client, CliError, JsonOpt, KeyOpt, UrlOpt, fail

__all__ = ["control", "logs", "status"]

NameArg = Annotated[str, typer.Argument(help="Agent name.")]


def control(action: str, name: str, url: str, key: str | None, as_json: bool) -> None:
    try:
        with Client(url, key) as client:
            body = client.request("POST", f"/agents/{name}/{action}").json()
    except CliError as exc:
        raise fail(exc) from None
    if as_json:
        typer.echo(json.dumps(body, indent=2))
        return
    state = (body.get("status") or {}).get("state", "?")
    stopped = f", {body['stopped']} process(es) stopped" if body.get("stopped") else ""
    typer.echo(f"{name}: {action} ok, {state}{stopped}")


@app.command("start")
def start(
    name: NameArg,
    url: UrlOpt = "http://127.0.0.1:8000",
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Start the agent's instance (no-op when it runs)."""
    control("start", name, url, key, as_json)


@app.command("stop")
def stop(
    name: NameArg,
    url: UrlOpt = "http://127.0.0.1:8000",
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Stop the agent's instance and sessions (their conversations are kept)."""
    control("stop", name, url, key, as_json)


@app.command("restart")
def restart(
    name: NameArg,
    url: UrlOpt = "http://127.0.0.1:8000",
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Stop everything of the agent, then start its instance from the current definition."""
    control("restart", name, url, key, as_json)


@app.command("status")
def status(
    name: NameArg,
    url: UrlOpt = "http://127.0.0.1:8000",
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The agent's state, version, instance and session count."""
    try:
        with Client(url, key) as client:
            body = client.request("GET", f"/agents/{name}/status").json()
    except CliError as exc:
        raise fail(exc) from None
    if as_json:
        typer.echo(json.dumps(body, indent=2))
        return
    typer.echo(f"{name}: {body['state']} (version {body['version']}, {body['sessions']} sessions)")


def _line(item: dict[str, Any]) -> str:
    when = datetime.fromtimestamp(item["time"], UTC).strftime("%H:%M:%S.%f")[:-3]
    rest = " ".join(
        f"{k}={v}"
        for k, v in item.items()
        if k not in ("time", "topic", "session") and v is not None
    )
    return f"{when} {item['topic']:<16} {item.get('session') or '-'} {rest}".rstrip()


@app.command("logs")
def logs(
    name: NameArg,
    lines: Annotated[int, typer.Option("-n", "--lines", min=1, max=1000)] = 50,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Poll for new lines.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between polls.", min=0.05)] = 1.0,
    count: Annotated[int, typer.Option(help="With --follow: stop after this many lines.")] = 0,
    url: UrlOpt = "http://127.0.0.1:8000",
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The agent's recent log lines (lifecycle and turns), oldest first."""
    seen: float = 0.0
    printed = 0
    try:
        with Client(url, key) as client:
            while True:
                items = client.request(
                    "GET", f"/agents/{name}/logs", params={"limit": lines if not seen else 1000}
                ).json()["items"]
                for item in items:
                    if item["time"] <= seen:
                        continue
                    typer.echo(json.dumps(item) if as_json else _line(item))
                    printed += 1
                    if count and printed >= count:
                        return
                if items:
                    seen = max(seen, items[-1]["time"])
                if not follow:
                    return
                time.sleep(interval)
    except CliError as exc:
        raise fail(exc) from None
    except KeyboardInterrupt:
        return
