"""The dashboard's operations pages in a real browser (and their server-side refusals):
agents (editor with live validation, versions, diff, rollback, charts, live logs), role-gated
admin pages, the action forwarding's CSRF guard, local times and the 390 px layout.

Screenshots go to ``test-artifacts/dashboard/`` or, with ``NETSUKE_DASHBOARD_SHOTS=DIR``
(``scripts/dashboard_shots.sh``), to that folder (``docs/dashboard/``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from .conftest import Live
from .test_dashboard_browser import ARTIFACTS, browser  # noqa: F401 (fixture)

SHOTS = Path(os.environ.get("NETSUKE_DASHBOARD_SHOTS") or ARTIFACTS)


async def sign_in_at(page: Any, live: Live, key: str, path: str) -> None:
    """Sign in through ``POST /dashboard/login`` (the cookie lands in the page's context) and
    open ``path``."""
    r = await page.context.request.post(live.url + "/dashboard/login", data={"key": key})
    assert r.status == 204
    await page.goto(live.url + path)


def shots_dir() -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    return SHOTS


async def shot(page: Any, name: str) -> None:
    await page.screenshot(path=str(shots_dir() / name), full_page=True)


async def no_overflow_at_390(page: Any) -> None:
    """The page fits a 390 px wide screen: nothing scrolls the page sideways."""
    await page.set_viewport_size({"width": 390, "height": 844})
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"{page.url}: {width}px wide at 390"


async def times_are_local(page: Any) -> None:
    """Every ``<time>`` has an ISO ``datetime`` and shows a local, readable time."""
    values = await page.locator("time").evaluate_all(
        "ts => ts.map(t => [t.getAttribute('datetime'), t.textContent, t.title])"
    )
    for iso, text, title in values:
        assert iso and "T" in iso and title == iso, (iso, text)
        assert not text.strip().isdigit() and "UTC" not in text, text


# ------------------------------------------------------------------ actions guard


async def test_dashboard_actions_need_the_cookie_the_header_and_this_origin(live: Live) -> None:
    """The pages' actions call the API with the cookie: taken for a write only with the
    dashboard's header and this server's Origin (``deps.cookie_allowed``)."""
    cookie = f"netsuke_key={live.admin_key}"
    body = {"name": "via-dash", "model": "offline"}
    header = {"X-Netsuke-Dashboard": "1"}
    no_header = live.client(Cookie=cookie, Origin=live.url)
    assert (await no_header.post("/api/v1/agents", json=body)).status_code == 401
    other_origin = live.client(Cookie=cookie, Origin="http://evil.example")
    assert (await other_origin.post("/api/v1/agents", json=body, headers=header)).status_code == 401
    no_cookie = live.client(Origin=live.url)
    assert (await no_cookie.post("/api/v1/agents", json=body, headers=header)).status_code == 401
    assert not await live.node.store.agents.exists("via-dash")
    ok = live.client(Cookie=cookie, Origin=live.url)
    r = await ok.post("/api/v1/agents", json=body, headers=header)
    assert r.status_code == 201 and r.headers["etag"] == '"1"'
    assert await live.node.store.agents.exists("via-dash")
    # the API's own checks apply: a user key from the dashboard is refused by role
    user_key = await live.key("user", "ann")
    as_user = live.client(Cookie=f"netsuke_key={user_key}", Origin=live.url)
    r = await as_user.post("/api/v1/agents", json={"name": "nope"}, headers=header)
    assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json"


# ------------------------------------------------------------------ agents API parts


async def test_draft_check_names_fields_and_parses_yaml(live: Live) -> None:
    op = live.client(await live.key("operator"))
    r = await op.post("/api/v1/agent-drafts/check", json={"name": "9bad", "max_chain_depth": -1})
    assert r.status_code == 422
    fields = {e["field"] for e in r.json()["errors"]}
    assert "name" in fields
    r = await op.post("/api/v1/agent-drafts/check", json={"yaml": "name: [unclosed"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "yaml"
    assert "line" in r.json()["errors"][0]["reason"]
    r = await op.post("/api/v1/agent-drafts/check", json={"yaml": "name: ok\nmodle: offline\n"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "modle"
    r = await op.post(
        "/api/v1/agent-drafts/check", json={"yaml": "name: ok\ncapabilities: [a, b]\n"}
    )
    assert r.status_code == 200
    assert r.json()["draft"]["capabilities"] == ["a", "b"] and "name: ok" in r.json()["yaml"]
    assert not await live.node.store.agents.exists("ok")  # nothing stored
    user = live.client(await live.key("user", "ann"))
    assert (await user.post("/api/v1/agent-drafts/check", json={"name": "x"})).status_code == 403


async def test_series_buckets_the_stored_turns(live: Live) -> None:
    await live.admin.post("/api/v1/agents", json={"name": "talker", "model": "offline"})
    await live.admin.post("/api/v1/sessions", json={"agent": "talker", "user": "ann"})
    for i in range(3):
        r = await live.admin.post(
            "/api/v1/sessions/talker-ann/messages", json={"message": f"hello {i}"}
        )
        assert r.status_code == 200
    op = live.client(await live.key("operator"))
    r = await op.get("/api/v1/agents/talker/series?window=600&step=60")
    assert r.status_code == 200
    s = r.json()
    assert len(s["t"]) == 10 and s["t"] == sorted(s["t"])
    assert sum(s["turns"]) == 3 and sum(s["errors"]) == 0
    assert sum(s["tokens_out"]) > 0
    bucket = max(range(10), key=lambda i: s["turns"][i])
    assert s["p50_ms"][bucket] is not None and s["p99_ms"][bucket] >= s["p50_ms"][bucket]
    assert (await op.get("/api/v1/agents/ghost/series")).status_code == 404
    assert (await op.get("/api/v1/agents/talker/series?window=86400&step=60")).status_code == 422
    user = live.client(await live.key("user", "ann"))
    assert (await user.get("/api/v1/agents/talker/series")).status_code == 403


# ------------------------------------------------------------------ agents in the browser


@pytest.mark.timeout(120)
async def test_create_edit_diff_and_roll_back_an_agent(live: Live, browser: Any) -> None:  # noqa: F811
    page = await browser.new_page()
    await sign_in_at(page, live, live.admin_key, "/agents")
    assert "No agents yet" in await page.locator("#no-agents").inner_text()
    await shot(page, "ops-02-agents-empty.png")
    # the list follows definition changes live
    await page.wait_for_selector("body[data-ops-live='1']")
    r = await live.admin.post("/api/v1/agents", json={"name": "other", "description": "live"})
    assert r.status_code == 201
    await page.wait_for_selector("#agents-list tr[data-agent='other']:has-text('live')")
    await times_are_local(page)
    await page.click("#new-agent")
    await page.wait_for_url(live.url + "/agents/new")
    await page.wait_for_selector("#check-status:has-text('Valid')")
    # live validation, by field
    await page.fill("#f-name", "9bad")
    await page.wait_for_selector(".ops-field-error[data-field='name']:not(:empty)")
    assert await page.get_attribute("#f-name", "aria-invalid") == "true"
    await page.fill("#f-name", "helper")
    await page.fill("#f-model", "nosuchprovider:x")
    await page.wait_for_selector(".ops-field-error[data-field='model']:not(:empty)")
    await shot(page, "ops-03-agent-editor-errors.png")
    await page.fill("#f-model", "offline")
    await page.fill("#f-capabilities", "search, summarize")
    await page.wait_for_selector("#check-status:has-text('Valid')")
    # the YAML editor: kept in step, checked too (keyboard: arrow keys switch tabs)
    await page.focus("#tab-form")
    await page.keyboard.press("ArrowRight")
    await page.wait_for_selector("#pane-yaml:not([hidden])")
    assert "- summarize" in await page.input_value("#f-yaml")
    await page.fill("#f-yaml", "name: helper\nmodel: offline\ncapabilities: [search\n")
    await page.wait_for_selector(".ops-field-error[data-field='yaml']:has-text('invalid YAML')")
    await page.fill(
        "#f-yaml", "name: helper\nmodel: offline\ndescription: first\ncapabilities: [search]\n"
    )
    await page.wait_for_selector("#check-status:has-text('Valid')")
    await shot(page, "ops-04-agent-editor-yaml.png")
    await page.click("#save")
    await page.wait_for_url(live.url + "/agents/helper")
    created = await live.node.store.agents.get("helper")
    assert (created.version, created.description, created.capabilities) == (
        1,
        "first",
        ["search"],
    )
    # fields the form does not show are kept by an edit in the form
    r = await live.admin.patch(
        "/api/v1/agents/helper",
        json={"config": {"idle_hibernate": 5}, "model_settings": {"temperature": 0.5}},
    )
    assert r.status_code == 200 and r.json()["version"] == 2
    # edit through the form: version 3
    await page.goto(live.url + "/agents/helper")
    await page.click("#edit-link")
    await page.wait_for_selector("#check-status:has-text('Valid')")
    assert await page.input_value("#f-description") == "first"
    await page.fill("#f-description", "second")
    await page.wait_for_selector("#check-status:has-text('Valid')")
    await page.click("#save")
    await page.wait_for_url(live.url + "/agents/helper")
    assert await page.locator("#version").inner_text() == "3"
    edited = await live.node.store.agents.get("helper")
    assert edited.description == "second" and edited.config == {"idle_hibernate": 5}
    assert edited.model_settings.temperature == 0.5
    diff = await page.locator("#diff").inner_text()
    assert "- description: first" in diff and "+ description: second" in diff
    await times_are_local(page)
    # roll back to 1: a new version 3 with version 1's content; the page reloads by push
    await page.wait_for_selector("body[data-ops-live='1']")
    await page.focus("button.rollback[data-version='1']")  # by keyboard
    await page.keyboard.press("Enter")
    await page.wait_for_selector("#version:has-text('4')", timeout=10_000)
    rolled = await live.node.store.agents.get("helper")
    assert (rolled.description, rolled.config) == ("first", {})
    assert await page.locator("#versions tbody tr").count() == 4
    await shot(page, "ops-05-agent-versions-diff.png")
    await no_overflow_at_390(page)
    await page.close()


@pytest.mark.timeout(120)
async def test_agent_charts_and_logs_follow_live(live: Live, browser: Any) -> None:  # noqa: F811
    await live.admin.post("/api/v1/agents", json={"name": "talker", "model": "offline"})
    await live.admin.post("/api/v1/sessions", json={"agent": "talker", "user": "ann"})
    await live.admin.post("/api/v1/sessions/talker-ann/messages", json={"message": "one"})
    page = await browser.new_page()
    await sign_in_at(page, live, live.admin_key, "/agents/talker")
    await page.wait_for_selector("#chart-turns canvas")
    assert await page.locator("#charts canvas").count() >= 3
    assert await page.locator("#charts-empty").is_hidden()
    await page.wait_for_selector("body[data-ops-live='1']")
    r = await live.admin.post("/api/v1/sessions/talker-ann/messages", json={"message": "two"})
    assert r.status_code == 200
    await page.wait_for_selector("#m-turns:has-text('2')", timeout=10_000)
    await page.wait_for_selector("#logs li:has-text('turn.finished talker-ann succeeded')")
    await times_are_local(page)
    await shot(page, "ops-06-agent-metrics-charts-logs.png")
    # a theme switch redraws the charts in the theme's colours
    await page.evaluate(
        "window.__canvas = document.querySelector('#chart-turns canvas');"
        "document.documentElement.dataset.theme = 'dark'"
    )
    await page.wait_for_function(
        "(() => { const c = document.querySelector('#chart-turns canvas');"
        " return c !== null && c !== window.__canvas; })()"
    )
    assert await page.locator("#charts canvas").count() == 3
    await no_overflow_at_390(page)
    await page.close()


# ------------------------------------------------------------------ role-gated pages


@pytest.mark.timeout(120)
async def test_admin_pages_for_admins_only(live: Live, browser: Any) -> None:  # noqa: F811
    operator_key = await live.key("operator", "olga")
    # the server refuses: pages answer 403 without data, the API 403
    op = live.client(Cookie=f"netsuke_key={operator_key}")
    for path in ("/keys", "/webhooks", "/audit"):
        r = await op.get(path)
        assert r.status_code == 403 and "needs the <strong>admin</strong> role" in r.text
        assert "bootstrap-admin" not in r.text
    user_key = await live.key("user", "ann")
    as_user = live.client(Cookie=f"netsuke_key={user_key}")
    for path in ("/tree", "/dead-letters", "/workflows", "/keys", "/agents/new"):
        assert (await as_user.get(path)).status_code == 403, path
    assert (await live.client().get("/keys")).status_code == 303  # not signed in: /login
    # a user sees an agent's definition and versions, not its metrics or logs
    await live.admin.post("/api/v1/agents", json={"name": "shown"})
    r = await as_user.get("/agents/shown")
    assert r.status_code == 200 and 'id="definition"' in r.text
    assert 'id="metrics"' not in r.text and 'id="logs"' not in r.text
    assert "rollback" not in r.text and "/agents/shown/edit" not in r.text

    page = await browser.new_page()
    await sign_in_at(page, live, live.admin_key, "/keys")
    assert await page.locator("#keys tr[data-key]").count() == 3
    await page.fill("#key-name", "newbie")
    await page.select_option("#key-role", "user")
    await page.click("#key-form button[type=submit]")
    await page.wait_for_selector("#new-secret:not([hidden])")
    secret = await page.locator("#secret").inner_text()
    assert secret.startswith("nsk_")
    await page.wait_for_selector("#keys tr:has-text('newbie')")
    await times_are_local(page)
    await shot(page, "ops-07-keys.png")
    await no_overflow_at_390(page)
    await page.set_viewport_size({"width": 1280, "height": 800})
    prefix = secret.split("_")[1]
    page.on("dialog", lambda d: d.accept())
    await page.click(f"button.revoke[data-key='{prefix}']")
    await page.wait_for_selector(f"tr[data-key='{prefix}'] .state:has-text('revoked')")
    assert (await live.client(secret).get("/api/v1/agents")).status_code == 401

    await page.goto(live.url + "/audit")
    await page.wait_for_selector("#audit tr:has-text('key')")
    await page.fill("#audit-filter input[name=action]", "no.such.action")
    await page.click("#audit-filter button[type=submit]")
    await page.wait_for_selector("#no-audit:has-text('No entry matches')")
    await page.fill("#audit-filter input[name=action]", "")
    await page.click("#audit-filter button[type=submit]")
    await page.wait_for_selector("#audit tr:has-text('key')")
    await times_are_local(page)
    await shot(page, "ops-09-audit.png")
    await no_overflow_at_390(page)
    await page.close()

    # the operator's browser: the 403 page, not the data
    page = await browser.new_page()
    await sign_in_at(page, live, operator_key, "/audit")
    assert "needs the admin role" in await page.locator("#denied").inner_text()
    await page.close()


@pytest.mark.timeout(90)
async def test_webhooks_page_registers_refuses_by_field_and_deletes(
    live_factory: Callable[..., AbstractAsyncContextManager[Live]],
    browser: Any,  # noqa: F811
) -> None:
    async with live_factory(allow_private_webhooks=True) as live:
        page = await browser.new_page()
        await sign_in_at(page, live, live.admin_key, "/webhooks")
        assert "No webhooks" in await page.locator("#no-webhooks").inner_text()
        # refused by the API, shown by field
        await page.fill("#hook-url", "ftp://127.0.0.1/hook")
        await page.fill("#hook-topics", "agent.*")
        await page.click("#hook-form button[type=submit]")
        await page.wait_for_selector(".ops-field-error[data-field='url']:not(:empty)")
        assert await page.get_attribute("#hook-url", "aria-invalid") == "true"
        assert (await live.node.store.webhooks.list()).items == []
        await page.fill("#hook-url", "http://127.0.0.1:9/hook")
        await page.fill("#hook-topics", "agent.*, task.failed")
        await page.click("#hook-form button[type=submit]")
        await page.wait_for_selector("#new-secret:not([hidden])")
        assert (await page.locator("#secret").inner_text()).startswith("whsec_")
        await page.wait_for_selector("#webhooks tr:has-text('127.0.0.1:9')")
        [hook] = (await live.node.store.webhooks.list()).items
        assert hook.topics == ["agent.*", "task.failed"]
        await times_are_local(page)
        await shot(page, "ops-08-webhooks.png")
        await no_overflow_at_390(page)
        await page.set_viewport_size({"width": 1280, "height": 800})
        page.on("dialog", lambda d: d.accept())
        await page.click("button.delete-hook")
        await page.wait_for_selector("#no-webhooks")
        assert (await live.node.store.webhooks.list()).items == []
        await page.close()


@pytest.mark.timeout(90)
async def test_functions_page_shows_a_user_only_its_own(live: Live, browser: Any) -> None:  # noqa: F811
    ann_key = await live.key("user", "ann")
    ann = live.client(ann_key)
    code = "def double(x: int) -> int:\n    return 2 * x\n"
    r = await ann.post("/api/v1/functions", json={"name": "double", "code": code})
    assert r.status_code == 201, r.text
    r = await live.admin.post(
        "/api/v1/functions",
        json={"name": "secret_tool", "code": "def secret_tool() -> int:\n    return 1\n"},
    )
    assert r.status_code == 201, r.text
    page = await browser.new_page()
    await sign_in_at(page, live, ann_key, "/functions")
    names = await page.locator("#functions tr[data-function]").evaluate_all(
        "rows => rows.map(r => r.dataset.function)"
    )
    assert names == ["double"]
    await page.close()
    page = await browser.new_page()
    await sign_in_at(page, live, live.admin_key, "/functions")
    assert await page.locator("#functions tr[data-function]").count() == 2
    await page.click("#functions summary >> nth=0")
    await times_are_local(page)
    await shot(page, "ops-10-functions.png")
    await no_overflow_at_390(page)
    await page.close()


@pytest.mark.timeout(120)
async def test_every_ops_page_fits_390_px_and_shows_local_times(
    live: Live,
    browser: Any,  # noqa: F811
) -> None:
    await live.admin.post("/api/v1/agents", json={"name": "talker", "description": "x" * 300})
    await live.admin.put(
        "/api/v1/agents/talker", json={"description": "y" * 300}, headers={"If-Match": '"1"'}
    )
    await live.admin.post(
        "/api/v1/sessions", json={"agent": "talker", "user": "a-rather-long-user-name"}
    )
    r = await live.admin.post(
        "/api/v1/tasks", json={"kind": "some-kind", "payload": {"k": "v" * 200}}
    )
    task_id = r.json()["id"]
    page = await browser.new_page(viewport={"width": 390, "height": 844})
    await sign_in_at(page, live, live.admin_key, "/tree")
    for path in (
        "/tree",
        "/agents",
        "/agents/new",
        "/agents/talker",
        "/agents/talker/edit",
        "/tasks",
        f"/tasks/{task_id}",
        "/dead-letters",
        "/workflows",
        "/functions",
        "/keys",
        "/webhooks",
        "/audit",
    ):
        response = await page.goto(live.url + path)
        assert response is not None and response.status == 200, path
        await page.wait_for_load_state("networkidle")
        await no_overflow_at_390(page)
        await times_are_local(page)
        # nothing from another origin: every script, style and image is served by the node
        foreign = await page.evaluate(
            "[...document.querySelectorAll('script[src],link[href],img[src]')]"
            ".map(e => e.src || e.href).filter(u => !u.startsWith(location.origin))"
        )
        assert foreign == [], (path, foreign)
    await page.close()
