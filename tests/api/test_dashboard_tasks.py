"""The tasks page in a real browser: a task submitted through the API appears live, a worker
fails it into the dead-letter queue, and the page shows it there."""

from __future__ import annotations

from typing import Any

import pytest

from netsuke.routing import TaskRecord

from .conftest import Live
from .test_dashboard_browser import ARTIFACTS, _sign_in, browser  # noqa: F401 (fixture)


@pytest.mark.timeout(90)
async def test_tasks_and_dead_letters_live(live: Live, browser: Any) -> None:  # noqa: F811
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = await browser.new_page()
    await _sign_in(page, live)
    await page.click("#nav-tasks")
    await page.wait_for_url(live.url + "/tasks")
    await page.wait_for_selector("#live.on")

    r = await live.admin.post(
        "/api/v1/tasks", json={"kind": "flaky", "capabilities": ["io"], "max_attempts": 1}
    )
    task_id = r.json()["id"]
    row = page.locator(f'#tasks tr[data-task="{task_id}"]')
    await row.wait_for(timeout=10_000)
    assert "queued" in await row.inner_text()

    async def handle(task: TaskRecord) -> Any:
        raise RuntimeError("upstream down")

    assert live.node.tasks is not None
    async with live.node.tasks.worker(handle, capabilities={"io"}, poll_interval=0.05):
        await page.wait_for_selector(
            f'#dead tr[data-task="{task_id}"]:has-text("upstream down")', timeout=10_000
        )
    assert "dead" in await row.inner_text()
    await page.screenshot(path=str(ARTIFACTS / "08-tasks-dead-letter.png"), full_page=True)
    await page.close()
