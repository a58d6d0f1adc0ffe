"""``netsuke serve``: a node, its API and dashboard on uvicorn, until a signal or ``run_for``.

Stopping: **SIGTERM** (systemd, Docker, Kubernetes) and **SIGINT** (Ctrl-C) both stop the node
in order and the process exits 0:

1. stop accepting: the listening sockets close; new connections are refused;
2. drain: requests in flight (chat turns, function executions, task submissions) finish,
   for at most ``shutdown_timeout`` seconds [30]; then their connections are closed;
3. the runtime's ordered shutdown: agents finish or fail their turns (each turn is committed
   or reported failed), within ``shutdown_timeout``; then the sandbox closes;
4. the store commits queued turns and tasks, checkpoints SQLite's write-ahead log into the
   database file and closes.

A second signal during the drain stops waiting for connections (step 2 ends at once); the
later steps still run. uvicorn's own signal handling is replaced: it re-raises the signal after
its shutdown, which turned every SIGTERM into a crash (exit 143).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path
from typing import Any

import typer
import uvicorn
from prometheus_client import Gauge

from .. import __version__
from ..api import ServerNode, Settings, configure_tracing, create_app, open_node
from ..observability import REGISTRY, get_logger
from ._tuning import tune_process

__all__ = ["IN_SERVE_ENV", "STOP_SIGNALS", "serve_node"]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
log = get_logger("netsuke.cli")

#: Set by ``serve --nodes`` for each node it starts: how often it restarted that node before.
RESTARTS_ENV = "NETSUKE_NODE_RESTARTS"
NODE_RESTARTS = Gauge(
    "netsuke_serve_node_restarts",
    "Times `serve --nodes` restarted this node (by name) after it exited, before this run.",
    ["node"],
    registry=REGISTRY,
)


class _Server(uvicorn.Server):
    """uvicorn's server without its signal handling (the node's own handlers stop it).

    With an accept board (a node of ``serve --nodes``, ``netsuke.cli._accept``), the node
    accepts on the shared socket through ``BalancedAcceptor`` instead of asyncio's server."""

    board: tuple[Any, int] | None = None  # (AcceptBoard, this node's slot)
    acceptor: Any = None  # the BalancedAcceptor while serving

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        if self.board is None or not sockets or self.config.ssl:
            await super().startup(sockets=sockets)
            return
        from ._accept import BalancedAcceptor, counted_protocol

        await super().startup(sockets=[])  # the lifespan; no asyncio server
        if not self.started:
            return
        board, slot = self.board
        loop = asyncio.get_running_loop()
        config, state, app_state = self.config, self.server_state, self.lifespan.state

        def factory() -> asyncio.Protocol:
            protocol: asyncio.Protocol = counted(
                config=config, server_state=state, app_state=app_state, _loop=loop
            )
            return protocol

        self.acceptor = BalancedAcceptor(
            sockets[0], board, slot, factory, lambda: len(state.connections)
        )
        counted = counted_protocol(config.http_protocol_class, self.acceptor.refresh)
        self.acceptor.start()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.acceptor is not None:  # stop accepting first, as uvicorn's servers would
            await self.acceptor.close()
        await super().shutdown(sockets=sockets)


def _accept_board() -> tuple[Any, int] | None:
    """This node's accept board and slot (``netsuke.cli._accept``), when ``serve --nodes``
    gave it one; a malformed value is logged and the node accepts as asyncio does."""
    from ._accept import BOARD_ENV, AcceptBoard

    value = os.environ.get(BOARD_ENV)
    if not value:
        return None
    try:
        return AcceptBoard.from_env(value)
    except (ValueError, OSError) as e:
        log.warning("serve.accept_board_unusable", error=str(e))
        return None


class _Stopper:
    """What SIGTERM and SIGINT do: ask the server to exit (a second signal: without waiting
    for open connections). A signal before the server exists stops it as soon as it does;
    one after it has stopped changes nothing (the ordered shutdown goes on)."""

    def __init__(self) -> None:
        self.server: uvicorn.Server | None = None
        self.requested = False

    def attach(self, server: uvicorn.Server) -> None:
        self.server = server
        server.should_exit = self.requested

    def __call__(self, sig: signal.Signals) -> None:
        if self.requested and self.server is not None:
            self.server.force_exit = True
        self.requested = True
        if self.server is not None:
            self.server.should_exit = True
        forced = self.server is not None and self.server.force_exit
        log.info("node.stop_requested", signal=sig.name, forced=forced)


