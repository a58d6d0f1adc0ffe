"""Seed 003's management API, in Netsuke: a node on a free port, then over HTTP with the
bootstrap admin key: register an agent, start it, chat with a session (JSON and streamed),
read its status, metrics and logs, and stop it.

    python examples/management_api.py
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path

import httpx
import uvicorn

from netsuke.api import create_app, load_settings, open_node
from netsuke.observability import configure_logging


async def main() -> None:
    configure_logging("warning")
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(port=0, database_url=f"sqlite:///{Path(tmp) / 'ops.db'}")
        async with open_node(settings) as node:
            app = create_app(settings, store=node.store, runtime=node.runtime, extras=node.extras)
            server = uvicorn.Server(
                uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, log_level="warning")
            )
            serving = asyncio.create_task(server.serve())
            while not server.started:  # noqa: ASYNC110 (uvicorn offers no event)
                await asyncio.sleep(0.01)
            port = server.servers[0].sockets[0].getsockname()[1]
            headers = {"Authorization": f"Bearer {node.bootstrap_secret}"}
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}/api/v1", headers=headers, timeout=30
            ) as api:
                # POST /api/v1/agents: register new agent
                r = await api.post(
                    "/agents",
                    json={
                        "name": "network-monitor",
                        "description": "Watches the network",
                        "model": "offline",
                        "system_prompt": "You watch routers and report anomalies.",
                        "capabilities": ["monitoring"],
                    },
                )
                print("registered:", r.json()["name"], "version", r.json()["version"])

                # POST /api/v1/agents/{agent_id}/start
                r = await api.post("/agents/network-monitor/start")
                print("start:", r.status_code, r.json()["status"]["state"])

                # chat: a session of user "noc" with the agent, then one reply streamed (SSE)
                r = await api.post("/sessions", json={"agent": "network-monitor", "user": "noc"})
                sid = r.json()["session_id"]
                r = await api.post(f"/sessions/{sid}/messages", json={"message": "Status of r1?"})
                print("reply:", r.json()["output"])
                async with api.stream(
                    "POST",
                    f"/sessions/{sid}/messages",
                    json={"message": "And r2?"},
                    headers={"Accept": "text/event-stream"},
                ) as stream:
                    events = [
                        line[7:] async for line in stream.aiter_lines() if line.startswith("event:")
                    ]
                print("streamed:", events.count("delta"), "deltas, then", events[-1])

                # GET /api/v1/agents/{agent_id}/status|metrics|logs
                await asyncio.sleep(0.05)  # the monitor reads the event bus in its own task
                status = (await api.get("/agents/network-monitor/status")).json()
                print("status:", status["state"], "sessions:", status["sessions"])
                metrics = (await api.get("/agents/network-monitor/metrics")).json()
                print(
                    "metrics:",
                    json.dumps({k: metrics[k] for k in ("turns", "turns_failed", "tokens_out")}),
                    "p50 ms:",
                    metrics["latency_ms"]["p50"],
                )
                for line in (await api.get("/agents/network-monitor/logs?limit=4")).json()["items"]:
                    print("log:", line["topic"], line["session"], line.get("status", ""))

                # POST /api/v1/agents/{agent_id}/stop: the instance and its sessions
                r = await api.post("/agents/network-monitor/stop")
                print("stop:", r.json()["stopped"], "processes, now", r.json()["status"]["state"])
            server.should_exit = True
            await serving


if __name__ == "__main__":
    asyncio.run(main())
