"""Failed turns say why (issue 15, item 4): the reason reaches the API's problem, the
executions endpoints, the agent's logs and the node's log; executions follow the API's
ownership rules."""

from __future__ import annotations

import pytest
import structlog

from .conftest import Live

REASON = "model openai-chat:gpt-4o: OPENAI_API_KEY is not set"


async def _keyless_agent(live: Live, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stored agent whose key is missing on this node (written to the store directly, as
    a definition made where the key was set, or before it was removed)."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    await live.node.store.agents.create({"name": "gpt", "model": "openai-chat:gpt-4o"})


async def test_a_failed_turn_answers_its_reason_and_its_execution_keeps_it(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _keyless_agent(live, monkeypatch)
    admin = live.admin
    assert (await admin.post("/api/v1/sessions", json={"agent": "gpt", "user": "ann"})).is_success
    with structlog.testing.capture_logs() as logs:
        r = await admin.post("/api/v1/sessions/gpt-ann/messages", json={"message": "hi"})
    assert r.status_code == 502 and r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["detail"] == REASON and body["type"].endswith("/model-unavailable")
    assert body["field"] == "model"
    failed = [e for e in logs if e["event"] == "agent_turn_failed"]
    assert failed and failed[0]["reason"] == REASON

    r = await admin.get(f"/api/v1/executions/{body['execution_id']}")
    assert r.status_code == 200
    ex = r.json()
    assert ex["status"] == "failed" and ex["session_id"] == "gpt-ann"
    assert ex["error"] == f"ModelConfigError: {REASON}"

    r = await admin.get("/api/v1/agents/gpt/logs")
    assert any(line.get("reason") == REASON for line in r.json()["items"]), r.text

    # the streamed form carries the same reason
    r = await admin.post(
        "/api/v1/sessions/gpt-ann/messages", json={"message": "hi"}, params={"stream": "true"}
    )
    assert r.status_code == 502 and r.json()["detail"] == REASON


async def test_executions_are_listed_by_session_agent_and_status(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _keyless_agent(live, monkeypatch)
    await live.node.store.agents.create({"name": "echo"})
    admin = live.admin
    for agent in ("gpt", "echo"):
        await admin.post("/api/v1/sessions", json={"agent": agent, "user": "ann"})
    for _ in range(3):
        await admin.post("/api/v1/sessions/gpt-ann/messages", json={"message": "hi"})
        await admin.post("/api/v1/sessions/echo-ann/messages", json={"message": "hi"})

    r = await admin.get("/api/v1/executions", params={"status": "failed"})
    items = r.json()["items"]
    assert len(items) == 3 and {i["agent_name"] for i in items} == {"gpt"}
    r = await admin.get("/api/v1/executions", params={"session_id": "echo-ann"})
    assert [i["status"] for i in r.json()["items"]] == ["succeeded"] * 3
    r = await admin.get("/api/v1/executions", params={"agent": "gpt", "status": "succeeded"})
    assert r.json()["items"] == []

    seen: list[str] = []
    cursor: str | None = None
    while True:
        params = {"limit": "4", **({"cursor": cursor} if cursor else {})}
        page = (await admin.get("/api/v1/executions", params=params)).json()
        seen += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 6

    for bad in ({"status": "exploded"}, {"cursor": "x"}, {"agent": "../x"}, {"limit": "0"}):
        r = await admin.get("/api/v1/executions", params=bad)
        assert r.status_code == 422, bad
        assert r.headers["content-type"] == "application/problem+json"
    assert (await admin.get("/api/v1/executions/nope")).status_code == 404


async def test_a_user_key_sees_only_its_own_executions(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _keyless_agent(live, monkeypatch)
    alice = live.client(await live.key("user", "alice"))
    bob = live.client(await live.key("user", "bob"))
    operator = live.client(await live.key("operator", "op1"))
    ids = {}
    for who, client in (("alice", alice), ("bob", bob)):
        await client.post("/api/v1/sessions", json={"agent": "gpt"})
        r = await client.post(f"/api/v1/sessions/gpt-{who}/messages", json={"message": "hi"})
        assert r.status_code == 502 and r.json()["detail"] == REASON
        ids[who] = r.json()["execution_id"]

    assert (await alice.get(f"/api/v1/executions/{ids['alice']}")).status_code == 200
    r = await alice.get(f"/api/v1/executions/{ids['bob']}")
    assert r.status_code == 404
    listed = (await alice.get("/api/v1/executions")).json()["items"]
    assert [i["id"] for i in listed] == [ids["alice"]]
    r = await alice.get("/api/v1/executions", params={"session_id": "gpt-bob"})
    assert r.json()["items"] == []
    everyone = (await operator.get("/api/v1/executions")).json()["items"]
    assert {i["id"] for i in everyone} == set(ids.values())
    assert (await live.client().get("/api/v1/executions")).status_code == 401


async def test_agents_check_reports_what_keeps_a_model_from_working(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _keyless_agent(live, monkeypatch)
    await live.node.store.agents.create({"name": "plain"})
    operator = live.client(await live.key("operator", "op1"))
    r = await operator.get("/api/v1/agents/gpt/check")
    assert r.status_code == 200
    assert r.json() == {
        "name": "gpt",
        "version": 1,
        "model": "openai-chat:gpt-4o",
        "ok": False,
        "problems": [{"field": "model", "reason": REASON}],
    }
    assert (await operator.get("/api/v1/agents/plain/check")).json()["ok"] is True
    assert (await operator.get("/api/v1/agents/ghost/check")).status_code == 404
    user = live.client(await live.key("user", "ann"))
    assert (await user.get("/api/v1/agents/gpt/check")).status_code == 403
    # the same problem refuses a new definition before anything is stored
    r = await operator.post("/api/v1/agents", json={"name": "gpt2", "model": "openai-chat:gpt-4o"})
    assert r.status_code == 422 and r.json()["errors"] == [{"field": "model", "reason": REASON}]
    assert (await operator.get("/api/v1/agents/gpt2")).status_code == 404
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-only-0000000000")
    assert (await operator.get("/api/v1/agents/gpt/check")).json()["ok"] is True


async def test_a_user_key_sees_the_executions_of_the_functions_it_stored(live: Live) -> None:
    """Functions belong to the key that stored them (``<name>:<prefix>``), so a user key sees
    the executions of its own functions and never another key's, even one with its name."""
    from .test_api_functions import _need_isolation

    _need_isolation()
    alice = live.client(await live.key("user", "alice"))
    alice2 = live.client(await live.key("user", "alice"))  # same name, another key
    code = "def double(x: int) -> int:\n    return 2 * x\n"
    r = await alice.post("/api/v1/functions", json={"name": "double", "code": code})
    assert r.status_code == 201, r.text
    r = await alice.post("/api/v1/functions/double/execute", json={"args": {"x": 4}})
    assert r.status_code == 200, r.text
    run = r.json()["execution_id"]
    assert (await alice.get(f"/api/v1/executions/{run}")).status_code == 200
    listed = (await alice.get("/api/v1/executions", params={"function": "double"})).json()
    assert [i["id"] for i in listed["items"]] == [run]
    assert (await alice2.get(f"/api/v1/executions/{run}")).status_code == 404
    assert (await alice2.get("/api/v1/executions")).json()["items"] == []
