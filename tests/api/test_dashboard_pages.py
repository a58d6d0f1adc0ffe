"""Issue 20 (items 1, 3, 8) in a real browser: the chat (bubbles, Markdown without raw HTML,
streamed tokens, tool chips, history on reload, keyboard), the sessions list and a session's
page (executions as a delegation tree, cancel/restart/stop with the API's role checks), and
the quality bar (local times, empty states, HTML error pages, 390 px, favicon, themes, no
asset from elsewhere).

Screenshots go to ``test-artifacts/dashboard/``; with ``NETSUKE_SHOTS=docs/dashboard`` they
are written there instead (how the committed ones in docs/dashboard/ are made)."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic_ai import models

from ..agents.fake_openai import FakeOpenAI, _handler
from .conftest import Live
from .test_dashboard_browser import ARTIFACTS, browser  # noqa: F401 (fixture)

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / os.environ["NETSUKE_SHOTS"] if os.environ.get("NETSUKE_SHOTS") else ARTIFACTS
XSS = "<img src=x onerror=window.__xss=1><script>window.__xss=2</script>"
DELEGATE = 'please use delegate_to_summarizer with "long findings"'


async def _shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / name), full_page=True)


async def _signed_in(chromium: Any, live: Live, key: str, **options: Any) -> tuple[Any, Any]:
    """A new context and page signed in with ``key`` (the login form)."""
    context = await chromium.new_context(**options)
    page = await context.new_page()
    await page.goto(live.url + "/login")
    await page.fill("#key", key)
    await page.press("#key", "Enter")
    await page.wait_for_url(live.url + "/")
    return context, page


async def _agents(live: Live) -> None:
    store = live.node.store.agents
    await store.create({"name": "summarizer", "system_prompt": "Condense"})
    await store.create({"name": "researcher", "delegates": ["summarizer"], "max_chain_depth": 2})


async def _no_overflow(page: Any) -> None:
    width = await page.evaluate("() => document.documentElement.scrollWidth")
    viewport = await page.evaluate("() => window.innerWidth")
    assert width <= viewport, f"{page.url}: {width} px wide in a {viewport} px viewport"


@pytest.mark.timeout(120)
async def test_chat_streams_renders_markdown_safely_and_keeps_history(
    live: Live,
    browser: Any,  # noqa: F811
) -> None:
    await _agents(live)
    context, page = await _signed_in(browser, live, live.admin_key)
    outside: list[str] = []
    page.on("request", lambda r: None if r.url.startswith(live.url.replace("http", "ws")) or r.url.startswith(live.url) else outside.append(r.url))  # fmt: skip
    frames: list[dict[str, Any]] = []
    page.on(
        "websocket",
        lambda ws: ws.on(
            "framereceived", lambda data: frames.append(json.loads(data)) if "chat" in ws.url else None
        ),
    )  # fmt: skip
    await page.goto(live.url + "/chat/researcher")
    assert await page.locator("#chat-empty").is_visible()  # an empty state
    assert await page.get_attribute("#owner-policy", "data-policy") == "stop"
    assert "closing it stops the session" in await page.inner_text("#owner-policy")
    await page.wait_for_selector("#chat-send:enabled")

    # Shift+Enter is a new line, Enter sends
    await page.focus("#chat-input")
    await page.keyboard.type("Hello **world** and `x = 1`")
    await page.keyboard.press("Shift+Enter")
    await page.keyboard.type(XSS)
    assert await page.input_value("#chat-input") == f"Hello **world** and `x = 1`\n{XSS}"
    assert await page.locator("#transcript li.user").count() == 0
    await page.keyboard.press("Enter")
    reply = page.locator("#transcript li.agent[data-done]")
    await reply.wait_for(timeout=10_000)
    assert await page.input_value("#chat-input") == ""
    # streamed: the reply came as several delta frames before the completed one
    kinds = [f["type"] for f in frames]
    assert kinds.count("delta") > 3 and kinds.index("delta") < kinds.index("completed")
    user = page.locator("#transcript li.user .body")
    assert await user.inner_text() == f"Hello **world** and `x = 1`\n{XSS}"  # shown as typed
    body = reply.locator(".body")
    assert await body.locator("strong").inner_text() == "world"
    assert await body.locator("code").first.inner_text() == "x = 1"
    # nothing the user (or the model, echoing it) wrote became markup
    assert await page.locator("#transcript img, #transcript script").count() == 0
    assert await page.evaluate("() => window.__xss") is None
    assert "<img src=x" in await body.inner_text()
    assert await reply.locator(".meta time[datetime]").count() == 1

    # a tool call is a chip with its arguments and result
    await page.fill("#chat-input", DELEGATE)
    await page.press("#chat-input", "Enter")
    second = page.locator("#transcript li.agent[data-done]").nth(1)
    await second.wait_for(timeout=15_000)
    chip = second.locator("details.tool")
    assert await chip.locator("summary").inner_text() == "delegate_to_summarizer"
    assert not await chip.locator(".args").is_visible()  # collapsed
    await chip.locator("summary").click()
    assert "long findings" in await chip.locator(".args").inner_text()
    assert "long findings" in await chip.locator(".result").inner_text()
    await _shot(page, "chat-light.png")
    await page.click("#theme-toggle")
    assert await page.evaluate("() => document.documentElement.dataset.theme") == "dark"
    await _shot(page, "chat-dark.png")

    # reload: the history is there, rendered the same way, still inert
    await page.reload()
    await page.wait_for_selector("#chat-send:enabled")
    assert await page.evaluate("() => document.documentElement.dataset.theme") == "dark"
    assert await page.locator("#transcript li.user").count() == 2
    assert await page.locator("#transcript li.agent").count() == 2
    assert not await page.locator("#chat-empty").is_visible()
    old = page.locator("#transcript li.agent").first.locator(".body")
    assert await old.locator("strong").inner_text() == "world"
    assert await page.locator("#transcript img, #transcript script").count() == 0
    assert await page.evaluate("() => window.__xss") is None
    chip = page.locator("#transcript li.agent details.tool").first
    await chip.locator("summary").click()
    assert "long findings" in await chip.locator(".result").inner_text()
    texts = await page.locator("#transcript time").all_inner_texts()
    assert texts and all(not t.strip().isdigit() for t in texts)
    assert outside == []  # no asset from a CDN or any other host
    await context.close()

    # 390 px (a phone): no horizontal overflow
    context, phone = await _signed_in(
        browser, live, live.admin_key, viewport={"width": 390, "height": 844}
    )
    await phone.goto(live.url + "/chat/researcher")
    await phone.wait_for_selector("#chat-send:enabled")
    await _no_overflow(phone)
    await _shot(phone, "chat-390.png")
    await context.close()


@pytest.mark.timeout(120)
async def test_session_page_executions_tree_and_role_checked_actions(
    live: Live,
    browser: Any,  # noqa: F811
) -> None:
    await _agents(live)
    admin = live.admin
    for user in ("ann", "lee"):
        assert (
            await admin.post("/api/v1/sessions", json={"agent": "researcher", "user": user})
        ).is_success
    r = await admin.post("/api/v1/sessions/researcher-ann/messages", json={"message": DELEGATE})
    assert r.status_code == 200, r.text
    root = r.json()["execution_id"]
    r = await admin.post("/api/v1/sessions/researcher-lee/messages", json={"message": "hi"})
    assert r.status_code == 200

    context, page = await _signed_in(browser, live, live.admin_key)
    await page.click("#nav-sessions")
    await page.wait_for_url(live.url + "/sessions")
    assert await page.get_attribute("#nav-sessions", "aria-current") == "page"
    row = page.locator('#sessions tr[data-session="researcher-ann"]')
    assert await row.locator("time[datetime]").count() == 1
    assert not (await row.locator("time").inner_text()).strip().isdigit()
    await row.locator("a").click()
    await page.wait_for_url(live.url + "/sessions/researcher-ann")
    # the delegation chain as a tree: the researcher's turn, the summarizer's under it
    top = page.locator(f'#executions > li.exec[data-execution="{root}"]')
    assert await top.locator(".state").first.inner_text() == "succeeded"
    child = top.locator("ul.tree > li.exec")
    assert await child.count() == 1
    assert "summarizer" in await child.locator("strong").inner_text()
    assert await top.locator(".duration").first.inner_text() != ""
    assert "offline" in await top.locator("code").first.inner_text()  # the model
    assert await page.locator("#transcript li.agent details.tool").count() == 1
    await _shot(page, "session-light.png")
    await page.emulate_media(color_scheme="dark")
    bg = await page.evaluate("() => getComputedStyle(document.body).backgroundColor")
    assert bg == "rgb(15, 18, 23)"  # --bg of the dark theme
    await _shot(page, "session-dark.png")
    await page.emulate_media(color_scheme="light")

    # live: a turn through the API shows up without a reload (htmx reloads the panel)
    await page.wait_for_selector("#live.on")
    r = await admin.post("/api/v1/sessions/researcher-ann/messages", json={"message": "again"})
    assert r.status_code == 200
    await page.wait_for_selector("#session-turns:has-text('2')", timeout=10_000)
    assert await page.locator("#executions > li.exec").count() == 2

    # cancel (no turn runs), restart (a new process, counted), stop (after a confirmation)
    await page.click("#cancel-turn")
    await page.wait_for_selector("#action-result:has-text('no turn was running')")
    assert live.node.agents is not None
    before = live.node.agents.whereis("researcher-ann")
    await page.click("#restart-session")
    await page.wait_for_selector("#session-restarts:has-text('1')", timeout=10_000)
    after = live.node.agents.whereis("researcher-ann")
    assert after is not None and after != before
    assert await page.inner_text("#action-result") == "restarted"  # kept over the reload
    shown = await page.locator("#session-panel time").first.inner_text()
    assert shown and "T" not in shown and "+00:00" not in shown  # local, also after a swap
    page.once("dialog", lambda d: d.accept())
    await page.click("#stop-session")
    await page.wait_for_selector("#session-state .state:has-text('stopped')", timeout=10_000)
    assert live.node.agents.whereis("researcher-ann") is None
    assert await page.locator("#stop-session").is_disabled()
    await context.close()

    # a user key: its own session, restart disabled and refused by the server anyway
    lee = await live.key("user", "lee")
    context, page = await _signed_in(browser, live, lee)
    await page.goto(live.url + "/sessions")
    assert await page.locator("#sessions tbody tr").count() == 1  # only its own
    await page.goto(live.url + "/sessions/researcher-lee")
    assert await page.locator("#restart-session").is_disabled()
    assert "operator" in (await page.get_attribute("#restart-session", "title") or "")
    assert await page.locator("#cancel-turn").is_enabled()
    refused = await page.evaluate(
        "async () => (await Netsuke.api('POST', '/api/v1/sessions/researcher-lee/restart')).status"
    )
    assert refused == 403
    assert live.node.agents.whereis("researcher-lee") is not None
    # another user's session does not exist for it: an HTML 404 page
    response = await page.goto(live.url + "/sessions/researcher-ann")
    assert response is not None and response.status == 404
    assert await page.locator("#error-page[data-status='404']").count() == 1
    assert await page.locator("nav.main").count() == 1  # the base layout
    response = await page.goto(live.url + "/chat/researcher?user=ann")  # chat as another
    assert response is not None and response.status == 403
    assert "a user key may only chat as itself" in await page.inner_text("#error-detail")
    await context.close()


@pytest.mark.timeout(60)
async def test_the_cookie_mutates_only_from_the_dashboard(live: Live) -> None:
    await live.node.store.agents.create({"name": "greeter"})
    admin = live.admin
    await admin.post("/api/v1/sessions", json={"agent": "greeter", "user": "kai"})
    cookie = {"netsuke_key": live.admin_key}
    url = "/api/v1/sessions/greeter-kai/cancel"
    async with httpx.AsyncClient(base_url=live.url, cookies=cookie, timeout=10) as browserish:
        assert (await browserish.post(url)).status_code == 401  # no header: a plain form post
        evil = {"X-Netsuke-Dashboard": "1", "Origin": "http://evil.example"}
        assert (await browserish.post(url, headers=evil)).status_code == 401
        mine = {"X-Netsuke-Dashboard": "1", "Origin": live.url}
        r = await browserish.post(url, headers=mine)
        assert r.status_code == 200 and r.json() == {
            "session_id": "greeter-kai",
            "cancelled": False,
        }
        assert (await browserish.delete("/api/v1/sessions/greeter-kai")).status_code == 401
    assert live.node.agents is not None and live.node.agents.whereis("greeter-kai") is not None
    user = live.client(await live.key("user", "kai"))
    assert (await user.post("/api/v1/sessions/greeter-kai/restart")).status_code == 403
    assert (await admin.post("/api/v1/sessions/greeter-kai/restart")).json()["restarted"] is True
    assert (await admin.delete("/api/v1/sessions/greeter-kai")).status_code == 204
    r = await admin.post("/api/v1/sessions/greeter-kai/restart")
    assert r.status_code == 409


@pytest.mark.timeout(90)
async def test_quality_bar_error_pages_favicon_themes_and_phone_width(
    live: Live,
    browser: Any,  # noqa: F811
) -> None:
    await _agents(live)
    admin = live.admin
    await admin.post("/api/v1/sessions", json={"agent": "researcher", "user": "ann"})
    await admin.post("/api/v1/sessions/researcher-ann/messages", json={"message": "hi"})
    # the JSON API keeps problem+json, even for a browser's Accept
    r = await admin.get("/api/v1/agents/ghost", headers={"Accept": "text/html"})
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    r = await admin.get("/favicon.ico")
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml")

    failed: list[str] = []
    context = await browser.new_context()
    page = await context.new_page()
    page.on("response", lambda resp: failed.append(resp.url) if resp.status >= 400 else None)
    await page.goto(live.url + "/login")
    await _shot(page, "login-light.png")
    await page.emulate_media(color_scheme="dark")
    await _shot(page, "login-dark.png")
    await page.emulate_media(color_scheme="light")
    assert await page.get_attribute("link[rel=icon]", "href") == "/static/favicon.svg"
    await page.keyboard.press("Tab")  # keyboard: the first stop skips to the content
    assert await page.evaluate("() => document.activeElement.className") == "skip"
    await page.fill("#key", live.admin_key)
    await page.press("#key", "Enter")
    await page.wait_for_url(live.url + "/")
    assert failed == []  # no missing asset (favicon included)
    texts = await page.locator("#sessions time").all_inner_texts()
    assert texts and all(not t.strip().isdigit() for t in texts)
    assert await page.locator("#no-events").is_visible()  # empty state with text
    for scheme in ("light", "dark"):
        await page.emulate_media(color_scheme=scheme)
        for path, name in [("/", "overview"), ("/sessions", "sessions")]:
            await page.goto(live.url + path)
            await page.wait_for_selector("#live.on")
            await _shot(page, f"{name}-{scheme}.png")
    await page.emulate_media(color_scheme="light")

    for path, title in [
        ("/nowhere", "Not found"),
        ("/chat/ghost", "Not found"),
        ("/agents/ghost", "Not found"),
    ]:
        response = await page.goto(live.url + path)
        assert response is not None and response.status == 404
        assert response.headers["content-type"].startswith("text/html")
        assert title in await page.inner_text("#error-page h1")
    await _shot(page, "error-404-light.png")
    await page.emulate_media(color_scheme="dark")
    await _shot(page, "error-404-dark.png")

    # dark: from the system, and the toggle's choice survives a reload
    await page.emulate_media(color_scheme="dark")
    await page.goto(live.url + "/")
    dark_bg = await page.evaluate("() => getComputedStyle(document.body).backgroundColor")
    assert dark_bg == "rgb(15, 18, 23)"
    await page.click("#theme-toggle")
    await page.reload()
    assert await page.evaluate("() => document.documentElement.dataset.theme") == "light"
    light_bg = await page.evaluate("() => getComputedStyle(document.body).backgroundColor")
    assert light_bg == "rgb(246, 247, 249)"
    await context.close()

    context = await browser.new_context(
        viewport={"width": 390, "height": 844}, color_scheme="light"
    )
    page = await context.new_page()
    await page.goto(live.url + "/login")
    await _no_overflow(page)
    await page.fill("#key", live.admin_key)
    await page.press("#key", "Enter")
    await page.wait_for_url(live.url + "/")
    for path in ["/", "/sessions", "/sessions/researcher-ann", "/nowhere"]:
        await page.goto(live.url + path)
        await _no_overflow(page)
    await page.goto(live.url + "/")
    await _shot(page, "overview-390.png")
    await context.close()


async def test_an_internal_error_is_an_html_page_for_a_browser_only() -> None:
    from fastapi import FastAPI

    from netsuke.api._pages import html_error
    from netsuke.api._problems import install_problem_handlers

    app = FastAPI()
    install_problem_handlers(app, html=html_error)

    @app.get("/page")
    async def page() -> None:
        raise RuntimeError("boom: a secret detail")

    @app.get("/api/v1/thing")
    async def thing() -> None:
        raise RuntimeError("boom")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        r = await client.get("/page", headers={"Accept": "text/html"})
        assert r.status_code == 500 and r.headers["content-type"].startswith("text/html")
        assert "Internal server error" in r.text and "secret" not in r.text
        r = await client.get("/page")  # no text/html: a program
        assert r.headers["content-type"] == "application/problem+json"
        r = await client.get("/api/v1/thing", headers={"Accept": "text/html"})
        assert r.status_code == 500 and r.headers["content-type"] == "application/problem+json"


class _HeldOpenAI(FakeOpenAI):
    """A fake model server that holds every request until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def reply(self, body: dict[str, Any]) -> dict[str, Any]:
        self.entered.set()
        self.release.wait(30)
        return super().reply(body)


