"""The ``/cluster`` page and its API on a node that is not in a cluster (the clustered page,
with a real nats-server and a real second node, is ``tests/cluster/test_cluster_page.py``):
the empty state in words with this node still listed, sessions with their owner, the role
check, local times and 390 px."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import Live
from .test_dashboard_browser import browser  # noqa: F401 (fixture)
from .test_dashboard_ops import no_overflow_at_390, shot, sign_in_at, times_are_local


async def _session(live: Live, user: str = "ann") -> str:
    r = await live.admin.post("/api/v1/agents", json={"name": "helper", "model": "offline"})
    assert r.status_code in (201, 409), r.text
    r = await live.admin.post("/api/v1/sessions", json={"agent": "helper", "user": user})
    assert r.status_code in (200, 201), r.text
    return str(r.json()["session_id"])


async def test_cluster_api_alone_describes_this_node_and_its_sessions(live: Live) -> None:
    session = await _session(live)
    user = live.client(await live.key("user", "ann"))
    r = await user.get("/api/v1/cluster/nodes")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["clustered"] is False and body["nodes"] == []
    me = body["this_node"]
    assert me["processes"] > 0 and me["sessions"] == 1
    assert body["sessions"] == {"total": 1, "unclaimed": 0, "held_by_gone": 0}
    # every user's sessions: operator and up
    assert (await user.get("/api/v1/cluster/sessions")).status_code == 403
    op = live.client(await live.key("operator"))
    r = await op.get("/api/v1/cluster/sessions")
    assert r.status_code == 200, r.text
    [row] = r.json()["sessions"]
    assert row["session_id"] == session and row["owner"] == me["node"]
    assert row["owner_live"] is True and row["here"] is True and row["epoch"] >= 1
    assert r.json()["next_cursor"] is None
    r = await op.get("/api/v1/cluster/sessions", params={"cursor": "nope"})
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    assert (await op.get("/api/v1/cluster/sessions", params={"limit": 0})).status_code == 422


@pytest.mark.timeout(90)
async def test_cluster_page_alone_says_so_and_lists_this_node(live: Live, browser: Any) -> None:  # noqa: F811
    page = await browser.new_page()
    await sign_in_at(page, live, live.admin_key, "/cluster")
    assert await page.get_attribute("#nav-cluster", "aria-current") == "page"
    assert "not in a cluster" in await page.locator("#not-clustered").inner_text()
    me = (await live.admin.get("/api/v1/cluster/nodes")).json()["this_node"]
    row = page.locator(f"#cluster-nodes tr[data-node='{me['node']}']")
    assert "this node" in await row.inner_text()
    assert "No stored session yet" in await page.locator("#no-sessions").inner_text()
    assert "No node event" in await page.locator("#no-events").inner_text()
    # a session started elsewhere shows up with its owner (this node) on the next re-read
    session = await _session(live)
    await page.wait_for_selector("body[data-ops-live='1']")
    link = page.locator(f"#cluster-sessions tr[data-session='{session}'] a")
    await link.wait_for(timeout=15_000)
    owner = await page.get_attribute(
        f"#cluster-sessions tr[data-session='{session}']", "data-owner"
    )
    assert owner == me["node"]
    await times_are_local(page)
    await shot(page, "ops-17-cluster-alone.png")
    await no_overflow_at_390(page)
    await link.focus()  # by keyboard
    await page.keyboard.press("Enter")
    await page.wait_for_url(f"{live.url}/sessions/{session}")


@pytest.mark.timeout(60)
async def test_cluster_page_needs_the_operator_role(live: Live, browser: Any) -> None:  # noqa: F811
    await _session(live)
    page = await browser.new_page()
    await sign_in_at(page, live, await live.key("user", "ann"), "/cluster")
    assert "needs the operator role" in await page.locator("#denied").inner_text()
    assert await page.locator("#cluster-sessions").count() == 0
    r = await live.client(Cookie=f"netsuke_key={await live.key('user', 'bob')}").get("/cluster")
    assert r.status_code == 403 and "helper-ann" not in r.text
    r = await live.client().get("/cluster", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
