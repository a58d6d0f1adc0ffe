"""``service.cleanup_interval`` (seed 003): what removed packages left behind is forgotten."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from netsuke.manager import AgentStatus, MemoryStateStore, SqlStateStore, StoredAgent

from .conftest import SDK_AGENT, ManagerFactory, wait_for, write_package

pytestmark = pytest.mark.timeout(90)

HOUR = 3600.0


def _stored(agent_id: str, age: float) -> StoredAgent:
    at = datetime.now(UTC) - timedelta(seconds=age)
    return StoredAgent(agent_id, "stopped", "running", None, 0, 0, None, at.isoformat())


def _log(logs: Path, name: str, age: float) -> Path:
    logs.mkdir(parents=True, exist_ok=True)
    path = logs / name
    path.write_text("line\n")
    then = time.time() - age
    os.utime(path, (then, then))
    return path


async def test_cleanup_forgets_only_what_gone_packages_left_an_interval_ago(
    make_manager: ManagerFactory, tmp_path: Path
) -> None:
    pk, logs = tmp_path / "packages", tmp_path / "logs"
    write_package(pk, "kept", SDK_AGENT, autostart=False)
    state = MemoryStateStore()
    for agent_id, age in (("gone", 2 * HOUR), ("just-gone", 60.0)):
        await state.save(_stored(agent_id, age), {"status": "stopped"})
    old = [_log(logs, name, 2 * HOUR) for name in ("gone.log", "gone.log.1", "gone.log.2")]
    recent = _log(logs, "just-gone.log", 60.0)
    kept_log = _log(logs, "kept.log.1", 2 * HOUR)  # a package that still exists: never touched
    other = _log(logs, "notes.txt", 2 * HOUR)  # not a captured log

    manager = await make_manager(pk, state_store=state, cleanup_interval=HOUR)
    assert manager.record("kept").status == AgentStatus.STOPPED
    await manager.flush()  # the state of "kept" is written
    done = await manager.cleanup()

    assert done == {"forgotten": ["gone"], "deleted_logs": ["gone.log", "gone.log.1", "gone.log.2"]}
    assert set(state.agents) == {"just-gone", "kept"}
    assert not any(p.exists() for p in old)
    assert recent.exists() and kept_log.exists() and other.exists()
    assert await manager.cleanup() == {"forgotten": [], "deleted_logs": []}


async def test_cleanup_runs_every_cleanup_interval(
    make_manager: ManagerFactory, tmp_path: Path
) -> None:
    state = MemoryStateStore()
    await state.save(_stored("gone", HOUR), {"status": "stopped"})
    stale = _log(tmp_path / "logs", "gone.log", HOUR)
    await make_manager(tmp_path / "packages", state_store=state, cleanup_interval=0.2)
    await wait_for(lambda: "gone" not in state.agents and not stale.exists(), what="cleanup")


async def test_cleanup_reads_the_sql_store_and_a_removed_package_is_not_readopted(
    make_manager: ManagerFactory, tmp_path: Path, migrated_url: str
) -> None:
    pk = tmp_path / "packages"
    pk.mkdir()
    state = await SqlStateStore.open(migrated_url)
    try:
        await state.save(_stored("gone", 2 * HOUR), {"status": "stopped"})
        await state.save(_stored("fresh", 0.0), {"status": "stopped"})
        manager = await make_manager(pk, state_store=state, cleanup_interval=HOUR)
        assert (await manager.cleanup())["forgotten"] == ["gone"]
        assert set(await state.load()) == {"fresh"}
        # The row is gone, so a package of that name added later starts from its manifest
        # (autostart false), not from the forgotten row's desired state ("running").
        write_package(pk, "gone", SDK_AGENT, autostart=False)
        await manager.sync_packages()
        assert manager.record("gone").status == AgentStatus.STOPPED
        assert manager.record("gone").process is None
        await manager.stop()
    finally:
        await state.close()
