"""Sessions over HTTP on a real node: get-or-start, chat (JSON and SSE), history, errors as
problems, and the ownership matrix (user A against user B's session)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from pydantic import BaseModel
from pydantic_ai import ModelHTTPError
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from netsuke.agents import AgentConfig, Agents

from .conftest import Live


async def define(live: Live, name: str, **content: Any) -> None:
    r = await live.admin.post("/api/v1/agents", json={"name": name, **content})
    assert r.status_code == 201, r.text


def agents_of(live: Live) -> Agents:
    assert live.node.agents is not None
    return live.node.agents


def sse(text: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((lines["event"], json.loads(lines["data"])))
    return out


async def test_get_or_start_chat_and_history(live: Live) -> None:
    await define(live, "greeter", system_prompt="Be brief")
    alice = live.client(await live.key("user", "alice"))
    r = await alice.post("/api/v1/sessions", json={"agent": "greeter"})
    assert r.status_code == 201, r.text
    assert r.headers["location"] == "/api/v1/sessions/greeter-alice"
    body = r.json()
    assert body["session_id"] == "greeter-alice" and body["user"] == "alice"
    assert body["state"] in ("idle", "hibernated")
    again = await alice.post("/api/v1/sessions", json={"agent": "greeter", "user": "alice"})
    assert again.status_code == 200

    r = await alice.post("/api/v1/sessions/greeter-alice/messages", json={"message": "Hello"})
    assert r.status_code == 200, r.text
    reply = r.json()
    assert reply["output"].startswith("[offline]") and reply["tokens_out"] > 0
    r = await alice.post("/api/v1/sessions/greeter-alice/messages", json={"message": "Again"})
    assert r.status_code == 200

    page = (await alice.get("/api/v1/sessions/greeter-alice/messages?limit=3")).json()
    assert len(page["items"]) == 3 and page["next_cursor"] == "3"
    rest = await alice.get(f"/api/v1/sessions/greeter-alice/messages?cursor={page['next_cursor']}")
    assert rest.json()["next_cursor"] is None
    assert len(page["items"]) + len(rest.json()["items"]) == 4  # two requests, two responses
    assert page["items"][0]["kind"] == "request"

    await asyncio.sleep(0.05)  # the monitor reads the bus in its own task
    got = (await alice.get("/api/v1/sessions/greeter-alice")).json()
    assert got["turns"] == 2 and got["tokens_out"] > 0 and got["last_activity"] > 0

    assert (await alice.delete("/api/v1/sessions/greeter-alice")).status_code == 204
    assert agents_of(live).whereis("greeter-alice") is None
    stopped = (await alice.get("/api/v1/sessions/greeter-alice")).json()
    assert stopped["state"] == "stopped"  # the conversation stays in the store
    r = await alice.post("/api/v1/sessions/greeter-alice/messages", json={"message": "Hi"})
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    purge = await alice.delete("/api/v1/sessions/greeter-alice?purge=true")
    assert purge.status_code == 204
    assert (await alice.get("/api/v1/sessions/greeter-alice")).status_code == 404


async def test_stream_over_sse_with_tool_calls(live: Live) -> None:
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    await define(live, "calc")
    agents_of(live).define(AgentConfig(name="calc", tools=[add]))
    admin = live.admin
    r = await admin.post("/api/v1/sessions", json={"agent": "calc", "user": "bob"})
    assert r.status_code == 201
    r = await admin.post(
        "/api/v1/sessions/calc-bob/messages",
        json={"message": "please use add with 2 and 3"},
        headers={"Accept": "text/event-stream"},
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse(r.text)
    names = [name for name, _ in events]
    assert names[-1] == "completed"
    assert "tool_call_started" in names and "tool_call_finished" in names and "delta" in names
    assert names.index("tool_call_started") < names.index("tool_call_finished")
    finished = dict(events)["tool_call_finished"]
    assert finished["tool_name"] == "add" and "5" in finished["result"]
    text = "".join(d["text"] for n, d in events if n == "delta")
    assert text == events[-1][1]["output"]

    # ?stream=true does the same without the Accept header
    r = await admin.post(
        "/api/v1/sessions/calc-bob/messages?stream=true", json={"message": "and again"}
    )
    assert sse(r.text)[-1][0] == "completed"


async def test_bad_input_is_a_4xx(live: Live) -> None:
    await define(live, "greeter")
    admin = live.admin
    cases = [
        ({"agent": "nope"}, 404),
        ({"agent": "greeter", "extra": 1}, 422),
        ({"agent": "bad name!"}, 422),
        ({"agent": "greeter", "user": "x" * 200}, 422),
    ]
    for body, status in cases:
        r = await admin.post("/api/v1/sessions", json=body)
        assert r.status_code == status, (body, r.text)
        assert r.headers["content-type"] == "application/problem+json"
    await admin.post("/api/v1/sessions", json={"agent": "greeter", "user": "u1"})
    for body in ({}, {"message": ""}, {"message": "hi", "role": "system"}, {"message": 5}):
        r = await admin.post("/api/v1/sessions/greeter-u1/messages", json=body)
        assert r.status_code == 422, (body, r.text)
    r = await admin.get("/api/v1/sessions/greeter-u1/messages?cursor=abc")
    assert r.status_code == 422
    assert (await admin.get("/api/v1/sessions/nobody-here")).status_code == 404


class Order(BaseModel):
    item: str
    quantity: int


def failing_model(status: int) -> FunctionModel:
    async def fn(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        raise ModelHTTPError(status_code=status, model_name="fake")

    return FunctionModel(fn)


def slow_model(delay: float) -> FunctionModel:
    async def fn(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        await asyncio.sleep(delay)
        return ModelResponse(parts=[TextPart("slow")])

    return FunctionModel(fn)


async def problem(
    client: httpx.AsyncClient, sid: str, message: str, **kw: Any
) -> tuple[int, dict[str, Any], httpx.Headers]:
    r = await client.post(f"/api/v1/sessions/{sid}/messages", json={"message": message}, **kw)
    assert r.headers["content-type"] == "application/problem+json", r.text
    return r.status_code, r.json(), r.headers


async def test_turn_errors_map_to_problems(live: Live) -> None:
    agents = agents_of(live)
    admin = live.admin
    for name, cfg in {
        "typed": AgentConfig(name="typed", input_schema=Order),
        "broken": AgentConfig(name="broken", model=failing_model(400)),
        "sleepy": AgentConfig(name="sleepy", model=slow_model(5), turn_timeout=0.3),
        "busy": AgentConfig(name="busy", model=slow_model(1.0), max_queue=1),
    }.items():
        await define(live, name)
        agents.define(cfg)
        assert (await admin.post("/api/v1/sessions", json={"agent": name, "user": "u"})).is_success

    status, body, _ = await problem(admin, "typed-u", '{"item": "tea", "quantity": "many"}')
    assert status == 422 and body["errors"][0]["field"] == "quantity"
    assert "many" not in json.dumps(body)  # the value is never echoed
    status, body, _ = await problem(admin, "broken-u", "hi")
    assert status == 502 and body["type"].endswith("model-failed") and body["execution_id"]
    status, body, _ = await problem(admin, "sleepy-u", "hi")
    assert status == 504 and body["type"].endswith("turn-timeout")

    running = [
        asyncio.ensure_future(admin.post("/api/v1/sessions/busy-u/messages", json={"message": m}))
        for m in ("one", "two")
    ]
    await asyncio.sleep(0.3)  # one runs, one waits: the queue (max_queue=1) is full
    status, body, headers = await problem(admin, "busy-u", "three")
    assert status == 429 and headers["retry-after"] == "1"
    assert [(await r).status_code for r in running] == [200, 200]
    # the SSE form answers an error before the first event as a plain problem
    status, body, _ = await problem(admin, "broken-u", "hi", params={"stream": "true"})
    assert status == 502
    # every agent is alive after its failure
    for name in ("typed", "broken", "sleepy", "busy"):
        assert agents.whereis(f"{name}-u") is not None


async def test_user_a_cannot_reach_user_b(live: Live) -> None:
    await define(live, "greeter")
    alice = live.client(await live.key("user", "alice"))
    bob = live.client(await live.key("user", "bob"))
    operator = live.client(await live.key("operator", "ops"))
    assert (await alice.post("/api/v1/sessions", json={"agent": "greeter"})).status_code == 201
    r = await bob.post("/api/v1/sessions", json={"agent": "greeter", "user": "alice"})
    assert r.status_code == 403
    await bob.post("/api/v1/sessions", json={"agent": "greeter"})
    await alice.post("/api/v1/sessions/greeter-alice/messages", json={"message": "secret plan"})

    denied = [
        await bob.get("/api/v1/sessions/greeter-alice"),
        await bob.get("/api/v1/sessions/greeter-alice/messages"),
        await bob.post("/api/v1/sessions/greeter-alice/messages", json={"message": "hi"}),
        await bob.post(
            "/api/v1/sessions/greeter-alice/messages?stream=true", json={"message": "hi"}
        ),
        await bob.delete("/api/v1/sessions/greeter-alice"),
    ]
    assert [r.status_code for r in denied] == [404] * 5
    assert all("secret" not in r.text for r in denied)
    assert agents_of(live).whereis("greeter-alice") is not None

    mine = (await bob.get("/api/v1/sessions")).json()["items"]
    assert [s["session_id"] for s in mine] == ["greeter-bob"]
    everyone = (await operator.get("/api/v1/sessions?limit=1")).json()
    assert everyone["items"][0]["session_id"] == "greeter-alice" and everyone["next_cursor"]
    nxt = await operator.get(f"/api/v1/sessions?limit=1&cursor={everyone['next_cursor']}")
    assert [s["session_id"] for s in nxt.json()["items"]] == ["greeter-bob"]
    # operators act for anyone
    r = await operator.get("/api/v1/sessions/greeter-alice/messages")
    assert r.status_code == 200 and "secret plan" in r.text
    r = await operator.post("/api/v1/sessions", json={"agent": "greeter", "user": "carol"})
    assert r.status_code == 201


@pytest.mark.parametrize("role", ["user", "operator"])
async def test_no_key_no_session(live: Live, role: str) -> None:
    await define(live, "greeter")
    anonymous = live.client()
    assert (await anonymous.post("/api/v1/sessions", json={"agent": "greeter"})).status_code == 401
    assert (await anonymous.get("/api/v1/sessions")).status_code == 401
    key = live.client(await live.key(role, f"{role}-1"))
    assert (await key.get("/api/v1/sessions")).status_code == 200


async def test_chat_route_is_tried_first_and_other_methods_still_get_405(live: Live) -> None:
    from netsuke.api.routes import sessions

    assert sessions.router.routes[0].endpoint is sessions.post_message  # type: ignore[attr-defined]
    await define(live, "greeter")
    admin = live.admin
    await admin.post("/api/v1/sessions", json={"agent": "greeter", "user": "u1"})
    r = await admin.put("/api/v1/sessions/greeter-u1/messages", json={"message": "hi"})
    assert r.status_code == 405
    assert set(r.headers["allow"].replace(" ", "").split(",")) == {"POST"}
    r = await admin.get("/api/v1/sessions/greeter-u1/messages")
    assert r.status_code == 200 and r.json()["session_id"] == "greeter-u1"
    r = await admin.post("/api/v1/sessions/greeter-u1/messages", json={"message": "hi"})
    assert r.status_code == 200, r.text


async def test_chat_common_case_skips_fastapis_solving_and_other_cases_get_its_answers(
    live: Live,
) -> None:
    """``ChatRoute``: a plain JSON chat request is solved directly; every refusal is the one
    FastAPI's own handler gives (``?stream=false`` sends a request to FastAPI's handler)."""
    from netsuke.api._chat_route import ChatRoute

    await define(live, "greeter")
    admin = live.admin
    await admin.post("/api/v1/sessions", json={"agent": "greeter", "user": "u1"})
    path = "/api/v1/sessions/greeter-u1/messages"
    before = ChatRoute.served_fast
    r = await admin.post(path, json={"message": "hi"})
    assert r.status_code == 200 and r.json()["session_id"] == "greeter-u1", r.text
    assert ChatRoute.served_fast == before + 1
    assert ChatRoute.fast_handlers >= 1  # the app's chat route was built with the shortcut
    r = await admin.post(path + "?stream=false", json={"message": "hi"})
    assert r.status_code == 200 and ChatRoute.served_fast == before + 1
    other = await live.key("user", "u2")
    json_headers = {"content-type": "application/json"}
    cases: list[tuple[httpx.AsyncClient, str, bytes, int]] = [
        (live.client(), path, b'{"message": "hi"}', 401),  # no key
        (live.client("nsk_0123abcd_wrong"), path, b'{"message": "hi"}', 401),
        (admin, path, b'{"message": "\\ud800"}', 422),  # a lone surrogate (check_json_body)
        (admin, path, b'{"message": ""}', 422),
        (admin, path, b'{"message": "hi", "role": "system"}', 422),
        (admin, path, b'{"message": "hi"', 422),  # not JSON
        (admin, "/api/v1/sessions/greeter-nobody/messages", b'{"message": "hi"}', 404),
        (admin, "/api/v1/sessions/bad%20id/messages", b'{"message": "hi"}', 422),
        (live.client(other), path, b'{"message": "hi"}', 404),  # another user's session
    ]
    for client, url, content, status in cases:
        fast = await client.post(url, content=content, headers=json_headers)
        full = await client.post(url + "?stream=false", content=content, headers=json_headers)
        assert fast.status_code == full.status_code == status, (url, content, fast.text)
        assert fast.headers["content-type"] == full.headers["content-type"]
        fast_body, full_body = fast.json(), full.json()
        if isinstance(fast_body, dict) and "instance" in fast_body:
            fast_body.pop("instance")
            full_body.pop("instance")
        assert fast_body == full_body, (url, content)
        assert fast.headers.get("www-authenticate") == full.headers.get("www-authenticate")
    # the plain chat, and the two the route itself refuses (404) went the short way
    assert ChatRoute.served_fast == before + 3
