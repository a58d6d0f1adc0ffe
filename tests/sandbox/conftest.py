"""Fixtures for the sandbox tests: a real sandbox (bubblewrap when installed, else unshare),
a function store on a real SQLite file, a host-side TCP listener that counts connections, and a
secret in the host environment that must never reach user code, logs or errors.

Without any isolation mechanism the tests skip, except under ``CI=true`` where they fail.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from netsuke.sandbox import FunctionStore, Sandbox, SandboxConfig
from netsuke.store import Store

SECRET = "netsuke-test-secret-7f3a9c1e"


def _require_isolation() -> None:
    if shutil.which("bwrap") or shutil.which("unshare"):
        return
    reason = "neither bubblewrap nor unshare is installed; run `make install` as root"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true requires an isolation mechanism: {reason}")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def host_secret(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("NETSUKE_TEST_SECRET", SECRET)
    return SECRET


SPAWN_MODES = ["fork", "exec"]


@pytest.fixture(params=SPAWN_MODES)
def spawn_mode(request: pytest.FixtureRequest) -> str:
    """Workers forked by the fork server, or started from scratch per call."""
    return str(request.param)


@pytest.fixture
async def sandbox(spawn_mode: str) -> AsyncIterator[Sandbox]:
    _require_isolation()
    config = SandboxConfig(pool_size=1, fork_server=spawn_mode == "fork")
    async with Sandbox(config) as sb:
        if sb.isolation is None:
            if os.environ.get("CI") == "true":
                pytest.fail(f"no isolation works here: {sb.refusal}")
            pytest.skip(f"no isolation works here: {sb.refusal}")
        if sb.spawn != spawn_mode:
            reason = f"the fork server does not work here (user namespaces?): {sb.refusal}"
            if os.environ.get("CI") == "true":
                pytest.fail(f"CI=true requires it: {reason}")
            pytest.skip(reason)
        yield sb


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with Store.open(f"sqlite+aiosqlite:///{tmp_path / 'functions.db'}") as st:
        yield st


@pytest.fixture
async def functions(store: Store, sandbox: Sandbox) -> FunctionStore:
    return FunctionStore(store, sandbox)


@dataclass
class Listener:
    port: int
    connections: int = 0
    server: asyncio.Server | None = field(default=None, repr=False)


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    """A real TCP listener on 127.0.0.1 in the host; counts every connection it accepts."""
    state = Listener(port=0)

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    state.server = server
    yield state
    server.close()
    await server.wait_closed()


@pytest.fixture
def host_marker(tmp_path: Path) -> Iterator[Path]:
    """A host path that no sandboxed call may create."""
    path = tmp_path / "escaped.txt"
    yield path
    assert not path.exists(), "a sandboxed call wrote to the host"
