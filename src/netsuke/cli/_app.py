"""``netsuke``: run a node (``serve``) and manage a running one over HTTP (``agents``,
``keys``, ``functions``, ``tasks``, ``chat``, ``events``), plus ``db`` for schema migrations.

Every failure prints one line ``netsuke: error: ...`` on stderr and exits non-zero: 1 when the
server refused or could not be reached, 2 for bad usage or settings, 3 for a database newer
than the code.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy.exc import SQLAlchemyError

from .. import __version__
from ..observability import configure_logging
from ..store import DefinitionFileError, SchemaTooNewError, StoreError
from ..store import cli as store_cli
from . import (
    _agents,
    _audit,
    _chat,
    _cluster,
    _control,
    _edit,
    _events,
    _executions,
    _functions,
    _keys,
    _manager,
    _sessions,
    _tasks,
    _webhooks,
    _worker,
)

app = typer.Typer(
    name="netsuke",
    help="Netsuke: supervised, named, stateful AI agents.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,  # help texts show defaults as "[8000]": not markup
    pretty_exceptions_show_locals=False,  # a crash never prints locals (keys, settings)
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"netsuke {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", "-V", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Netsuke: supervised, named, stateful AI agents."""


app.add_typer(store_cli.app, name="db")
app.add_typer(_agents.app, name="agents")
app.add_typer(_keys.app, name="keys")
app.add_typer(_functions.app, name="functions")
app.add_typer(_tasks.app, name="tasks")
app.add_typer(_sessions.app, name="sessions")
app.add_typer(_webhooks.app, name="webhooks")
app.command("audit")(_audit.audit)
app.add_typer(_executions.app, name="executions")
app.command("events")(_events.events)
app.command("chat")(_chat.chat)
app.command("manager")(_manager.manager)
app.add_typer(_cluster.app, name="cluster")
_ = _control.__all__  # importing _control registers agents start|stop|restart|status|logs
_ = _edit.__all__  # importing _edit registers agents set|edit


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"netsuke: error: {message}", err=True)
    return typer.Exit(code)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface [127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port; 0 picks a free one [8000].")] = None,
    node: Annotated[str | None, typer.Option(help="Node name [local].")] = None,
    database_url: Annotated[
        str | None, typer.Option(help="Store URL [$NETSUKE_DATABASE_URL or SQLite file].")
    ] = None,
    agents_dir: Annotated[
        Path | None, typer.Option(help="Sync agent definitions from this folder's *.yaml.")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="Settings file [$NETSUKE_CONFIG or ./netsuke.toml].")
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="debug..critical [info].")] = None,
    json_logs: Annotated[bool | None, typer.Option("--json-logs", help="Log JSON lines.")] = None,
    shutdown_timeout: Annotated[
        float | None, typer.Option(help="Seconds allowed for a clean shutdown [30].")
    ] = None,
    run_for: Annotated[
        float, typer.Option(help="Stop after this many seconds (0: until SIGINT/SIGTERM).")
    ] = 0.0,
    cluster: Annotated[
        str | None,
        typer.Option(
            "--cluster",
            metavar="NATS_URL",
            help="Join a cluster over NATS, nats://HOST:PORT (comma-separated for several); "
            "needs a store shared by the cluster [$NETSUKE_CLUSTER; alone when unset].",
        ),
    ] = None,
    cluster_creds: Annotated[
        Path | None, typer.Option(help="NATS credentials file [$NETSUKE_CLUSTER_CREDS].")
    ] = None,
    cluster_tls_ca: Annotated[
        Path | None, typer.Option(help="CA file to verify NATS [$NETSUKE_CLUSTER_TLS_CA].")
    ] = None,
    cluster_tls_cert: Annotated[
        Path | None, typer.Option(help="NATS client certificate [$NETSUKE_CLUSTER_TLS_CERT].")
    ] = None,
    cluster_tls_key: Annotated[
        Path | None, typer.Option(help="NATS client key [$NETSUKE_CLUSTER_TLS_KEY].")
    ] = None,
    cluster_lease: Annotated[
        float | None,
        typer.Option(help="Membership lease in seconds [$NETSUKE_CLUSTER_LEASE_S or 5]."),
    ] = None,
    label: Annotated[
        list[str] | None,
        typer.Option(
            "--label",
            metavar="KEY=VALUE",
            help="A node label for placement (repeatable) [$NETSUKE_NODE_LABELS].",
        ),
    ] = None,
    worker: Annotated[
        list[str] | None,
        typer.Option(
            "--worker",
            metavar="MODULE:NAME",
            help="Load a task handler or workflow, module:name (repeatable; adds to the "
            "settings' workers).",
        ),
    ] = None,
    nodes: Annotated[
        str | None,
        typer.Option(
            "--nodes",
            metavar="N|auto",
            help="Run N node processes on this machine (auto: one per core) joined through "
            "an embedded nats-server (or --cluster), all serving one port [$NETSUKE_NODES; "
            "one node in this process when unset].",
        ),
    ] = None,
    listen_fd: Annotated[int | None, typer.Option("--listen-fd", hidden=True)] = None,
) -> None:
    """Start a node with the API and dashboard; print its URL (and, on first start, an admin
    key, once). Options override NETSUKE_* variables, which override netsuke.toml."""
    from ..api import SettingsError, load_settings

    try:
        settings = load_settings(
            config,
            host=host,
            port=port,
            node=node,
            database_url=database_url,
            agents_dir=agents_dir,
            log_level=log_level,
            json_logs=json_logs,
            shutdown_timeout=shutdown_timeout,
            cluster=cluster,
            cluster_creds=cluster_creds,
            cluster_tls_ca=cluster_tls_ca,
            cluster_tls_cert=cluster_tls_cert,
            cluster_tls_key=cluster_tls_key,
            cluster_lease_s=cluster_lease,
            nodes=nodes,
            node_labels=",".join(label) if label else None,
        )
    except SettingsError as e:
        raise _fail(str(e)) from None
    if run_for < 0:
        raise _fail("--run-for must be >= 0")
    from ..routing import WorkerLoadError, WorkerSpec

    try:
        extra = [WorkerSpec.parse(w) for w in worker or ()]
    except WorkerLoadError as e:
        raise _fail(str(e)) from None
    if extra:
        settings = settings.model_copy(update={"workers": [*settings.workers, *extra]})
    configure_logging(settings.log_level, json=settings.json_logs, capture_stdlib=True)
    if settings.nodes is not None and listen_fd is None:
        from ._serve_nodes import NodesError, serve_nodes

        given: list[tuple[str, object]] = [
            ("--agents-dir", agents_dir), ("--config", config), ("--log-level", log_level),
            ("--shutdown-timeout", shutdown_timeout), ("--cluster-lease", cluster_lease),
        ]  # fmt: skip
        if cluster is not None:  # an external NATS: its credentials and TLS too
            given += [
                ("--cluster-creds", cluster_creds), ("--cluster-tls-ca", cluster_tls_ca),
                ("--cluster-tls-cert", cluster_tls_cert), ("--cluster-tls-key", cluster_tls_key),
            ]  # fmt: skip
        forward = [a for opt, v in given if v is not None for a in (opt, str(v))]
        forward += ["--json-logs"] if json_logs else []
        forward += [a for w in worker or () for a in ("--worker", w)]
        try:
            asyncio.run(serve_nodes(settings, forward, run_for))
        except NodesError as e:
            raise _failed_node(_one_line(e), e.code) from None
        except KeyboardInterrupt:
            sys.exit(130)
        return
    from ._serve import serve_node

    try:
        asyncio.run(serve_node(settings, run_for, listen_fd=listen_fd))
    except SchemaTooNewError as e:
        raise _failed_node(str(e), 3) from None
    except _fenced_error() as e:  # a cluster member that could not renew its lease
        raise _failed_node(_one_line(e), 1) from None
    except (DefinitionFileError, StoreError, RuntimeError, OSError, WorkerLoadError) as e:
        raise _failed_node(_one_line(e)) from None
    except SQLAlchemyError as e:  # a store failure after opening (a lock during start-up)
        reason = getattr(e, "orig", None) or e
        raise _failed_node(f"store: {_one_line(reason)}") from None
    except KeyboardInterrupt:
        sys.exit(130)


def _fenced_error() -> type[Exception]:
    from ..cluster import FencedError

    return FencedError


def _failed_node(message: str, code: int = 2) -> typer.Exit:
    """The one line for a node that could not run. A database driver's worker thread left
    over from the failed start may still end after the event loop closed; its error is not
    reported (the line above says what failed)."""
    threading.excepthook = lambda _args: None
    return _fail(message, code)


def _one_line(exc: BaseException) -> str:
    """The first line of an error message, at most 300 characters (never a traceback)."""
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]


app.command("worker")(_worker.worker)


def main() -> None:
    app()
