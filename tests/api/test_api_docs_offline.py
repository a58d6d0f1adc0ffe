"""The OpenAPI docs pages (Swagger UI, ReDoc) work offline: every asset they load is served by
the node. Checked by URL (every ``src``/``href`` of the page answers 200 from the node) and
in Debian's Chromium with every request off loopback refused."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import pytest

from .conftest import Live
from .test_dashboard_browser import browser  # noqa: F401 (the fixture)

PAGES = ["/api/v1/docs", "/api/v1/redoc"]


@pytest.mark.parametrize("page", PAGES)
async def test_every_asset_url_of_the_docs_pages_is_served_by_the_node(
    live: Live, page: str
) -> None:
    client = live.client()
    r = await client.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", r.text)
    urls += re.findall(r"""url:\s*'([^']+)'""", r.text)  # Swagger UI's spec URL
    urls += re.findall(r"""spec-url="([^"]+)\"""", r.text)  # ReDoc's
    assert urls, r.text
    for url in urls:
        assert not urlsplit(url).netloc, f"{page} loads {url} from elsewhere"
        asset = await client.get(url)
        assert asset.status_code == 200, (url, asset.status_code)
        assert len(asset.content) > 100
    assert "cdn." not in r.text and "fonts.googleapis" not in r.text


@pytest.mark.timeout(90)
async def test_the_docs_pages_render_in_a_browser_with_no_network(
    live: Live,
    browser: Any,  # noqa: F811
) -> None:
    page = await browser.new_page()
    outside: list[str] = []

    async def only_loopback(route: Any) -> None:
        host = urlsplit(route.request.url).hostname
        if host in ("127.0.0.1", "localhost"):
            await route.continue_()
        else:
            outside.append(route.request.url)
            await route.abort()

    failed: list[tuple[str, str]] = []
    page.on("requestfailed", lambda request: failed.append((request.url, request.failure or "")))
    await page.route("**/*", only_loopback)
    await page.goto(live.url + "/api/v1/docs")
    await page.wait_for_selector(".swagger-ui .opblock-tag", timeout=30_000)
    assert await page.locator(".swagger-ui .opblock").count() > 10
    assert "agents" in (await page.locator(".swagger-ui").inner_text()).lower()
    await page.goto(live.url + "/api/v1/redoc")
    await page.wait_for_selector("redoc [role=menuitem], .menu-content li", timeout=30_000)
    assert "agents" in (await page.locator("redoc").inner_text()).lower()
    assert outside == []  # nothing was even asked of the network
    # ReDoc's badge image points at its CDN: the page's policy stops it inside the browser
    assert all(
        why.lower() == "csp" and urlsplit(url).hostname != "127.0.0.1" for url, why in failed
    ), failed
