"""``netsuke serve``: a node, its API and dashboard on uvicorn, until a signal or ``run_for``."""

from __future__ import annotations

import asyncio
import os
import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import typer
import uvicorn

from .. import __version__
from ..api import Settings, configure_tracing, create_app, open_node

__all__ = ["IN_SERVE_ENV", "serve_node"]

#: ``NETSUKE_MANAGER_IN_SERVE=1``: ``netsuke serve`` also runs the AgentManager in-process
#: (settings from ``$NETSUKE_MANAGER_CONFIG`` and ``NETSUKE_MANAGER_*``; states in the node's
#: store) and its API reaches it over NATS at ``nats.url``.
IN_SERVE_ENV = "NETSUKE_MANAGER_IN_SERVE"


async def _start_manager(store: Any, stack: AsyncExitStack) -> Any:
    from ..manager import AgentManager, ConfigError, ManagerClient, SqlStateStore, load_config

    path = os.environ.get("NETSUKE_MANAGER_CONFIG")
    try:
        cfg = load_config(Path(path) if path else None)
    except ConfigError as e:
        raise RuntimeError(f"bad manager setting {e}") from None
    manager = AgentManager(cfg, state_store=SqlStateStore(store))
    await manager.start()
    stack.push_async_callback(manager.stop)
    client = ManagerClient(cfg.nats.url)
    stack.push_async_callback(client.close)
    typer.echo(f"netsuke: agent manager running ({len(manager.registry)} packages)")
    return client


async def serve_node(settings: Settings, run_for: float = 0.0) -> None:
    """Open the node, serve HTTP until SIGINT/SIGTERM (or ``run_for`` seconds), shut down."""
    configure_tracing(settings.otel_exporter)
    async with open_node(settings) as node, AsyncExitStack() as stack:
        extras = dict(node.extras)
        if os.environ.get(IN_SERVE_ENV, "").lower() in {"1", "true", "yes"}:
            extras["manager"] = await _start_manager(node.store, stack)
        app = create_app(settings, store=node.store, runtime=node.runtime, extras=extras)
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
        if node.bootstrap_secret is not None:
            typer.echo(f"admin API key (shown once, keep it): {node.bootstrap_secret}")
        sys.stdout.flush()
        if run_for:
            done, _ = await asyncio.wait({serving}, timeout=run_for)
            if not done:
                server.should_exit = True
        await serving
        typer.echo(f"netsuke: stopping node {node.runtime.node!r}")
        sys.stdout.flush()
