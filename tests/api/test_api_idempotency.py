"""``Idempotency-Key`` on ``POST /api/v1/sessions/{id}/messages`` and the answer to a fenced
turn (issue 17), on a real node over HTTP."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from netsuke.agents import AgentConfig
from netsuke.store import NodeIdentity, Store

from .conftest import Live
from .test_api_sessions import agents_of, define, sse

URL = "/api/v1/sessions/greeter-u/messages"


class Dead:
    def __init__(self, *dead: str) -> None:
        self.dead = set(dead)

    async def is_live(self, node: str, incarnation: int) -> bool:
        return node not in self.dead


async def _start(live: Live, agent: str = "greeter") -> None:
    await define(live, agent)
    r = await live.admin.post("/api/v1/sessions", json={"agent": agent, "user": "u"})
    assert r.is_success, r.text


async def _count(live: Live, sid: str = "greeter-u") -> int:
    return (await live.node.store.conversations.get(sid)).message_count


@pytest.mark.timeout(60)
async def test_a_retry_with_the_key_gets_the_stored_reply_and_runs_nothing(live: Live) -> None:
    await _start(live)
    admin = live.admin
    first = await admin.post(URL, json={"message": "Hello"}, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == 200, first.text
    assert "idempotent-replayed" not in first.headers
    count = await _count(live)
    again = await admin.post(URL, json={"message": "Hello"}, headers={"Idempotency-Key": "k-1"})
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    assert await _count(live) == count
    reused = await admin.post(URL, json={"message": "Other"}, headers={"Idempotency-Key": "k-1"})
    assert reused.status_code == 422, reused.text
    assert reused.headers["content-type"] == "application/problem+json"
    assert reused.json()["field"] == "Idempotency-Key"
    assert await _count(live) == count
    # a key is scoped to its session: another session's k-1 is a new request
    await _start(live, "other")
    r = await admin.post(
        "/api/v1/sessions/other-u/messages",
        json={"message": "Hello"},
        headers={"Idempotency-Key": "k-1"},
    )
    assert r.status_code == 200 and "idempotent-replayed" not in r.headers
    # without a key every request is a turn
    plain = await admin.post(URL, json={"message": "Hello"})
    assert plain.status_code == 200 and await _count(live) == count + 2
    stored = await live.node.store.conversations.find_request("greeter-u", "k-1")
    assert stored is not None and json.loads(stored.reply) == first.json()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "headers",
    [
        [("Idempotency-Key", "")],
        [("Idempotency-Key", "x" * 201)],
        [("Idempotency-Key", "has space")],
        [("Idempotency-Key", "a"), ("Idempotency-Key", "b")],
    ],
    ids=["empty", "too-long", "space", "twice"],
)
async def test_a_bad_key_is_a_400_naming_the_header_and_runs_nothing(
    live: Live, headers: list[tuple[str, str]]
) -> None:
    await _start(live)
    before = await _count(live)
    r = await live.admin.post(URL, json={"message": "Hello"}, headers=headers)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["field"] == "Idempotency-Key"
    assert await _count(live) == before


@pytest.mark.timeout(60)
async def test_a_streamed_reply_takes_the_key_and_a_retry_replays_completed(live: Live) -> None:
    await _start(live)
    key, stream = {"Idempotency-Key": "s-1"}, {"stream": "true"}
    first = await live.admin.post(URL, json={"message": "Hi"}, params=stream, headers=key)
    assert first.status_code == 200, first.text
    events = sse(first.text)
    assert events[0][0] == "delta" and events[-1][0] == "completed"
    count = await _count(live)
    again = await live.admin.post(URL, json={"message": "Hi"}, params=stream, headers=key)
    assert sse(again.text) == [events[-1]]  # the stored reply, nothing ran
    assert await _count(live) == count
    as_json = await live.admin.post(URL, json={"message": "Hi"}, headers=key)
    assert as_json.headers["idempotent-replayed"] == "true"
    assert as_json.json()["execution_id"] == events[-1][1]["execution_id"]
    reused = await live.admin.post(URL, json={"message": "Ho"}, params=stream, headers=key)
    assert reused.status_code == 422 and reused.json()["field"] == "Idempotency-Key"


@pytest.mark.timeout(60)
async def test_a_duplicate_while_the_first_runs_is_409_and_then_replays(live: Live) -> None:
    gate, entered = asyncio.Event(), asyncio.Event()
    calls = 0

    async def fn(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        nonlocal calls
        calls += 1
        entered.set()
        await gate.wait()
        return ModelResponse(parts=[TextPart("paid")])

    await define(live, "gated")
    agents_of(live).define(AgentConfig(name="gated", model=FunctionModel(fn)))
    assert (
        await live.admin.post("/api/v1/sessions", json={"agent": "gated", "user": "u"})
    ).is_success
    url, key = "/api/v1/sessions/gated-u/messages", {"Idempotency-Key": "pay-1"}
    first = asyncio.ensure_future(live.admin.post(url, json={"message": "pay"}, headers=key))
    await entered.wait()
    dup = await live.admin.post(url, json={"message": "pay"}, headers=key)
    assert dup.status_code == 409 and dup.headers["retry-after"] == "1", dup.text
    gate.set()
    done = await first
    assert done.status_code == 200
    replay = await live.admin.post(url, json={"message": "pay"}, headers=key)
    assert replay.status_code == 200 and replay.content == done.content and calls == 1


@pytest.mark.timeout(60)
async def test_a_turn_fenced_by_another_nodes_takeover_is_a_503_and_stores_nothing(
    live: Live,
) -> None:
    store = live.node.store
    store.conversations.set_ownership(liveness=Dead())  # other nodes count as live
    await _start(live)
    ok = await live.admin.post(URL, json={"message": "Hello"})
    assert ok.status_code == 200
    async with Store.open(store.url) as other:
        other.conversations.set_ownership(
            NodeIdentity("beta", 1), Dead(store.conversations.node.name)
        )
        await other.conversations.open("greeter-u", agent_name="greeter", claim=True)
    before = await _count(live)
    for _ in range(2):  # fenced at the commit, then refused at the claim
        r = await live.admin.post(
            URL, json={"message": "Late"}, headers={"Idempotency-Key": "late-1"}
        )
        assert r.status_code == 503, r.text
        body: dict[str, Any] = r.json()
        assert r.headers["retry-after"] == "1" and body["type"].endswith("session-moved")
        assert body["title"] == "Session moved"
    assert await _count(live) == before
    assert await store.conversations.find_request("greeter-u", "late-1") is None
