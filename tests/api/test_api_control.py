"""Seed 003's agent control and monitoring: start/stop/restart, status, metrics, logs."""

from __future__ import annotations

import asyncio

from .conftest import Live


async def test_start_chat_status_metrics_logs_stop(live: Live) -> None:
    admin = live.admin
    r = await admin.post("/api/v1/agents", json={"name": "greeter", "system_prompt": "Hi"})
    assert r.status_code == 201
    status = (await admin.get("/api/v1/agents/greeter/status")).json()
    assert status["state"] == "stopped" and status["instance"] is None

    r = await admin.post("/api/v1/agents/greeter/start")
    assert r.status_code == 201, r.text
    assert r.json()["status"]["state"] == "running"
    assert (await admin.post("/api/v1/agents/greeter/start")).status_code == 200  # idempotent
    assert live.node.agents is not None and live.node.agents.whereis("greeter") is not None

    await admin.post("/api/v1/sessions", json={"agent": "greeter", "user": "ann"})
    for message in ("one", "two", "three"):
        r = await admin.post("/api/v1/sessions/greeter-ann/messages", json={"message": message})
        assert r.status_code == 200
    await asyncio.sleep(0.05)

    status = (await admin.get("/api/v1/agents/greeter/status")).json()
    assert status["sessions"] == 1 and status["version"] == 1
    assert status["instance"]["state"] in ("idle", "hibernated")
    metrics = (await admin.get("/api/v1/agents/greeter/metrics")).json()
    assert metrics["turns"] == 3 and metrics["turns_ok"] == 3 and metrics["turns_failed"] == 0
    assert metrics["tokens_out"] > 0 and metrics["latency_ms"]["p50"] > 0
    assert metrics["latency_ms"]["p99"] >= metrics["latency_ms"]["p50"]
    assert metrics["starts"] == 2 and metrics["sessions"] == 1
    logs = (await admin.get("/api/v1/agents/greeter/logs?limit=5")).json()
    assert len(logs["items"]) == 5
    assert logs["items"][-1]["topic"] == "turn.finished"
    assert logs["items"][-1]["status"] == "succeeded"
    assert all("three" not in str(line) for line in logs["items"])  # prompts never logged

    r = await admin.post("/api/v1/agents/greeter/restart")
    assert r.status_code == 200 and r.json()["stopped"] == 2
    assert r.json()["status"]["sessions"] == 0 and r.json()["status"]["instance"] is not None
    r = await admin.post("/api/v1/agents/greeter/stop")
    assert r.json()["stopped"] == 1 and r.json()["status"]["state"] == "stopped"
    await asyncio.sleep(0.05)
    topics = [
        line["topic"] for line in (await admin.get("/api/v1/agents/greeter/logs")).json()["items"]
    ]
    assert topics.count("agent.stopped") == 3 and topics.count("agent.started") == 3


async def test_roles_and_unknown_agents(live: Live) -> None:
    await live.admin.post("/api/v1/agents", json={"name": "greeter"})
    user = live.client(await live.key("user", "uma"))
    operator = live.client(await live.key("operator", "oz"))
    for action in ("start", "stop", "restart"):
        assert (await user.post(f"/api/v1/agents/greeter/{action}")).status_code == 403
    assert (await user.get("/api/v1/agents/greeter/status")).status_code == 200
    assert (await user.get("/api/v1/agents/greeter/metrics")).status_code == 403
    assert (await user.get("/api/v1/agents/greeter/logs")).status_code == 403
    assert (await operator.post("/api/v1/agents/greeter/start")).status_code == 201
    assert (await operator.get("/api/v1/agents/greeter/logs")).status_code == 200
    for path in ("start", "stop", "restart"):
        r = await operator.post(f"/api/v1/agents/ghost/{path}")
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    for path in ("status", "metrics", "logs"):
        assert (await operator.get(f"/api/v1/agents/ghost/{path}")).status_code == 404
    assert (await operator.get("/api/v1/agents/greeter/logs?limit=0")).status_code == 422


async def _turn_version(live: Live, session: str, message: str) -> int:
    r = await live.admin.post(f"/api/v1/sessions/{session}/messages", json={"message": message})
    assert r.status_code == 200, r.text
    execution = await live.node.store.executions.get(r.json()["execution_id"])
    return int(execution.details["version"])


async def test_definition_changes_take_effect_and_status_tells_the_truth(live: Live) -> None:
    """PUT and rollback store version N+1: running sessions run it from their next turn,
    sessions started after ``stop`` run it, and status says what runs."""
    admin = live.admin
    await admin.post("/api/v1/agents", json={"name": "greeter", "system_prompt": "PROMPT-A"})
    await admin.post("/api/v1/sessions", json={"agent": "greeter", "user": "ann"})
    await admin.post("/api/v1/sessions", json={"agent": "greeter", "user": "bob"})
    assert await _turn_version(live, "greeter-ann", "one") == 1
    r = await admin.put(
        "/api/v1/agents/greeter",
        json={"system_prompt": "PROMPT-B"},
        headers={"If-Match": '"1"'},
    )
    assert r.status_code == 200 and r.json()["version"] == 2
    status = (await admin.get("/api/v1/agents/greeter/status")).json()
    assert status["version"] == 2
    assert status["running_versions"] == {"1": 2} and status["stale"] == 2  # no turn since
    assert await _turn_version(live, "greeter-ann", "two") == 2  # its next turn: version 2
    status = (await admin.get("/api/v1/agents/greeter/status")).json()
    assert status["running_versions"] == {"1": 1, "2": 1} and status["stale"] == 1
    # stop everything, then a new session: the current version (it was v1 before the fix)
    await admin.post("/api/v1/agents/greeter/stop")
    await admin.post("/api/v1/sessions", json={"agent": "greeter", "user": "bob"})
    assert await _turn_version(live, "greeter-bob", "hi") == 2
    # a rollback is version 3 (the content of version 1), taken up the same way
    r = await admin.post("/api/v1/agents/greeter/rollback", json={"version": 1})
    assert r.status_code == 200 and r.json()["version"] == 3
    assert await _turn_version(live, "greeter-bob", "after rollback") == 3
    assert (await admin.get("/api/v1/sessions/greeter-bob")).json()["version"] == 3
    status = (await admin.get("/api/v1/agents/greeter/status")).json()
    assert status["version"] == 3 and status["running_versions"] == {"3": 1}