@contextmanager
def _held_model() -> Iterator[_HeldOpenAI]:
    fake = _HeldOpenAI()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    fake.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.mark.timeout(90)
async def test_cancel_a_running_turn_from_the_session_page(
    live_factory: Any,
    browser: Any,  # noqa: F811
) -> None:
    with _held_model() as fake, models.override_allow_model_requests(True):
        async with live_factory(model_allow_hosts="127.0.0.1") as live:
            await live.node.store.agents.create(
                {"name": "slow", "model": "openai-compatible:m", "config": {"base_url": fake.url}}
            )
            context, chat = await _signed_in(browser, live, live.admin_key)
            await chat.goto(live.url + "/chat/slow")
            await chat.wait_for_selector("#chat-send:enabled")
            await chat.fill("#chat-input", "take your time")
            await chat.press("#chat-input", "Enter")
            await asyncio.to_thread(fake.entered.wait, 10)  # the turn is running
            page = await context.new_page()
            await page.goto(live.url + "/sessions/slow-bootstrap-admin")
            await page.click("#cancel-turn")
            await page.wait_for_selector("#action-result:has-text('turn cancelled')")
            # the chat shows why its turn ended, and takes the next message
            error = chat.locator("#transcript li.error")
            await error.wait_for(timeout=10_000)
            assert (await error.locator(".body").inner_text()).startswith(
                "Turn cancelled: the turn was cancelled"
            )
            assert await error.get_attribute("data-status") == "409"
            await chat.wait_for_selector("#chat-send:enabled")
            fake.release.set()
            await page.reload()
            cancelled = page.locator("#executions li.exec .state:has-text('cancelled')")
            assert await cancelled.count() == 1
            await context.close()


