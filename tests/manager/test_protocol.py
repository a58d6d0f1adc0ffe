"""The seed's NATS interface, exercised with raw NATS messages."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from netsuke.manager import AgentStatus

from .conftest import EXAMPLES, SDK_AGENT, ManagerFactory, wait_for, write_package

pytestmark = pytest.mark.timeout(90)

RESPONSE_KEYS = {"status", "command", "agent_id", "result", "error", "timestamp"}


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Any]:
    import nats

    client = await nats.connect(nats_url)
    yield client
    await client.drain()


async def ask(nc: Any, subject: str, body: Any, timeout: float = 15.0) -> dict[str, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    msg = await nc.request(subject, data, timeout=timeout)
    reply: dict[str, Any] = json.loads(msg.data)
    assert set(reply) - {"id"} == RESPONSE_KEYS
    return reply


def cmd(name: str, agent_id: str | None = None, **params: Any) -> dict[str, Any]:
    return {
        "command": name,
        "agent_id": agent_id,
        "params": params,
        "timestamp": datetime.now(UTC).isoformat(),
    }


async def test_every_seed_command_and_query_over_raw_nats(
    make_manager: ManagerFactory, nc: Any, tmp_path: Path
) -> None:
    pk = tmp_path / "packages"
    shutil.copytree(EXAMPLES / "echo", pk / "echo")
    seen: list[dict[str, Any]] = []

    async def on_response(msg: Any) -> None:
        seen.append(json.loads(msg.data))

    await nc.subscribe("agent.manager.response", cb=on_response)
    manager = await make_manager(pk)
    rec = manager.record("echo")
    await wait_for(lambda: rec.status == AgentStatus.RUNNING, what="running")

    status = await ask(nc, "agent.manager.command", cmd("status", "echo"))
    assert status["status"] == "success"
    assert status["error"] is None
    assert status["result"]["status"] == "running"

    # The agent answers on its own subjects; work shows as progress in the next heartbeats.
    echoed = await ask(nc, "agent.echo.command", cmd("echo", "echo", text="hi"))
    assert echoed["result"] == {"echo": {"text": "hi"}}
    counted = await ask(nc, "agent.echo.query", cmd("count", "echo"))
    assert counted["result"] == {"processed": 1}
    await wait_for(lambda: rec.progress.get("processed") == 1, what="progress in heartbeat")

    sent = await ask(
        nc, "agent.manager.command", cmd("send", "echo", command="echo", params={"n": 2})
    )
    assert sent["result"]["result"] == {"echo": {"n": 2}}

    stopped = await ask(nc, "agent.manager.command", cmd("stop", "echo"))
    assert stopped["result"]["status"] == "stopped"
    assert rec.process is None
    assert (rec.exit_code, rec.exit_signal) == (0, None)  # the SDK exited cleanly on SIGTERM
    started = await ask(nc, "agent.manager.command", cmd("start", "echo"))
    assert started["result"]["status"] == "starting"
    await wait_for(lambda: rec.status == AgentStatus.RUNNING, what="running after start")
    pid = rec.process.pid if rec.process else None
    restarted = await ask(nc, "agent.manager.command", cmd("restart", "echo"))
    assert restarted["result"]["pid"] not in (None, pid)
    await wait_for(lambda: rec.status == AgentStatus.RUNNING, what="running after restart")

    metrics = await ask(nc, "agent.manager.query", cmd("metrics", "echo"))
    await wait_for(lambda: "commands" in rec.metrics, what="agent metrics")
    assert "process" in metrics["result"]
    listing = await ask(nc, "agent.manager.query", cmd("list"))
    assert [a["agent_id"] for a in listing["result"]["agents"]] == ["echo"]
    health = await ask(nc, "agent.manager.query", cmd("health"))
    assert health["result"]["status"] == "healthy"
    logs = await ask(nc, "agent.manager.query", cmd("logs", "echo", lines=5))
    assert isinstance(logs["result"]["lines"], list)
    history = await ask(nc, "agent.manager.query", cmd("history", "echo"))
    assert "stopped" in [e["status"] for e in history["result"]["events"]]
    expected = {"status", "send", "stop", "start", "restart", "metrics", "list", "health"}
    expected |= {"logs", "history"}
    await wait_for(
        lambda: {r["command"] for r in seen} == expected, what="responses on agent.manager.response"
    )


async def test_malformed_and_unknown_commands_get_errors_and_the_manager_lives(
    make_manager: ManagerFactory, nc: Any, tmp_path: Path
) -> None:
    manager = await make_manager(tmp_path / "empty")
    bad_json = await ask(nc, "agent.manager.command", b"{not json")
    assert bad_json["status"] == "error"
    assert bad_json["error"]["code"] == "malformed"
    not_object = await ask(nc, "agent.manager.command", [1, 2])
    assert not_object["error"]["code"] == "malformed"
    no_command = await ask(nc, "agent.manager.command", {"agent_id": "x"})
    assert "command" in no_command["error"]["message"]
    bad_params = await ask(nc, "agent.manager.command", {"command": "start", "params": 3})
    assert bad_params["error"]["message"].startswith("params")
    unknown = await ask(nc, "agent.manager.command", cmd("explode", "x"))
    assert unknown["error"]["code"] == "unknown_command"
    missing = await ask(nc, "agent.manager.command", cmd("start", "nobody"))
    assert missing["error"]["code"] == "unknown_agent"
    mutating_query = await ask(nc, "agent.manager.query", cmd("stop", "nobody"))
    assert mutating_query["error"]["code"] == "unknown_command"
    assert manager._running
    health = await ask(nc, "agent.manager.query", cmd("health"))
    assert health["status"] == "success"


async def test_a_repeated_command_id_runs_once(
    make_manager: ManagerFactory, nc: Any, tmp_path: Path
) -> None:
    pk = tmp_path / "packages"
    write_package(pk, "idem", SDK_AGENT)
    manager = await make_manager(pk)
    rec = manager.record("idem")
    await wait_for(lambda: rec.status == AgentStatus.RUNNING, what="running")
    body = {**cmd("restart", "idem"), "id": "op-1"}
    first, second = await asyncio.gather(
        ask(nc, "agent.manager.command", body), ask(nc, "agent.manager.command", body)
    )
    third = await ask(nc, "agent.manager.command", body)
    assert first == second == third
    assert first["id"] == "op-1"
    assert rec.restarts == 1


async def test_agent_answers_unknown_and_failing_commands_with_errors(
    make_manager: ManagerFactory, nc: Any, tmp_path: Path
) -> None:
    pk = tmp_path / "packages"
    write_package(
        pk,
        "fragile",
        """
        from netsuke.manager.sdk import PackageAgent
        agent = PackageAgent.from_env()

        @agent.command("boom")
        async def boom(params):
            raise RuntimeError("kaput")

        agent.run()
        """,
    )
    manager = await make_manager(pk)
    rec = manager.record("fragile")
    await wait_for(lambda: rec.status == AgentStatus.RUNNING, what="running")
    boom = await ask(nc, "agent.fragile.command", cmd("boom", "fragile"))
    assert boom["status"] == "error"
    assert "kaput" in boom["error"]["message"]
    unknown = await ask(nc, "agent.fragile.query", cmd("nope", "fragile"))
    assert unknown["error"]["code"] == "unknown_command"
    pong = await ask(nc, "agent.fragile.command", cmd("ping", "fragile"))
    assert pong["result"] == {"pong": True}
    # The built-in stop command ends the agent gracefully (exit 0 -> stopped, transient).
    await ask(nc, "agent.fragile.command", cmd("stop", "fragile"))
    await wait_for(lambda: rec.status == AgentStatus.STOPPED, what="stopped")
    assert rec.exit_code == 0


async def test_state_changes_are_published_on_agent_status(
    make_manager: ManagerFactory, nc: Any, tmp_path: Path
) -> None:
    seen: list[dict[str, Any]] = []

    async def on_status(msg: Any) -> None:
        body = json.loads(msg.data)
        if body.get("source") == "manager":
            seen.append(body)

    await nc.subscribe("agent.status", cb=on_status)
    await nc.flush()
    pk = tmp_path / "packages"
    write_package(pk, "watched", SDK_AGENT)
    await make_manager(pk)
    await wait_for(lambda: [s["status"] for s in seen][:2] == ["starting", "running"])
    assert seen[0]["agent_id"] == "watched"


async def test_hosted_netsuke_agent_answers_chat(
    make_manager: ManagerFactory, nc: Any, tmp_path: Path
) -> None:
    pk = tmp_path / "packages"
    shutil.copytree(EXAMPLES / "greeter", pk / "greeter")
    manager = await make_manager(pk, heartbeat_timeout=10)
    rec = manager.record("greeter")
    await wait_for(lambda: rec.progress.get("hosted") == "greeter", timeout=60, what="hosted")
    reply = await ask(nc, "agent.greeter.command", cmd("chat", "greeter", message="hello"))
    assert reply["status"] == "success", reply
    assert reply["result"]["agent"] == "greeter"
    assert reply["result"]["reply"]
    await wait_for(lambda: rec.progress.get("turns") == 1, timeout=30, what="turn progress")
