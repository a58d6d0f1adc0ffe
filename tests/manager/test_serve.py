"""``NETSUKE_MANAGER_IN_SERVE=1 netsuke serve`` runs the AgentManager in-process, and its API
controls the package agents through NATS."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from ..cli.conftest import start_server, stop_server
from .conftest import SDK_AGENT, write_package
from .test_supervision import _alive

pytestmark = pytest.mark.timeout(120)


def test_serve_runs_the_manager_in_process(
    nats_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pk = tmp_path / "packages"
    write_package(pk, "served", SDK_AGENT)
    monkeypatch.setenv("NETSUKE_MANAGER_IN_SERVE", "1")
    monkeypatch.setenv("NETSUKE_MANAGER_NATS__URL", nats_url)
    monkeypatch.setenv("NETSUKE_MANAGER_PACKAGES__DIR", str(pk))
    monkeypatch.setenv("NETSUKE_MANAGER_PACKAGES__LOGS_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("NETSUKE_MANAGER_SERVICE__HEARTBEAT_TIMEOUT", "3")
    server = start_server(tmp_path)
    try:
        headers = {"Authorization": f"Bearer {server.key}"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=20) as client:
            deadline = time.monotonic() + 60
            status = None
            while time.monotonic() < deadline:
                status = client.get("/api/v1/manager/agents/served/status").json()
                if status.get("status") == "running":
                    break
                time.sleep(0.2)
            assert status is not None
            assert status["status"] == "running", status
            started = client.post("/api/v1/manager/agents/served/restart").json()
            pid = started["pid"]
            stopped = client.post("/api/v1/manager/agents/served/stop")
            assert stopped.json()["status"] == "stopped"
            history = client.get("/api/v1/manager/agents/served/history").json()
            assert [e["status"] for e in history["events"]][-1] == "stopped"
            client.post("/api/v1/manager/agents/served/start")
    finally:
        stop_server(server)
    # uvicorn re-raises the SIGTERM it handled; the manager stopped its agents before that.
    assert server.proc.returncode in (0, -15)
    assert not _alive(pid)
