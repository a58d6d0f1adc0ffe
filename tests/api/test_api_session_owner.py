"""The session view shows the session's owner process (issue 17: owner links are kept across
a failover, so which process owns a session is worth seeing)."""

from __future__ import annotations

import asyncio

import pytest

from netsuke.kernel import From, Process

from .conftest import Live

pytestmark = pytest.mark.timeout(60)


class Idle(Process):
    def handle_call(self, request: object, from_: From) -> object:
        return "ok"


async def test_the_session_view_shows_its_owner_and_none_once_the_owner_is_gone(
    live: Live,
) -> None:
    r = await live.admin.post(
        "/api/v1/agents", json={"name": "greeter", "config": {"owner_policy": "hibernate"}}
    )
    assert r.status_code == 201, r.text
    alice = live.client(await live.key("user", "alice"))
    r = await alice.post("/api/v1/sessions", json={"agent": "greeter"})
    assert r.status_code == 201, r.text
    assert r.json()["owner"] is None
    agents = live.node.agents
    assert agents is not None
    owner = await agents.rt.start(Idle)
    assert owner is not None
    await agents.attach_owner("greeter-alice", owner)
    view = (await alice.get("/api/v1/sessions/greeter-alice")).json()
    assert view["owner"] == repr(owner), view
    await agents.rt.stop(owner)
    for _ in range(500):  # the owner's exit reaches the session as a message: bounded wait
        view = (await alice.get("/api/v1/sessions/greeter-alice")).json()
        if view["owner"] is None:
            break
        await asyncio.sleep(0.02)
    assert view["owner"] is None and view["state"] != "stopped", view
