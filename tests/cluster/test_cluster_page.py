"""The dashboard's ``/cluster`` page on a node in a cluster (a real nats-server, a real second
``netsuke serve --cluster`` node in its own OS process, and a third member joined in-process):
the members with their leases and load, the sessions each owns, and node events (joined, left,
down, sessions moved by failover) appearing live without a reload; local times and 390 px."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from netsuke.api import Settings
from netsuke.cluster import join_cluster
from netsuke.manager.testing import NatsServer

from ..api.conftest import serve
from ..api.test_dashboard_browser import browser  # noqa: F401 (fixture)
from ..api.test_dashboard_ops import no_overflow_at_390, shot, sign_in_at, times_are_local
from .helpers import FAST, prefix
from .serve_node import env as _env
from .serve_node import start as _start
from .serve_node import stop as _stop

pytestmark = pytest.mark.timeout(240)


async def test_cluster_page_shows_members_their_sessions_and_live_node_events(
    tmp_path: Path,
    nats_server: NatsServer,
    browser: Any,  # noqa: F811
) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    subjects = prefix()
    settings = Settings(
        database_url=db,
        port=0,
        rate_limit_per_minute=0,
        node="alpha",
        cluster=nats_server.url,
        cluster_prefix=subjects,
    )
    async with serve(settings) as live:
        r = await live.admin.post("/api/v1/agents", json={"name": "helper", "model": "offline"})
        assert r.status_code == 201, r.text
        page = await browser.new_page()
        await sign_in_at(page, live, live.admin_key, "/cluster")
        await page.wait_for_selector("body[data-ops-live='1']")
        assert await page.locator("#not-clustered").count() == 0
        me = live.node.runtime.node
        assert me.startswith("alpha#")
        assert (
            "this node" in await page.locator(f"#cluster-nodes tr[data-node='{me}']").inner_text()
        )
        assert "No node event" in await page.locator("#no-events").inner_text()
        await page.evaluate("window.__sameLoad = true")  # gone if the page reloads

        env = _env(NETSUKE_DATABASE_URL=db, NETSUKE_CLUSTER_PREFIX=subjects)
        beta, beta_url, _ = await _start("beta", nats_server.url, env, tmp_path)
        try:
            # the second member appears live: an event, then its row
            await page.wait_for_selector(
                "#cluster-events li[data-topic='cluster.node_joined']:has-text('beta#')",
                timeout=30_000,
            )
            beta_row = page.locator("#cluster-nodes tr[data-node^='beta#']")
            await beta_row.wait_for(timeout=15_000)
            assert await page.locator("#no-events").count() == 0
            # a session started on beta is owned by beta
            async with httpx.AsyncClient(
                headers={"Authorization": f"Bearer {live.admin_key}"}, timeout=60
            ) as http:
                r = await http.post(
                    f"{beta_url}/api/v1/sessions", json={"agent": "helper", "user": "ann"}
                )
                assert r.status_code in (200, 201), r.text
                sid = r.json()["session_id"]
            row = page.locator(f"#cluster-sessions tr[data-session='{sid}']")
            await row.wait_for(timeout=15_000)
            owner = await row.get_attribute("data-owner")
            assert owner is not None and owner.startswith("beta#")
            beta_id = await beta_row.get_attribute("data-node")
            assert beta_id == owner
            cells = await beta_row.locator("td").all_inner_texts()
            assert cells[2] == "live" and cells[3] == "yes" and cells[8] == "1", cells
            await page.wait_for_selector(
                f"#cluster-load li[data-node='{owner}'] .load-sessions:has-text('1')"
            )
            await times_are_local(page)
            await shot(page, "ops-18-cluster.png")
            await page.click("#theme-toggle")
            assert await page.evaluate("() => document.documentElement.dataset.theme") == "dark"
            await shot(page, "ops-18-cluster-dark.png")

            # a member that joins and leaves cleanly: joined, then left
            async with join_cluster(
                nats_server.url, "gamma", db, transport_options={"prefix": subjects, **FAST}
            ) as gamma:
                await page.wait_for_selector(
                    f"#cluster-events li[data-topic='cluster.node_joined']:has-text('{gamma.node_id}')",
                    timeout=15_000,
                )
            await page.wait_for_selector(
                f"#cluster-events li[data-topic='cluster.node_left']:has-text('{gamma.node_id}')",
                timeout=15_000,
            )
            # beta killed without a goodbye: down (no heartbeat), its lease revoked and its row
            # gone; its session fails over to this node (docs/cluster.md, "Failover"), shown as
            # a sessions-moved event and the session's new owner
            os.kill(beta.pid, signal.SIGKILL)
            beta.wait(30)
            await page.wait_for_selector(
                f"#cluster-events li[data-topic='cluster.node_down']:has-text('{owner}')",
                timeout=30_000,
            )
            moved = page.locator(
                f"#cluster-events li[data-topic='cluster.sessions_moved']:has-text('{owner}')"
            )
            await moved.wait_for(timeout=30_000)
            assert me in await moved.inner_text()
            await page.wait_for_selector(
                f"#cluster-sessions tr[data-session='{sid}'][data-owner='{me}']"
                ":has-text('this node')",
                timeout=30_000,
            )
            await page.locator(f"#cluster-nodes tr[data-node='{owner}']").wait_for(
                state="detached", timeout=15_000
            )
            assert await page.evaluate("window.__sameLoad") is True
            await times_are_local(page)
            await no_overflow_at_390(page)
            await shot(page, "ops-19-cluster-390.png")
        finally:
            _stop(beta)
