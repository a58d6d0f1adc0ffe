"""The supervision tree: ``GET /api/v1/tree`` from the kernel and registry, and ``/tree`` in a
real browser, where a real crash of a real agent process appears without a reload."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from .conftest import Live
from .test_dashboard_browser import _sign_in, browser  # noqa: F401 (fixture)
from .test_dashboard_ops import (
    SHOTS,
    no_overflow_at_390,
    shot,
    shots_dir,
    sign_in_at,
    times_are_local,
)


async def _session(live: Live, agent: str, user: str) -> str:
    r = await live.admin.post("/api/v1/agents", json={"name": agent, "model": "offline"})
    assert r.status_code in (201, 409)
    r = await live.admin.post("/api/v1/sessions", json={"agent": agent, "user": user})
    assert r.status_code in (200, 201), r.text
    sid: str = r.json()["session_id"]
    return sid


def _find(tree: dict[str, Any], agent: str) -> dict[str, Any]:
    for child in tree["children"]:
        for d in child.get("definitions", []):
            if d["agent"] == agent:
                found: dict[str, Any] = d
                return found
    raise AssertionError(f"no supervisor for {agent} in {tree}")


async def test_tree_api_shows_supervisors_sessions_states_and_crashes(live: Live) -> None:
    sid = await _session(live, "worker", "ann")
    operator = live.client(await live.key("operator"))
    r = await operator.get("/api/v1/tree")
    assert r.status_code == 200
    tree = r.json()
    assert tree["node"] == live.node.runtime.node
    assert any(c["id"] == "netsuke.agents" and c["type"] == "supervisor" for c in tree["children"])
    d = _find(tree, "worker")
    assert d["name"] == "netsuke.agents:worker"
    [s] = d["sessions"]
    assert (s["session"], s["user"], s["state"], s["restarts"], s["last_exit"]) == (
        sid,
        "ann",
        "idle",
        0,
        None,
    )
    # a real crash of the agent process: restarted by its supervisor, reason kept
    rt = live.node.runtime
    pid = rt.whereis(sid)
    assert pid is not None
    restarted = rt.events.subscribe("agent.restarted")
    rt.exit(pid, RuntimeError("boom"))
    await restarted.get()
    s = _find((await operator.get("/api/v1/tree")).json(), "worker")["sessions"][0]
    assert s["restarts"] == 1 and s["pid"] != repr(pid)
    assert "boom" in s["last_exit"]["reason"] and s["last_exit"]["at"].endswith("+00:00")
    [exit_] = (await operator.get("/api/v1/tree")).json()["recent_exits"]
    assert (exit_["agent"], exit_["session"]) == ("worker", sid) and "boom" in exit_["reason"]
    # an agent that drops its memory when idle shows as hibernated
    hibernated = rt.events.subscribe("agent.hibernated")
    r = await live.admin.post(
        "/api/v1/agents",
        json={"name": "sleepy", "model": "offline", "config": {"idle_hibernate": 0.1}},
    )
    assert r.status_code == 201, r.text
    sleepy = await _session(live, "sleepy", "bob")
    assert (await hibernated.get()).data["session"] == sleepy
    [s] = _find((await operator.get("/api/v1/tree")).json(), "sleepy")["sessions"]
    assert s["state"] == "hibernated" and s["pid"] is not None
    # a user key may not see the node's processes
    user = live.client(await live.key("user", "ann"))
    assert (await user.get("/api/v1/tree")).status_code == 403
    assert (await live.client().get("/api/v1/tree")).status_code == 401


@pytest.mark.timeout(90)
async def test_a_crash_appears_on_the_tree_page_by_push(live: Live, browser: Any) -> None:  # noqa: F811
    sid = await _session(live, "worker", "ann")
    page = await browser.new_page()
    await sign_in_at(page, live, live.admin_key, "/tree")
    await page.wait_for_selector("body[data-ops-live='1']")
    assert "No crash since the node started" in await page.locator("#no-exits").inner_text()
    row = page.locator(f'li.ops-session[data-session="{sid}"]')
    assert await row.get_attribute("data-state") == "idle"
    assert "0 restarts" in await row.inner_text()
    await page.evaluate("window.__sameDocument = true")

    rt = live.node.runtime
    pid = rt.whereis(sid)
    assert pid is not None
    crashed_at = time.time()
    rt.exit(pid, RuntimeError("boom"))
    await page.wait_for_selector(
        f'li.ops-session[data-session="{sid}"] .ops-exit:has-text("boom")', timeout=15_000
    )
    assert "1 restart ·" in await row.inner_text()
    assert "boom" in await page.locator("#recent-exits").inner_text()
    # it arrived by push: the same document (no reload), rendered after an event of this session
    assert await page.evaluate("window.__sameDocument === true")
    renders = await page.evaluate("window.opsTree.renders")
    pushed = [r for r in renders if r["session"] == sid and r["topic"].startswith("agent.")]
    assert pushed, renders
    first = min(pushed, key=lambda r: r["rendered"])
    latency = {
        "crash_to_dom_ms": round(first["rendered"] - crashed_at * 1000, 1),
        "event_to_dom_ms": round(first["rendered"] - first["eventTime"], 1),
        "topic": first["topic"],
    }
    (shots_dir() / "tree-crash-latency.json").write_text(json.dumps(latency) + "\n")
    print("tree crash latency", latency)
    await page.screenshot(path=str(SHOTS / "ops-01-tree-after-crash.png"), full_page=True)
    await no_overflow_at_390(page)
    await times_are_local(page)
    await shot(page, "ops-15-tree-390.png")

    # the focus survives the live re-renders (a keyboard user keeps their place)
    await row.locator("a").first.focus()
    again = rt.whereis(sid)
    assert again is not None
    rt.exit(again, RuntimeError("boom again"))
    await page.wait_for_selector(
        f'li.ops-session[data-session="{sid}"] .ops-exit:has-text("again")'
    )
    assert await page.evaluate("document.activeElement.textContent") == sid
    # through to the session, by keyboard
    await page.keyboard.press("Enter")
    await page.wait_for_url(f"{live.url}/sessions/{sid}")
    await page.close()


@pytest.mark.timeout(60)
async def test_a_crash_loop_past_the_intensity_leaves_the_tree_and_its_crashes_listed(
    live: Live,
) -> None:
    sid = await _session(live, "flaky", "ann")
    steady = await _session(live, "steady", "bob")
    rt = live.node.runtime
    gave_up = rt.events.subscribe("supervisor.gave_up")
    for _ in range(200):  # the definition's supervisor allows 100 restarts in 5 s
        pid = rt.whereis(sid)
        if pid is None:
            break
        rt.exit(pid, RuntimeError("crash loop"))
        for _ in range(500):
            if rt.whereis(sid) not in (None, pid) or gave_up.pending():
                break
            await asyncio.sleep(0.002)
    event = await gave_up.get(timeout=10)
    assert event.data["supervisor"]
    tree = (await live.admin.get("/api/v1/tree")).json()
    agents = [d["agent"] for c in tree["children"] for d in c.get("definitions", [])]
    assert "flaky" not in agents and "steady" in agents  # only its own domain went down
    assert _find(tree, "steady")["sessions"][0]["session"] == steady
    exits = tree["recent_exits"]
    assert len(exits) == 20 and all(e["agent"] == "flaky" for e in exits)
    assert all("crash loop" in e["reason"] for e in exits)
    assert [e["at"] for e in exits] == sorted((e["at"] for e in exits), reverse=True)
