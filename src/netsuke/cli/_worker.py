"""``netsuke worker``: run task handlers in a process of their own, against a node's store.

::

    netsuke worker --worker myapp.tasks:summarise --worker myapp.tasks:translate \\
        --database-url postgresql+asyncpg://...

It opens the store and the queue (the same ``--database-url``, ``$NETSUKE_DATABASE_URL``,
``$NETSUKE_QUEUE_URL`` and settings file as ``netsuke serve``), loads each ``--worker
module:name`` and the settings file's ``[[workers]]``, and consumes the queue until
SIGINT/SIGTERM (or ``--run-for`` seconds). On a signal it stops taking tasks and lets running
handlers finish (their grace, then they are cancelled and their tasks redelivered after the
lease). Workflows named there are skipped (a node serves those). Once started it tunes its
interpreter as ``netsuke serve`` does (``gc_freeze``, ``gc_threshold``, ``switch_interval_ms``
from the same settings: ``_tuning``). Exit 2 for a target that cannot be loaded, 1 when the
store or the queue's broker cannot be opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..observability import configure_logging

if TYPE_CHECKING:
    from ..api import Settings
    from ..routing import WorkerSpec

__all__ = ["worker"]


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"netsuke: error: {message}", err=True)
    return typer.Exit(code)


def worker(
    worker: Annotated[
        list[str] | None,
        typer.Option(
            "--worker", metavar="MODULE:NAME", help="A task handler, module:name (repeatable)."
        ),
    ] = None,
    database_url: Annotated[
        str | None, typer.Option(help="Store URL [$NETSUKE_DATABASE_URL or SQLite file].")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="Settings file [$NETSUKE_CONFIG or ./netsuke.toml].")
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="debug..critical [info].")] = None,
    run_for: Annotated[
        float, typer.Option(help="Stop after this many seconds (0: until SIGINT/SIGTERM).")
    ] = 0.0,
) -> None:
    """Run task handlers (module:name) against the store, as a process of their own."""
    from ..api import SettingsError, load_settings
    from ..routing import WorkerLoadError, WorkerSpec

    try:
        settings = load_settings(config, database_url=database_url, log_level=log_level)
        specs = [*settings.workers, *(WorkerSpec.parse(w) for w in worker or ())]
    except (SettingsError, WorkerLoadError) as e:
        raise _fail(str(e)) from None
    if run_for < 0:
        raise _fail("--run-for must be >= 0")
    if not specs:
        raise _fail("no workers: give --worker module:name or [[workers]] in the settings")
    configure_logging(settings.log_level, json=settings.json_logs)
    from ..store import SchemaTooNewError, StoreError

    try:
        asyncio.run(_run(settings, specs, run_for))
    except WorkerLoadError as e:
        raise _fail(str(e)) from None
    except SchemaTooNewError as e:
        raise _fail(str(e), 3) from None
    except (StoreError, OSError, RuntimeError) as e:  # (RuntimeError: the queue's broker)
        raise _fail(str(e), 1) from None
    except KeyboardInterrupt:
        sys.exit(130)


async def _run(settings: Settings, specs: list[WorkerSpec], run_for: float) -> None:
    from ..routing import load_workers, open_queue
    from ..store import Store
    from ._tuning import tune_process

    async with Store.open(settings.database_url) as store:
        queue = await open_queue(settings.queue_url, store)
        try:
            loaded = load_workers(specs, queue)
            for wf in loaded.workflows:
                typer.echo(f"netsuke: workflow {wf.name!r} skipped (a node serves workflows)")
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError):
                    loop.add_signal_handler(sig, stop.set)
            await loaded.start()
            # as serve does once started: the collector's settings, start-up's objects frozen
            # (a worker allocates per task what a node does per request; see _tuning)
            tune_process(settings)
            names = ", ".join(w.name for w in loaded.workers) or "none"
            typer.echo(f"netsuke worker: running {names} (Ctrl-C to stop)")
            sys.stdout.flush()
            try:
                if run_for:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), run_for)
                else:
                    await stop.wait()
            finally:
                await loaded.stop()
                typer.echo("netsuke worker: stopped")
                sys.stdout.flush()
        finally:
            await queue.close()
