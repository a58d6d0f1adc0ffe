"""The manager's own life: state in the store, restart after a crash, no orphans."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from netsuke.manager import AgentStatus, SqlStateStore

from .conftest import SDK_AGENT, ManagerFactory, wait_for, write_package
from .test_supervision import _alive

pytestmark = pytest.mark.timeout(120)


async def test_restarted_manager_restores_desired_states_from_the_store(
    make_manager: ManagerFactory, tmp_path: Path, migrated_url: str
) -> None:
    url = migrated_url  # SQLite and PostgreSQL
    pk = tmp_path / "packages"
    write_package(pk, "keeper", SDK_AGENT)
    write_package(pk, "resting", SDK_AGENT)
    state = await SqlStateStore.open(url)
    try:
        first = await make_manager(pk, state_store=state)
        await wait_for(lambda: first.record("keeper").status == AgentStatus.RUNNING)
        await first.stop_agent("resting")
        await first.stop()
    finally:
        await state.close()
    state = await SqlStateStore.open(url)
    try:
        stored = await state.load()
        assert stored["keeper"].desired == "running"
        assert stored["resting"].desired == "stopped"
        second = await make_manager(pk, state_store=state)
        keeper = second.record("keeper")
        await wait_for(lambda: keeper.status == AgentStatus.RUNNING, what="keeper restarted")
        assert keeper.history[0]["reason"] == "adopted"
        assert second.record("resting").status == AgentStatus.STOPPED
        assert second.record("resting").process is None
        history = await state.history("resting")
        assert [e["status"] for e in history][-1] == "stopped"
        await second.stop()
    finally:
        await state.close()


def _manager_cmd(nats_url: str, pk: Path, tmp: Path, db: str) -> list[str]:
    return [
        sys.executable,
        "-c",
        "from netsuke.cli import main; main()",
        "manager",
        "--packages",
        str(pk),
        "--nats-url",
        nats_url,
        "--database-url",
        db,
        "--logs-dir",
        str(tmp / "logs"),
    ]


def _spawn(cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Any]:
    import nats

    client = await nats.connect(nats_url)
    yield client
    await client.drain()


async def _list(nc: Any) -> list[dict[str, Any]]:
    body = json.dumps({"command": "list", "agent_id": None, "params": {}}).encode()
    try:
        msg = await nc.request("agent.manager.query", body, timeout=2)
    except Exception:
        return []
    agents: list[dict[str, Any]] = json.loads(msg.data)["result"]["agents"]
    return agents


async def _wait_running(nc: Any, names: set[str], timeout: float = 40) -> dict[str, int]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        agents = {a["agent_id"]: a for a in await _list(nc)}
        if all(agents.get(n, {}).get("status") == "running" for n in names):
            return {n: agents[n]["pid"] for n in names}
        await asyncio.sleep(0.2)
    raise AssertionError(f"agents {names} not running")


async def test_sigkill_of_the_manager_leaves_no_agent_and_a_new_one_restarts_them(
    nats_url: str, nc: Any, tmp_path: Path
) -> None:
    pk = tmp_path / "packages"
    env = {**os.environ, "NETSUKE_MANAGER_SERVICE__HEARTBEAT_TIMEOUT": "3"}
    write_package(
        pk,
        "parent",
        """
        import subprocess, sys
        from netsuke.manager.sdk import PackageAgent
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        print("child", child.pid, flush=True)
        PackageAgent.from_env().run()
        """,
    )
    write_package(pk, "plain", SDK_AGENT)
    db = f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    cmd = _manager_cmd(nats_url, pk, tmp_path, db)
    mgr = _spawn(cmd, env)
    second: subprocess.Popen[bytes] | None = None
    try:
        pids = await _wait_running(nc, {"parent", "plain"})
        log = tmp_path / "logs" / "parent.log"
        grandchild = int(
            next(ln for ln in log.read_text().splitlines() if "child" in ln).split()[1]
        )
        os.kill(mgr.pid, signal.SIGKILL)
        mgr.wait(10)
        for pid in pids.values():
            await wait_for(lambda pid=pid: not _alive(pid), what=f"agent {pid} gone")
        second = _spawn(cmd, env)
        again = await _wait_running(nc, {"parent", "plain"})
        assert set(again.values()).isdisjoint(pids.values())
        # The agent's own child outlived it; the new manager killed its session.
        await wait_for(lambda: not _alive(grandchild), what="grandchild of the old agent gone")
    finally:
        for proc in (mgr, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    assert second is not None
    assert second.returncode == 0
    for pid in again.values():
        assert not _alive(pid)
