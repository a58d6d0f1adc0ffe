"""``netsuke``: run a node, and (as the layers land) manage agents, functions and tasks."""

from __future__ import annotations

import asyncio
import signal
import sys

import typer

from .. import __version__
from ..kernel import Runtime
from ..observability import configure_logging
from ..store import cli as store_cli

app = typer.Typer(
    name="netsuke",
    help="Netsuke: supervised, named, stateful AI agents.",
    no_args_is_help=True,
    add_completion=False,
)


app.add_typer(store_cli.app, name="db")


def _fail(message: str) -> None:
    typer.echo(f"netsuke: error: {message}", err=True)
    raise typer.Exit(2)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


@app.command()
def serve(
    node: str = typer.Option("local", help="Node name carried by every pid of this node."),
    log_level: str = typer.Option("info", help="debug, info, warning, error or critical."),
    json_logs: bool = typer.Option(False, "--json-logs", help="Log JSON lines."),
    shutdown_timeout: float = typer.Option(30.0, help="Seconds allowed for a clean shutdown."),
    run_for: float = typer.Option(
        0.0, help="Stop after this many seconds (0: run until SIGINT/SIGTERM)."
    ),
) -> None:
    """Start a node and run it until interrupted, then shut it down in order."""
    try:
        configure_logging(log_level, json=json_logs)
    except ValueError as e:
        _fail(str(e))
    if shutdown_timeout <= 0 or run_for < 0:
        _fail("--shutdown-timeout must be > 0 and --run-for >= 0")
    try:
        asyncio.run(_serve(node, shutdown_timeout, run_for))
    except ValueError as e:
        _fail(str(e))


async def _serve(node: str, shutdown_timeout: float, run_for: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Runtime(node, shutdown_timeout=shutdown_timeout) as rt:
        typer.echo(f"netsuke {__version__}: node {rt.node!r} running (Ctrl-C to stop)")
        sys.stdout.flush()
        if run_for:
            try:
                await asyncio.wait_for(stop.wait(), run_for)
            except TimeoutError:
                pass
        else:
            await stop.wait()
        typer.echo(f"netsuke: stopping node {rt.node!r}")


def main() -> None:
    app()
