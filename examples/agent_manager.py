"""Seed 003, in Netsuke: the AgentManager runs agent packages as OS processes over NATS.

A throwaway nats-server, the manager on ``examples/packages`` (``echo``: an SDK agent;
``greeter``: a Netsuke agent defined as data), then the seed's commands as raw NATS messages:
status, a command to the agent itself, restart, and the agent's progress in its heartbeats.

    python examples/agent_manager.py
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

import nats

from netsuke.manager import AgentManager, AgentStatus, load_config
from netsuke.manager.testing import NatsServer
from netsuke.observability import configure_logging

PACKAGES = Path(__file__).parent / "packages"


async def ask(nc: Any, subject: str, command: str, agent_id: str, **params: Any) -> Any:
    body = {"command": command, "agent_id": agent_id, "params": params, "timestamp": None}
    reply = await nc.request(subject, json.dumps(body).encode(), timeout=30)
    return json.loads(reply.data)


async def until_running(manager: AgentManager, agent_id: str) -> None:
    rec = manager.record(agent_id)
    while rec.status != AgentStatus.RUNNING:  # noqa: ASYNC110 (a poll keeps the example short)
        await asyncio.sleep(0.05)


async def main() -> None:
    configure_logging("warning")
    with tempfile.TemporaryDirectory() as tmp, NatsServer() as url:
        config = load_config(
            overrides={
                "nats": {"url": url},
                "packages": {"dir": PACKAGES, "logs_dir": Path(tmp) / "logs"},
                "service": {"heartbeat_timeout": 3},
            }
        )
        async with AgentManager(config) as manager:
            nc = await nats.connect(url)
            await until_running(manager, "echo")
            status = await ask(nc, "agent.manager.command", "status", "echo")
            print("status:", status["result"]["status"], "pid", status["result"]["pid"])
            echoed = await ask(nc, "agent.echo.command", "echo", "echo", text="hello")
            print("echo:", echoed["result"])
            restarted = await ask(nc, "agent.manager.command", "restart", "echo")
            print("restarted:", restarted["status"], "new pid", restarted["result"]["pid"])
            greeter = manager.record("greeter")
            while greeter.progress.get("hosted") != "greeter":  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            chat = await ask(nc, "agent.greeter.command", "chat", "greeter", message="Hi!")
            print("greeter:", chat["result"]["reply"])
            await nc.drain()


if __name__ == "__main__":
    asyncio.run(main())
