"""The events WebSocket: topic filters, users see their own events only, refusals by code."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from netsuke.events import topics

from .conftest import Live


def _ws(live: Live, query: str = "") -> str:
    return live.url.replace("http://", "ws://") + "/api/v1/events" + query


async def _next_event(ws, timeout: float = 5.0) -> dict:
    async with asyncio.timeout(timeout):
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == "event":
                return frame


async def test_events_stream_in_order_filtered_by_topic(live: Live) -> None:
    headers = {"Authorization": f"Bearer {live.admin_key}"}
    async with connect(_ws(live, "?topics=agent.*,definition.*"), additional_headers=headers) as ws:
        welcome = json.loads(await ws.recv())
        assert welcome == {
            "type": "welcome",
            "topics": ["agent.*", "definition.*"],
            "node": "local",
        }
        bus = live.node.runtime.events
        bus.publish(topics.TASK_QUEUED, task="t1")  # filtered out
        bus.publish(topics.AGENT_STARTED, agent="a", session="s1", user="u")
        await live.admin.post("/api/v1/agents", json={"name": "live1"})
        first = await _next_event(ws)
        second = await _next_event(ws)
        assert first["topic"] == "agent.started" and first["data"]["session"] == "s1"
        assert second["topic"] == "definition.changed" and second["data"]["name"] == "live1"
        assert first["seq"] < second["seq"]


async def test_a_user_sees_only_its_own_sessions_events(live: Live) -> None:
    alice = await live.key("user", "alice")
    async with connect(
        _ws(live, "?topics=agent.*"), additional_headers={"Authorization": f"Bearer {alice}"}
    ) as ws:
        await ws.recv()
        bus = live.node.runtime.events
        bus.publish(topics.AGENT_STARTED, agent="a", session="bob-1", user="bob")
        bus.publish(topics.AGENT_STARTED, agent="a", session="alice-1", user="alice")
        event = await _next_event(ws)
        assert event["data"]["user"] == "alice"


async def test_a_user_sees_the_turn_events_of_its_own_sessions(live: Live) -> None:
    await live.admin.post("/api/v1/agents", json={"name": "turny"})
    ann, bob = await live.key("user", "ann"), await live.key("user", "bob")
    async with connect(
        _ws(live, "?topics=turn.*"), additional_headers={"Authorization": f"Bearer {ann}"}
    ) as ws:
        await ws.recv()
        for key in (bob, ann):  # bob's turn first: ann must not see it
            client = live.client(key)
            sid = (await client.post("/api/v1/sessions", json={"agent": "turny"})).json()
            r = await client.post(
                f"/api/v1/sessions/{sid['session_id']}/messages", json={"message": "hi"}
            )
            assert r.status_code == 200, r.text
        started = await _next_event(ws)
        finished = await _next_event(ws)
    assert started["topic"] == "turn.started" and started["data"]["user"] == "ann"
    assert started["data"]["session"] == "turny-ann"
    assert finished["topic"] == "turn.finished" and finished["data"]["user"] == "ann"


async def test_no_key_closes_with_4401(live: Live) -> None:
    async with connect(_ws(live)) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


async def test_a_bad_topic_pattern_closes_with_4400(live: Live) -> None:
    headers = {"Authorization": f"Bearer {live.admin_key}"}
    async with connect(_ws(live, "?topics=Bad%20Topic!"), additional_headers=headers) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4400


async def test_closing_the_socket_unsubscribes(live: Live) -> None:
    bus = live.node.runtime.events
    before = len(bus.subscriptions())
    headers = {"Authorization": f"Bearer {live.admin_key}"}
    async with connect(_ws(live), additional_headers=headers) as ws:
        await ws.recv()
        assert len(bus.subscriptions()) == before + 1
    async with asyncio.timeout(5):
        while len(bus.subscriptions()) != before:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
