"""The REST endpoints for package agents, end to end: HTTP -> API -> NATS -> manager -> process."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from netsuke.api import Settings, create_app, open_node
from netsuke.manager import AgentStatus, ManagerClient

from ..api.conftest import Live
from .conftest import SDK_AGENT, ManagerFactory, wait_for, write_package

pytestmark = pytest.mark.timeout(120)


@contextlib.asynccontextmanager
async def api_with_manager(tmp_path: Path, nats_url: str | None) -> AsyncIterator[Live]:
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'api.db'}", port=0, rate_limit_per_minute=0
    )
    async with open_node(settings) as node:
        admin = node.bootstrap_secret or (await node.store.api_keys.create("a", "admin")).secret
        extras = dict(node.extras)
        client = ManagerClient(nats_url, timeout=20) if nats_url else None
        if client is not None:
            extras["manager"] = client
        app = create_app(settings, store=node.store, runtime=node.runtime, extras=extras)
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, access_log=False)
        server = uvicorn.Server(config)
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        task = asyncio.create_task(server.serve())
        while not server.started:
            assert not task.done()
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        live = Live(f"http://127.0.0.1:{port}", admin, node)
        try:
            yield live
        finally:
            for c in live.clients:
                await c.aclose()
            if client is not None:
                await client.close()
            server.should_exit = True
            await task


async def test_rest_endpoints_control_package_agents_through_the_manager(
    make_manager: ManagerFactory, nats_url: str, tmp_path: Path
) -> None:
    pk = tmp_path / "packages"
    write_package(pk, "web", SDK_AGENT + "\nprint('hello from web', flush=True)\n")
    write_package(
        pk, "talker", "import time\nprint('hello from web', flush=True)\ntime.sleep(300)\n"
    )
    manager = await make_manager(pk)
    rec = manager.record("web")
    await wait_for(lambda: rec.status == AgentStatus.RUNNING, what="running")
    async with api_with_manager(tmp_path, nats_url) as live:
        user = live.client(await live.key("user"))
        admin = live.admin
        listing = await user.get("/api/v1/manager/agents")
        assert listing.status_code == 200
        assert {a["agent_id"] for a in listing.json()["agents"]} == {"web", "talker"}
        status = await user.get("/api/v1/manager/agents/web/status")
        assert status.json()["status"] == "running"
        forbidden = await user.post("/api/v1/manager/agents/web/stop")
        assert forbidden.status_code == 403
        assert rec.process is not None

        stopped = await admin.post("/api/v1/manager/agents/web/stop")
        assert stopped.status_code == 200
        assert stopped.json()["status"] == "stopped"
        assert rec.process is None
        started = await admin.post("/api/v1/manager/agents/web/start")
        assert started.json()["status"] == "starting"
        await wait_for(lambda: rec.status == AgentStatus.RUNNING, what="running again")
        headers = {"Idempotency-Key": "r-1"}
        one = await admin.post("/api/v1/manager/agents/web/restart", headers=headers)
        two = await admin.post("/api/v1/manager/agents/web/restart", headers=headers)
        assert one.json() == two.json()
        assert rec.restarts == 1

        metrics = await admin.get("/api/v1/manager/agents/web/metrics")
        assert metrics.status_code == 200
        assert set(metrics.json()) >= {"agent", "process", "restarts", "progress"}
        history = await admin.get("/api/v1/manager/agents/web/history")
        assert "stopped" in [e["status"] for e in history.json()["events"]]
        logs = await admin.get("/api/v1/manager/agents/talker/logs", params={"lines": 10})
        assert logs.json()["lines"] == ["hello from web"]

        missing = await admin.get("/api/v1/manager/agents/ghost/status")
        assert missing.status_code == 404
        assert missing.headers["content-type"].startswith("application/problem+json")
        bad = await admin.get("/api/v1/manager/agents/web/logs", params={"lines": 0})
        assert bad.status_code == 422


async def test_logs_follow_streams_new_lines(
    make_manager: ManagerFactory, nats_url: str, tmp_path: Path
) -> None:
    pk = tmp_path / "packages"
    write_package(
        pk,
        "ticker",
        "import time\nfor i in range(300):\n    print(f'tick {i}', flush=True)\n"
        "    time.sleep(0.2)\n",
    )
    await make_manager(pk)
    async with api_with_manager(tmp_path, nats_url) as live:
        seen: list[str] = []
        url = "/api/v1/manager/agents/ticker/logs"
        params = {"follow": "true", "interval": "0.2", "lines": "1"}
        async with live.admin.stream("GET", url, params=params, timeout=30) as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            async for line in resp.aiter_lines():
                if line.startswith("data: "):
                    seen.append(line)
                if len(seen) >= 4:
                    break
        numbers = [int(s.split("tick ")[1].rstrip('"')) for s in seen]
        assert numbers == list(range(numbers[0], numbers[0] + 4))  # no gap, no repeat


async def test_without_a_manager_the_routes_answer_404(tmp_path: Path) -> None:
    async with api_with_manager(tmp_path, None) as live:
        resp = await live.admin.get("/api/v1/manager/agents")
        assert resp.status_code == 404
        assert "NETSUKE_MANAGER_NATS_URL" in resp.json()["detail"]


async def test_an_unreachable_manager_is_503(nats_url: str, tmp_path: Path) -> None:
    async with api_with_manager(tmp_path, nats_url) as live:
        live_client = live.admin
        resp = await live_client.get("/api/v1/manager/agents")
        assert resp.status_code == 503
        assert isinstance(resp.json()["detail"], str)
        assert resp.status_code == httpx.codes.SERVICE_UNAVAILABLE
