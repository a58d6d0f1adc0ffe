"""Supervision of package agents as OS processes, against a real nats-server."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from netsuke.manager import AgentStatus

from .conftest import FAST_RESTART, SDK_AGENT, ManagerFactory, wait_for, write_package

pytestmark = pytest.mark.timeout(90)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def test_agent_starts_with_seed_environment_and_reaches_running(
    make_manager: ManagerFactory, tmp_path: Path
) -> None:
    pk = tmp_path / "packages"
    write_package(
        pk,
        "envcheck",
        """
        import os, json
        from netsuke.manager.sdk import PackageAgent
        keys = ["AGENT_ID", "NATS_URL", "AGENT_TYPE", "AGENT_NAME", "AGENT_VERSION", "EXTRA"]
        print(json.dumps({k: os.environ.get(k) for k in keys}), flush=True)
        print("pgid", os.getpgid(0) == os.getpid(), flush=True)
        PackageAgent.from_env().run()
        """,
        type="checker",
        version="2.1.0",
        environment={"EXTRA": "yes"},
    )
    manager = await make_manager(pk)
    rec = manager.record("envcheck")
    await wait_for(lambda: rec.status == AgentStatus.RUNNING, what="running")
    assert [e["status"] for e in rec.history][:2] == ["starting", "running"]
    lines = rec.log.tail()
    assert any('"AGENT_TYPE": "checker"' in ln and '"AGENT_VERSION": "2.1.0"' in ln for ln in lines)
    assert any('"EXTRA": "yes"' in ln and manager.nats_url in ln for ln in lines)
    assert "pgid True" in lines


async def test_kill_9_goes_error_then_restarts_with_backoff(
    make_manager: ManagerFactory, tmp_path: Path
) -> None:
    pk = tmp_path / "packages"
    write_package(pk, "victim", SDK_AGENT, restart=FAST_RESTART)
    manager = await make_manager(pk)
    rec = manager.record("victim")
    await wait_for(lambda: rec.status == AgentStatus.RUNNING, what="running")
    assert rec.process is not None
    first = rec.process.pid
    os.kill(first, signal.SIGKILL)
    await wait_for(lambda: rec.status == AgentStatus.ERROR, what="error")
    assert rec.exit_signal == "SIGKILL"
    assert rec.exit_code is None
    await wait_for(
        lambda: rec.status == AgentStatus.RUNNING and rec.process and rec.process.pid != first,
        what="restarted",
    )
    assert rec.restarts == 1
    crashed = [e for e in rec.history if e["status"] == "error"]
    assert crashed[-1]["signal"] == "SIGKILL"


def test_backoff_doubles_up_to_the_ceiling() -> None:
    from netsuke.manager import RestartPolicy

    p = RestartPolicy(backoff_initial=0.5, backoff_max=3)
    assert [p.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


async def test_sigstop_goes_inactive_and_sigcont_back_to_running(
    make_manager: ManagerFactory, tmp_path: Path
) -> None:
    pk = tmp_path / "packages"
    write_package(pk, "sleeper", SDK_AGENT)
    manager = await make_manager(pk, heartbeat_timeout=1.0)
    rec = manager.record("sleeper")
    await wait_for(lambda: rec.status == AgentStatus.RUNNING, what="running")
    assert rec.process is not None
    pid = rec.process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        await wait_for(lambda: rec.status == AgentStatus.INACTIVE, timeout=10, what="inactive")
    finally:
        os.kill(pid, signal.SIGCONT)
    await wait_for(lambda: rec.status == AgentStatus.RUNNING, what="running again")
    assert rec.process is not None
    assert rec.process.pid == pid  # the same process, not a restart
    assert rec.restarts == 0


async def test_crash_loop_ends_failed(make_manager: ManagerFactory, tmp_path: Path) -> None:
    pk = tmp_path / "packages"
    restart = {**FAST_RESTART, "max_restarts": 2, "backoff_initial": 0.05}
    write_package(pk, "crasher", "import sys; sys.exit(7)\n", restart=restart)
    manager = await make_manager(pk)
    rec = manager.record("crasher")
    await wait_for(lambda: rec.status == AgentStatus.FAILED, what="failed")
    assert rec.exit_code == 7
    assert rec.restarts == 2
    assert rec.process is None
    errors = [e for e in rec.history if e["status"] == "error"]
    assert len(errors) == 3
    # An explicit start revives a failed agent.
    snap = await manager.start_agent("crasher")
    assert snap["status"] == "starting"


async def test_clean_exit_is_stopped_under_transient_policy(
    make_manager: ManagerFactory, tmp_path: Path
) -> None:
    pk = tmp_path / "packages"
    write_package(pk, "oneshot", "print('done')\n", restart=FAST_RESTART)
    manager = await make_manager(pk)
    rec = manager.record("oneshot")
    await wait_for(lambda: rec.status == AgentStatus.STOPPED and rec.exit_code == 0, what="stop")
    assert rec.restarts == 0
    assert rec.desired == "stopped"


async def test_stop_sends_sigterm_to_the_group_then_sigkill(
    make_manager: ManagerFactory, tmp_path: Path
) -> None:
    pk = tmp_path / "packages"
    write_package(
        pk,
        "stubborn",
        """
        import signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        print("child", child.pid, flush=True)
        while True:
            time.sleep(1)
        """,
    )
    manager = await make_manager(pk, stop_timeout=0.5)
    rec = manager.record("stubborn")
    await wait_for(lambda: any(ln.startswith("child ") for ln in rec.log.tail()), what="child")
    child = int(next(ln for ln in rec.log.tail() if ln.startswith("child ")).split()[1])
    assert _alive(child)
    snap = await manager.stop_agent("stubborn")
    assert snap["status"] == "stopped"
    assert snap["exit_signal"] == "SIGKILL"
    await wait_for(lambda: not _alive(child), what="grandchild gone")


async def test_logs_rotate_at_the_size_limit(make_manager: ManagerFactory, tmp_path: Path) -> None:
    pk = tmp_path / "packages"
    write_package(
        pk,
        "chatty",
        """
        import sys
        for i in range(400):
            print(f"line {i:04d} " + "x" * 40)
        print("to stderr", file=sys.stderr)
        """,
    )
    manager = await make_manager(pk, log_max_bytes=4096)
    rec = manager.record("chatty")
    await wait_for(lambda: rec.status == AgentStatus.STOPPED and rec.exit_code == 0, what="exit")
    logs = tmp_path / "logs"
    assert (logs / "chatty.log.1").exists()
    assert (logs / "chatty.log").stat().st_size <= 4096
    assert "to stderr" in rec.log.tail(5)


async def test_resource_limits_apply_to_the_process(
    make_manager: ManagerFactory, tmp_path: Path
) -> None:
    pk = tmp_path / "packages"
    write_package(
        pk,
        "limited",
        """
        import resource
        print("nofile", resource.getrlimit(resource.RLIMIT_NOFILE)[0], flush=True)
        print("as", resource.getrlimit(resource.RLIMIT_AS)[0], flush=True)
        """,
        limits={"open_files": 64, "memory_mb": 2048},
    )
    manager = await make_manager(pk)
    rec = manager.record("limited")
    await wait_for(lambda: rec.status == AgentStatus.STOPPED and rec.exit_code == 0, what="exit")
    assert "nofile 64" in rec.log.tail()
    assert f"as {2048 * 1024 * 1024}" in rec.log.tail()


async def test_prometheus_counts_agents_by_state(
    make_manager: ManagerFactory, tmp_path: Path
) -> None:
    from netsuke.observability import render_metrics

    pk = tmp_path / "packages"
    write_package(pk, "counted", SDK_AGENT)
    manager = await make_manager(pk)
    rec = manager.record("counted")
    await wait_for(lambda: rec.status == AgentStatus.RUNNING, what="running")
    text = render_metrics().decode()
    assert 'netsuke_manager_agents{state="running"} 1.0' in text
    assert 'netsuke_manager_restarts_total{agent_id="counted"} 0.0' in text


async def test_a_process_that_never_heartbeats_goes_inactive_and_stale_pids_are_ignored(
    make_manager: ManagerFactory, nats_url: str, tmp_path: Path
) -> None:
    import json

    import nats

    pk = tmp_path / "packages"
    write_package(pk, "mute", "import time\ntime.sleep(300)\n")
    manager = await make_manager(pk, heartbeat_timeout=1.0)
    rec = manager.record("mute")
    assert rec.status == AgentStatus.STARTING
    await wait_for(lambda: rec.status == AgentStatus.INACTIVE, what="inactive without heartbeat")
    nc = await nats.connect(nats_url)
    try:
        stale = {"agent_id": "mute", "status": "running", "pid": 1, "metadata": {}}
        await nc.publish("agent.status", json.dumps(stale).encode())
        await nc.publish("agent.status", b"not json")
        await nc.flush()
        assert rec.process is not None
        fresh = {"agent_id": "mute", "status": "running", "pid": rec.process.pid}
        await nc.publish("agent.status", json.dumps(fresh).encode())
        await nc.flush()
        await wait_for(lambda: rec.status == AgentStatus.RUNNING, what="running on a real beat")
        assert rec.heartbeats == 1  # the stale pid and the garbage were not counted
    finally:
        await nc.drain()
