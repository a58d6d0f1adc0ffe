"""The chat page's session is owned by the page's WebSocket (seed 001): in a real browser,
chat, see the session in the dashboard's live table, close the tab and see the session end;
over a plain WebSocket, the ``hibernate`` policy and the refusals."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import websockets

from .conftest import Live
from .test_dashboard_browser import ARTIFACTS, _sign_in, browser  # noqa: F401 (fixture)


async def _gone(live: Live, name: str, timeout: float = 5.0) -> bool:
    assert live.node.agents is not None
    for _ in range(int(timeout / 0.05)):
        if live.node.agents.whereis(name) is None:
            return True
        await asyncio.sleep(0.05)
    return False


@pytest.mark.timeout(90)
async def test_chat_then_close_the_tab_ends_the_session(live: Live, browser: Any) -> None:  # noqa: F811
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await live.node.store.agents.create({"name": "greeter", "system_prompt": "Be brief"})
    context = await browser.new_context()
    board = await context.new_page()
    await _sign_in(board, live)
    await board.wait_for_selector("#live.on")

    await board.click('#agents a[href="/agents/greeter"]')
    await board.click("#chat-link")
    await board.wait_for_url(live.url + "/chat/greeter")
    await board.go_back()
    await board.go_back()  # back on the dashboard; the chat opens in a tab of its own
    await board.wait_for_selector("#live.on")

    chat = await context.new_page()
    await chat.goto(live.url + "/chat/greeter")
    sid = "greeter-bootstrap-admin"
    await chat.wait_for_selector(f"#session-id:has-text('{sid}')")
    await chat.fill("#chat-input", "Hello from the browser")
    await chat.click("#chat-send")
    reply = chat.locator("#transcript li.agent[data-done]")
    await reply.wait_for(timeout=10_000)
    assert (await reply.locator(".body").inner_text()).startswith("[offline]")
    await chat.screenshot(path=str(ARTIFACTS / "04-chat.png"), full_page=True)

    row = board.locator(f'#sessions tbody tr[data-session="{sid}"]')
    await row.wait_for(timeout=10_000)
    await board.wait_for_function(
        f"""() => {{
            const r = document.querySelector('#sessions tr[data-session="{sid}"]');
            return r && !r.querySelector("td.tokens, td:nth-child(8)").textContent.startsWith("0 /");
        }}""",
        timeout=10_000,
    )
    assert live.node.agents is not None and live.node.agents.whereis(sid) is not None
    await board.screenshot(path=str(ARTIFACTS / "05-session-live.png"), full_page=True)

    await chat.close()  # the socket closes, its scope exits, the agent's owner is gone
    assert await _gone(live, sid)
    await board.wait_for_selector(
        f'#sessions tr[data-session="{sid}"] .state:has-text("stopped")', timeout=10_000
    )
    await board.screenshot(path=str(ARTIFACTS / "06-session-ended.png"), full_page=True)

    await board.goto(live.url + "/agents/greeter")  # its metrics and logs
    assert await board.locator("#m-turns").inner_text() == "1"
    logs = await board.locator("#logs").inner_text()
    assert "turn.finished greeter-bootstrap-admin succeeded" in logs and "agent.stopped" in logs
    await board.wait_for_selector("#live.on")
    r = await live.admin.post("/api/v1/sessions", json={"agent": "greeter", "user": "kai"})
    assert r.status_code == 201
    r = await live.admin.post("/api/v1/sessions/greeter-kai/messages", json={"message": "hi"})
    assert r.status_code == 200
    await board.wait_for_selector("#m-turns:has-text('2')", timeout=10_000)
    assert "agent.started greeter-kai" in await board.locator("#logs").inner_text()
    await board.screenshot(path=str(ARTIFACTS / "07-agent-metrics-logs.png"), full_page=True)
    await context.close()


async def _frames(ws: Any, until: str) -> list[dict[str, Any]]:
    out = []
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
        out.append(frame)
        if frame["type"] in (until, "error"):
            return out


async def test_socket_owner_hibernate_policy_and_refusals(live: Live) -> None:
    await live.node.store.agents.create({"name": "keeper", "config": {"owner_policy": "hibernate"}})
    ws_url = live.url.replace("http://", "ws://") + "/dashboard/chat/keeper/ws"
    auth = {"Authorization": f"Bearer {live.admin_key}"}
    async with websockets.connect(ws_url + "?user=kim", additional_headers=auth) as ws:
        hello = json.loads(await ws.recv())
        assert hello == {
            "type": "session", "session_id": "keeper-kim", "agent": "keeper", "user": "kim",
            "node": "local",
        }  # fmt: skip
        await ws.send(json.dumps({"message": "My name is Kim"}))
        frames = await _frames(ws, "completed")
        assert frames[-1]["type"] == "completed" and frames[0]["type"] == "delta"
        for bad in (json.dumps({"nope": 1}), "not json", json.dumps({"message": ""})):
            await ws.send(bad)
            error = (await _frames(ws, "error"))[-1]
            assert error["status"] == 422 and error["problem_type"].endswith("validation-failed")
    assert live.node.agents is not None
    await asyncio.sleep(0.3)
    assert live.node.agents.whereis("keeper-kim") is not None  # hibernated, not stopped
    status = await live.node.agents.status("keeper-kim")
    assert status["state"] == "hibernated" and status["owner"] is None

    user_key = await live.key("user", "lee")
    for url, headers, code in [
        (ws_url, {}, 4401),
        (ws_url + "?user=kim", {"Authorization": f"Bearer {user_key}"}, 4403),
        (ws_url.replace("keeper", "ghost"), auth, 4404),
    ]:
        async with websockets.connect(url, additional_headers=headers) as ws:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == code


@pytest.mark.timeout(90)
async def test_a_failed_turn_shows_its_reason_in_the_chat(
    live: Live,
    browser: Any,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 15.4: the chat page said "error: Turn failed: TurnError"; it shows the reason."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    await live.node.store.agents.create({"name": "gpt", "model": "openai-chat:gpt-4o"})
    reason = "model openai-chat:gpt-4o: OPENAI_API_KEY is not set"
    # the socket's error frame carries the reason and the execution id
    ws_url = live.url.replace("http://", "ws://") + "/dashboard/chat/gpt/ws?user=kim"
    auth = {"Authorization": f"Bearer {live.admin_key}"}
    async with websockets.connect(ws_url, additional_headers=auth) as ws:
        await ws.recv()
        await ws.send(json.dumps({"message": "hello"}))
        error = (await _frames(ws, "error"))[-1]
    assert error["status"] == 502 and error["detail"] == reason and error["execution_id"]
    assert error["problem_type"].endswith("/model-unavailable")
    # and the page shows it
    context = await browser.new_context()
    page = await context.new_page()
    await _sign_in(page, live)
    await page.goto(live.url + "/chat/gpt")
    await page.wait_for_selector("#session-id:has-text('gpt-bootstrap-admin')")
    await page.fill("#chat-input", "Hello")
    await page.click("#chat-send")
    line = page.locator("#transcript li.error")
    await line.wait_for(timeout=10_000)
    shown = await line.locator(".body").inner_text()
    assert shown.startswith(f"Model unavailable: {reason} execution ")
    assert "TurnError" not in shown
    execution = await line.get_attribute("data-execution")
    r = await live.admin.get(f"/api/v1/executions/{execution}")
    assert r.status_code == 200 and r.json()["error"].endswith(reason)
    # the session's page lists the failed execution with its reason (the chat still owns it)
    detail = await context.new_page()
    await detail.goto(live.url + "/sessions/gpt-bootstrap-admin")
    failed = detail.locator(f'#executions li.exec[data-execution="{execution}"]')
    assert await failed.locator(".state").first.inner_text() == "failed"
    assert (await failed.locator(".exec-error").inner_text()).endswith(reason)
    assert "openai-chat:gpt-4o" in await failed.locator("code").first.inner_text()
    await context.close()
