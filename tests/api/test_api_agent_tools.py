"""Stored definitions get their tools on a node: sandboxed functions named in ``tools`` and
``delegate_to_<name>`` for their ``delegates`` (run through the session API, offline model)."""

from __future__ import annotations

import json
import shutil

import pytest

from .conftest import Live

ADD = "def add(a: int, b: int) -> int:\n    return a + b\n"
SCHEMA = {
    "type": "object",
    "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
    "required": ["a", "b"],
}


async def test_a_stored_function_is_an_agent_tool(live: Live) -> None:
    if not (shutil.which("bwrap") or shutil.which("unshare")):
        pytest.skip("no isolation mechanism (bubblewrap or unshare) to run functions")
    admin = live.admin
    assert (
        await admin.post(
            "/api/v1/functions", json={"name": "add", "code": ADD, "input_schema": SCHEMA}
        )
    ).is_success
    r = await admin.post("/api/v1/agents", json={"name": "calc", "tools": ["add", "ghost"]})
    assert r.status_code == 201
    await admin.post("/api/v1/sessions", json={"agent": "calc", "user": "ann"})
    r = await admin.post(
        "/api/v1/sessions/calc-ann/messages?stream=true",
        json={"message": "please use add with 40 and 2"},
    )
    events = [
        (block.split("\n")[0][7:], json.loads(block.split("\n")[1][6:]))
        for block in r.text.strip().split("\n\n")
    ]
    finished = [d for name, d in events if name == "tool_call_finished"]
    assert finished and finished[0]["tool_name"] == "add" and finished[0]["result"] == "42"
    assert events[-1][0] == "completed" and "42" in events[-1][1]["output"]


async def test_delegates_become_delegation_tools(live: Live) -> None:
    admin = live.admin
    await admin.post("/api/v1/agents", json={"name": "summarizer", "system_prompt": "Condense"})
    await admin.post(
        "/api/v1/agents",
        json={"name": "researcher", "delegates": ["summarizer"], "max_chain_depth": 2},
    )
    await admin.post("/api/v1/sessions", json={"agent": "researcher", "user": "ann"})
    r = await admin.post(
        "/api/v1/sessions/researcher-ann/messages",
        json={"message": 'please use delegate_to_summarizer with "long findings"'},
    )
    assert r.status_code == 200, r.text
    assert "long findings" in r.json()["output"]
    assert live.node.agents is not None
    # started on demand, in a session of ann's conversation (never a shared instance)
    assert live.node.agents.whereis("summarizer") is None
    assert live.node.agents.whereis("summarizer@researcher-ann") is not None
    child = await live.node.store.executions.list(session_id="summarizer@researcher-ann")
    assert child.items and child.items[0].parent_id == r.json()["execution_id"]
