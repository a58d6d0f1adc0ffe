"""``netsuke manager``: run the AgentManager service (seed 003) until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ..observability import configure_logging


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"netsuke: error: {message}", err=True)
    return typer.Exit(code)


def manager(
    config: Annotated[
        Path | None, typer.Option(help="The seed's agent_manager.yaml [defaults].")
    ] = None,
    packages: Annotated[Path | None, typer.Option(help="Packages folder [./packages].")] = None,
    nats_url: Annotated[
        str | None, typer.Option(help="NATS server [nats://localhost:4222].")
    ] = None,
    database_url: Annotated[
        str | None, typer.Option(help="Store for agent states [in memory when unset].")
    ] = None,
    logs_dir: Annotated[Path | None, typer.Option(help="Agent log files [./logs].")] = None,
    run_for: Annotated[
        float, typer.Option(help="Stop after this many seconds (0: until SIGINT/SIGTERM).")
    ] = 0.0,
) -> None:
    """Discover agent packages, run each as a supervised OS process and answer the seed's
    commands on agent.manager.command / agent.manager.query. Options override
    NETSUKE_MANAGER_<SECTION>__<FIELD> variables, which override the YAML file."""
    from ..manager import ConfigError, load_config

    overrides: dict[str, dict[str, Any]] = {}
    if packages is not None:
        overrides.setdefault("packages", {})["dir"] = packages
    if logs_dir is not None:
        overrides.setdefault("packages", {})["logs_dir"] = logs_dir
    if nats_url is not None:
        overrides.setdefault("nats", {})["url"] = nats_url
    if database_url is not None:
        overrides.setdefault("database", {})["url"] = database_url
    try:
        cfg = load_config(config, overrides=overrides)
    except ConfigError as e:
        raise _fail(f"bad setting {e}") from None
    if run_for < 0:
        raise _fail("--run-for must be >= 0")
    configure_logging(cfg.service.log_level.lower())
    try:
        asyncio.run(_run(cfg, run_for))
    except (OSError, RuntimeError) as e:
        raise _fail(str(e), 1) from None
    except KeyboardInterrupt:
        sys.exit(130)


async def _run(cfg: Any, run_for: float) -> None:
    from ..manager import AgentManager, MemoryStateStore, SqlStateStore, StateStore

    state: StateStore = (
        await SqlStateStore.open(cfg.database.url) if cfg.database.url else MemoryStateStore()
    )
    manager = AgentManager(cfg, state_store=state)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        try:
            await manager.start()
        except Exception as e:
            raise RuntimeError(f"manager could not start: {type(e).__name__}: {e}") from None
        typer.echo(f"netsuke manager: {len(manager.registry)} agents, nats {cfg.nats.url}")
        if run_for:
            try:
                await asyncio.wait_for(stop.wait(), run_for)
            except TimeoutError:
                pass
        else:
            await stop.wait()
        await manager.stop()
    finally:
        await state.close()
