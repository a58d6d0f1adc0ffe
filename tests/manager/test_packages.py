"""Package manifests, discovery (skips, bad manifests, hot add/change/remove) and settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from netsuke.manager import (
    AgentDiscovery,
    AgentStatus,
    ConfigError,
    ManifestError,
    load_config,
    load_manifest,
)

from .conftest import SDK_AGENT, ManagerFactory, wait_for, write_package

pytestmark = pytest.mark.timeout(90)


async def test_discovery_skips_pycache_template_and_test_folders(tmp_path: Path) -> None:
    for name in ("__pycache__", "_template", "test_agent", "tests", "good"):
        write_package(tmp_path, name, "pass\n")
    (tmp_path / "not-a-package").mkdir()
    (tmp_path / "loose.txt").write_text("x")
    found = await AgentDiscovery(tmp_path).discover_agents()
    assert [m.name for m in found] == ["good"]


@pytest.mark.parametrize(
    ("manifest", "field"),
    [
        ({"entry_point": "missing.py"}, "entry_point"),
        ({"name": "Bad Name"}, "name"),
        ({"restart": {"policy": "sometimes"}}, "restart.policy"),
        ({"restart": {"max_restarts": -1}}, "restart.max_restarts"),
        ({"limits": {"memory_mb": 0}}, "limits.memory_mb"),
        ({"surprise": 1}, "surprise"),
        ({"entry_point": "../agent.py"}, "entry_point"),
    ],
)
def test_bad_manifest_names_file_and_field(
    tmp_path: Path, manifest: dict[str, object], field: str
) -> None:
    folder = write_package(tmp_path, "pkg", "pass\n", **manifest)
    with pytest.raises(ManifestError) as info:
        load_manifest(folder)
    assert info.value.field == field
    assert info.value.path == folder / "agent.yaml"


def test_unparseable_manifest_is_a_manifest_error(tmp_path: Path) -> None:
    folder = tmp_path / "pkg"
    folder.mkdir()
    (folder / "agent.yaml").write_text("name: [unclosed\n")
    with pytest.raises(ManifestError, match="invalid YAML"):
        load_manifest(folder)


async def test_bad_manifest_is_skipped_and_the_rest_runs(
    make_manager: ManagerFactory, tmp_path: Path
) -> None:
    pk = tmp_path / "packages"
    write_package(pk, "good", SDK_AGENT)
    write_package(pk, "broken", "pass\n", restart={"policy": "sometimes"})
    manager = await make_manager(pk)
    rec = manager.record("good")
    await wait_for(lambda: rec.status == AgentStatus.RUNNING, what="running")
    assert "broken" not in manager.registry
    [error] = manager.discovery.errors.values()
    assert error.field == "restart.policy"
    assert error.path == pk / "broken" / "agent.yaml"


async def test_hot_add_change_and_remove(make_manager: ManagerFactory, tmp_path: Path) -> None:
    pk = tmp_path / "packages"
    pk.mkdir()
    manager = await make_manager(pk)
    assert len(manager.registry) == 0
    write_package(pk, "late", SDK_AGENT)
    await wait_for(lambda: "late" in manager.registry, what="hot add")
    rec = manager.record("late")
    await wait_for(lambda: rec.status == AgentStatus.RUNNING, what="running")
    assert rec.process is not None
    pid = rec.process.pid
    write_package(pk, "late", SDK_AGENT + "\n# v2\n", version="2.0.0")
    await wait_for(
        lambda: rec.manifest.version == "2.0.0" and rec.process and rec.process.pid != pid,
        what="restart on change",
    )
    await wait_for(lambda: rec.status == AgentStatus.RUNNING, what="running v2")
    proc = rec.process
    assert proc is not None
    for f in (pk / "late").iterdir():
        f.unlink()
    (pk / "late").rmdir()
    await wait_for(lambda: "late" not in manager.registry, what="hot remove")
    assert proc.proc.returncode is not None


async def test_manifest_autostart_false_waits_for_a_start(
    make_manager: ManagerFactory, tmp_path: Path
) -> None:
    pk = tmp_path / "packages"
    write_package(pk, "lazy", SDK_AGENT, autostart=False)
    manager = await make_manager(pk)
    rec = manager.record("lazy")
    assert rec.status == AgentStatus.STOPPED
    assert rec.process is None
    await manager.start_agent("lazy")
    await wait_for(lambda: rec.status == AgentStatus.RUNNING, what="running")


def test_config_reads_yaml_then_environment(tmp_path: Path) -> None:
    path = tmp_path / "agent_manager.yaml"
    path.write_text(
        "service:\n  name: opmas-agent-manager\n  discovery_interval: 300\n"
        "  monitoring_interval: 10\n  cleanup_interval: 3600\n"
        "database:\n  url: sqlite+aiosqlite:///x.db\n  pool_size: 5\n  max_overflow: 10\n"
        "nats:\n  url: nats://localhost:4222\n  user: opmas\n  password: pw\n  tls_verify: false\n"
    )
    cfg = load_config(path, environ={"NETSUKE_MANAGER_SERVICE__DISCOVERY_INTERVAL": "5"})
    assert cfg.service.name == "opmas-agent-manager"
    assert cfg.service.discovery_interval == 5
    assert cfg.nats.user == "opmas"
    assert "pw" not in repr(cfg)


@pytest.mark.parametrize(
    ("environ", "field"),
    [
        ({"NETSUKE_MANAGER_SERVICE__DISCOVERY_INTERVAL": "-1"}, "service.discovery_interval"),
        ({"NETSUKE_MANAGER_SERVICE__HEARTBEAT_TIMEOUT": "soon"}, "service.heartbeat_timeout"),
        ({"NETSUKE_MANAGER_NATS__TYPO": "x"}, "nats.typo"),
        ({"NETSUKE_MANAGER_DATABASE__POOL_SIZE": "0"}, "database.pool_size"),
        ({"NETSUKE_MANAGER_OOPS": "1"}, "NETSUKE_MANAGER_OOPS"),
    ],
)
def test_bad_setting_fails_at_start_naming_the_field(environ: dict[str, str], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(environ=environ)
    assert info.value.field == field
