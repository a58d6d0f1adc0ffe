"""The dashboard in a real browser (Playwright driving Debian's Chromium): sign in, see the
agents table, see an agent created through the API appear live, open its page, and watch a
new version show up. Screenshots go to ``test-artifacts/dashboard/``."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import Live

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _have_chromium() -> bool:
    return os.path.exists(CHROMIUM) and shutil.which("chromium") is not None


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    if not _have_chromium():
        reason = "Debian's chromium is not installed (make install as root installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true requires a browser: {reason}")
        pytest.skip(reason)
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield launched
        finally:
            await launched.close()


async def _sign_in(page: Any, live: Live) -> None:
    await page.goto(live.url + "/")
    assert page.url.endswith("/login")
    await page.fill("#key", "nsk_00000000_wrong")
    await page.click("button[type=submit]")
    await page.wait_for_selector("#login-error:has-text('unknown or revoked')")
    await page.fill("#key", live.admin_key)
    await page.click("button[type=submit]")
    await page.wait_for_url(live.url + "/")


@pytest.mark.timeout(90)
async def test_an_agent_created_through_the_api_appears_live(live: Live, browser: Any) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await live.node.store.agents.create({"name": "alpha", "capabilities": ["a"]})
    page = await browser.new_page()
    await _sign_in(page, live)
    await page.wait_for_selector("#live.on")
    assert await page.locator("#agents tbody tr").count() == 1
    await page.screenshot(path=str(ARTIFACTS / "01-signed-in.png"), full_page=True)

    r = await live.admin.post(
        "/api/v1/agents", json={"name": "beta", "model": "offline", "capabilities": ["search"]}
    )
    assert r.status_code == 201
    row = page.locator('#agents tbody tr[data-agent="beta"]')
    await row.wait_for(timeout=10_000)
    assert "search" in await row.inner_text()
    names = await page.locator("#agents tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.agent)"
    )
    assert names == ["alpha", "beta"]
    assert "definition.changed" in await page.locator("#events").inner_text()
    await page.screenshot(path=str(ARTIFACTS / "02-agent-appeared-live.png"), full_page=True)

    await page.click('#agents a[href="/agents/beta"]')
    await page.wait_for_selector("#definition")
    assert "name: beta" in await page.locator("#definition").inner_text()
    await page.wait_for_selector("#live.on")
    r = await live.admin.put(
        "/api/v1/agents/beta", json={"description": "now v2"}, headers={"If-Match": '"1"'}
    )
    assert r.status_code == 200
    await page.wait_for_selector("#version:has-text('2')", timeout=10_000)
    assert await page.locator("#versions tbody tr").count() == 2
    await page.screenshot(path=str(ARTIFACTS / "03-agent-page-new-version.png"), full_page=True)

    await page.click("#logout")
    await page.wait_for_url(live.url + "/login")
    await page.goto(live.url + "/")
    assert page.url.endswith("/login")
    await page.close()


async def test_the_cookie_cannot_mutate(live: Live) -> None:
    browser_like = live.client(Cookie=f"netsuke_key={live.admin_key}")
    r = await browser_like.post("/api/v1/agents", json={"name": "csrf"})
    assert r.status_code == 401
    assert not await live.node.store.agents.exists("csrf")
    assert (await browser_like.get("/api/v1/agents")).status_code == 200
