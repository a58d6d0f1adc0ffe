"""``netsuke serve``: a node, its API and dashboard on uvicorn, until a signal or ``run_for``."""

from __future__ import annotations

import asyncio
import sys

import typer
import uvicorn

from .. import __version__
from ..api import Settings, configure_tracing, create_app, open_node

__all__ = ["serve_node"]


async def serve_node(settings: Settings, run_for: float = 0.0) -> None:
    """Open the node, serve HTTP until SIGINT/SIGTERM (or ``run_for`` seconds), shut down."""
    configure_tracing(settings.otel_exporter)
    async with open_node(settings, bootstrap=False) as node:
        app = create_app(settings, store=node.store, runtime=node.runtime, extras=node.extras)
        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="on",
            ws="websockets-sansio",
            timeout_graceful_shutdown=max(1, round(settings.shutdown_timeout)),
        )
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve())
        while not server.started and not serving.done():  # noqa: ASYNC110 (uvicorn has no event)
            await asyncio.sleep(0.02)
        if serving.done():
            await serving
            raise OSError(f"could not listen on {settings.host}:{settings.port}")
        port = server.servers[0].sockets[0].getsockname()[1]
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        typer.echo(
            f"netsuke {__version__}: node {node.runtime.node!r} running at "
            f"http://{host}:{port} (Ctrl-C to stop)"
        )
        # issued only now that the node listens: a start that cannot bind issues no key unseen
        secret = await node.issue_bootstrap_key()
        if secret is not None:
            typer.echo(f"admin API key (shown once, keep it): {secret}")
        sys.stdout.flush()
        if run_for:
            done, _ = await asyncio.wait({serving}, timeout=run_for)
            if not done:
                server.should_exit = True
        await serving
        typer.echo(f"netsuke: stopping node {node.runtime.node!r}")
        sys.stdout.flush()