CODE = "Here is the fix:\n\n```python\nprint('<b>not bold</b>')\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |"


@pytest.mark.timeout(90)
async def test_a_code_block_from_the_model_is_rendered_as_code(
    live_factory: Any,
    browser: Any,  # noqa: F811
) -> None:
    """A model (the fake OpenAI server, echoing) answers with a fenced code block and a table:
    rendered as <pre><code> and <table>, its HTML-looking text left as text."""
    with _held_model() as fake, models.override_allow_model_requests(True):
        fake.release.set()
        async with live_factory(model_allow_hosts="127.0.0.1") as live:
            await live.node.store.agents.create(
                {"name": "coder", "model": "openai-compatible:m", "config": {"base_url": fake.url}}
            )
            context, page = await _signed_in(browser, live, live.admin_key)
            await page.goto(live.url + "/chat/coder")
            await page.wait_for_selector("#chat-send:enabled")
            await page.fill("#chat-input", CODE)
            await page.press("#chat-input", "Enter")
            reply = page.locator("#transcript li.agent[data-done] .body")
            await reply.wait_for(timeout=10_000)
            for body in (reply, None):
                if body is None:  # the same from the history
                    await page.reload()
                    body = page.locator("#transcript li.agent .body")
                code = body.locator("pre > code.language-python")
                assert (await code.inner_text()).strip() == "print('<b>not bold</b>')"
                assert await body.locator("b").count() == 0
                assert await body.locator("table td").all_inner_texts() == ["1", "2"]
            await _shot(page, "chat-code-light.png")
            await context.close()


@pytest.mark.timeout(90)
async def test_after_a_node_restart_stored_sessions_are_listed_with_their_history(
    live_factory: Any,
    browser: Any,  # noqa: F811
) -> None:
    async with live_factory() as first:
        await first.node.store.agents.create({"name": "greeter"})
        admin = first.admin
        await admin.post("/api/v1/sessions", json={"agent": "greeter", "user": "ann"})
        r = await admin.post("/api/v1/sessions/greeter-ann/messages", json={"message": "remember"})
        assert r.status_code == 200
    async with live_factory() as live:  # the same database, a new node: nothing seen yet
        context, page = await _signed_in(browser, live, live.admin_key)
        await page.goto(live.url + "/sessions")
        row = page.locator('#sessions tr[data-session="greeter-ann"]')
        assert await row.locator(".state").inner_text() == "stopped"
        assert not await page.locator("#no-sessions").is_visible()
        await row.locator("a").click()
        await page.wait_for_url(live.url + "/sessions/greeter-ann")
        assert await page.locator("#transcript li.user .body").inner_text() == "remember"
        assert await page.locator("#stop-session").is_disabled()
        await context.close()