@contextmanager
def _signals_stop(stopper: _Stopper) -> Iterator[None]:
    """Route SIGTERM and SIGINT to ``stopper`` while the block runs; restore after."""
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    try:
        for sig in STOP_SIGNALS:
            try:
                loop.add_signal_handler(sig, stopper, sig)
            except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
                continue
            installed.append(sig)
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


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


async def serve_node(
    settings: Settings, run_for: float = 0.0, *, listen_fd: int | None = None
) -> None:
    """Open the node, serve HTTP until SIGINT/SIGTERM (or ``run_for`` seconds), shut down in
    order (see the module documentation). ``listen_fd``: serve on this listening socket,
    inherited from ``netsuke serve --nodes`` (which bound it once for all its nodes), instead
    of binding ``host:port``."""
    configure_tracing(settings.otel_exporter)
    stopper = _Stopper()
    with _signals_stop(stopper):
        async with open_node(settings, bootstrap=False) as node, AsyncExitStack() as stack:
            extras = dict(node.extras)
            if listen_fd is not None:  # a node of `serve --nodes`
                restarts = os.environ.get(RESTARTS_ENV, "0")
                NODE_RESTARTS.labels(node=settings.node).set(int(restarts or 0))
            if os.environ.get(IN_SERVE_ENV, "").lower() in {"1", "true", "yes"}:
                extras["manager"] = await _start_manager(node.store, stack)
            fenced: list[str] = []

            def stop_fenced(reason: str) -> None:
                fenced.append(reason)
                stopper(signal.SIGTERM)

            if node.cluster is not None:  # a fenced member stops, to be restarted anew
                node.cluster.membership.on_fenced(stop_fenced)
            await _serve(settings, node, extras, stopper, run_for, listen_fd)
            if fenced:
                from ..cluster import FencedError

                raise FencedError(node.runtime.node, fenced[0])
    typer.echo("netsuke: node stopped")
    sys.stdout.flush()


async def _serve(
    settings: Settings,
    node: ServerNode,
    extras: dict[str, Any],
    stopper: _Stopper,
    run_for: float,
    listen_fd: int | None = None,
) -> None:
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
    server = _Server(config)
    stopper.attach(server)
    sockets = None
    if listen_fd is not None:  # shared with the other nodes of `serve --nodes`
        sockets = [socket.socket(fileno=listen_fd)]
        server.board = _accept_board()
    serving = asyncio.create_task(server.serve(sockets=sockets))
    while not server.started and not serving.done():  # noqa: ASYNC110 (uvicorn has no event)
        await asyncio.sleep(0.02)
    # a stop that came during start-up (a signal, a fenced lease) may have closed the listener
    # already: uvicorn then has no socket left to name the port by
    bound = [sock for srv in getattr(server, "servers", ()) for sock in (srv.sockets or ())]
    if server.acceptor is not None:
        bound.append(server.acceptor.sock)
    if serving.done() or not bound:
        await serving
        if not stopper.requested and not bound:
            raise OSError(f"could not listen on {settings.host}:{settings.port}")
    else:
        tune_process(settings)  # started: what exists now lives as long as the process
        port = bound[0].getsockname()[1]
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        running = (
            f"netsuke {__version__}: node {node.runtime.node!r} running at "
            f"http://{host}:{port} (Ctrl-C to stop)"
        )
        if listen_fd is None:
            typer.echo(running)
        # issued only now that the node listens: a start that cannot bind issues no key unseen
        secret = await node.issue_bootstrap_key()
        if secret is not None:
            typer.echo(f"admin API key (shown once, keep it): {secret}")
        if listen_fd is not None:  # `serve --nodes` starts the next node after this line
            typer.echo(running)
        sys.stdout.flush()
        if run_for:
            done, _ = await asyncio.wait({serving}, timeout=run_for)
            if not done:
                server.should_exit = True
        await serving
    typer.echo(f"netsuke: stopping node {node.runtime.node!r}")
    sys.stdout.flush()
