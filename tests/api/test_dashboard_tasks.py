"""Tasks, dead letters and workflows in a real browser: a task submitted through the API
appears live with the queue depth; a worker fails it into the dead-letter queue; its page
shows its attempts and errors; requeue and purge from the dead-letter page; a workflow run
shows its steps."""

from __future__ import annotations

from typing import Any

import pytest

from netsuke.routing import RetryPolicy, StepContext, TaskRecord, Workflow

from .conftest import Live
from .test_dashboard_browser import browser  # noqa: F401 (fixture)
from .test_dashboard_ops import no_overflow_at_390, shot, sign_in_at, times_are_local


async def _dead(live: Live, kind: str) -> str:
    r = await live.admin.post(
        "/api/v1/tasks", json={"kind": kind, "capabilities": ["io"], "max_attempts": 2,
                               "backoff_base": 0.01}
    )  # fmt: skip
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


@pytest.mark.timeout(120)
async def test_tasks_dead_letters_requeue_and_purge(live: Live, browser: Any) -> None:  # noqa: F811
    page = await browser.new_page()
    await sign_in_at(page, live, live.admin_key, "/tasks")
    assert "No tasks yet" in await page.locator("#no-tasks").inner_text()
    await page.wait_for_selector("body[data-ops-live='1']")

    task_id = await _dead(live, "flaky")
    row = page.locator(f'#tasks tr[data-task="{task_id}"]')
    await row.wait_for(timeout=10_000)
    assert "queued" in await row.inner_text()
    await page.wait_for_selector("#depth [data-status='queued'] .ops-card-n:has-text('1')")

    async def handle(task: TaskRecord) -> Any:
        raise RuntimeError(f"upstream down (attempt {task.attempts})")

    assert live.node.queue is not None
    async with live.node.queue.worker(handle, capabilities={"io"}, poll_interval=0.05):
        await page.wait_for_selector(
            f'#tasks tr[data-task="{task_id}"] .status:has-text("dead")', timeout=10_000
        )
        await page.wait_for_selector("#depth [data-status='dead'] .ops-card-n:has-text('1')")
        await times_are_local(page)
        await shot(page, "ops-11-tasks.png")
        await no_overflow_at_390(page)
        await page.set_viewport_size({"width": 1280, "height": 800})

        # the task's page: attempts and error, and attempts seen live on a second task
        other = await _dead(live, "flaky")
        await page.goto(f"{live.url}/tasks/{task_id}")
        assert "2 of 2" in await page.locator("#attempts").inner_text()
        assert "upstream down" in await page.locator("#last-error").inner_text()
        await times_are_local(page)
        await shot(page, "ops-12-task-detail.png")

        # dead letters: requeue one (the worker fails it again: it comes back), purge
        await page.goto(f"{live.url}/dead-letters")
        await page.wait_for_selector(f'#dead tr[data-task="{other}"]', timeout=10_000)
        assert await page.locator("#dead tr[data-task]").count() == 2
        await times_are_local(page)
        await shot(page, "ops-13-dead-letters.png")
        await no_overflow_at_390(page)
        await shot(page, "ops-16-dead-letters-390.png")
        await page.set_viewport_size({"width": 1280, "height": 800})
    # the worker is stopped: a requeued task stays queued
    await page.focus(f'button.requeue[data-task="{task_id}"]')  # by keyboard
    await page.keyboard.press("Enter")
    await page.wait_for_selector(f"#action-status:has-text('Requeued {task_id}')")
    await page.wait_for_selector(f'#dead tr[data-task="{task_id}"]', state="detached")
    assert (await live.node.queue.get(task_id)).status == "queued"
    page.on("dialog", lambda d: d.accept())
    await page.check(f'input.pick[value="{other}"]')
    await page.click("#purge-selected")
    await page.wait_for_selector("#action-status:has-text('Purged 1')")
    await page.wait_for_selector("#no-dead")
    assert await live.node.queue.count("dead") == 0
    await page.close()


@pytest.mark.timeout(90)
async def test_workflows_and_their_runs(live: Live, browser: Any) -> None:  # noqa: F811
    page = await browser.new_page()
    await sign_in_at(page, live, live.admin_key, "/workflows")
    assert await page.locator("#no-workflows").count() == 1
    assert live.node.workflows is not None
    wf = Workflow("report")

    @wf.step()
    async def fetch(ctx: StepContext) -> Any:
        return [1, 2, 3]

    @wf.step(after=["fetch"], retry=RetryPolicy(max_attempts=1))
    async def total(ctx: StepContext) -> Any:
        if ctx.input.get("fail"):
            raise ValueError("no total today")
        return sum(ctx.outputs["fetch"])

    live.node.workflows.add(wf)
    await page.reload()
    await page.wait_for_selector("#workflows tr[data-workflow='report']")
    assert "fetch → total" in await page.locator("#workflows").inner_text()
    await page.wait_for_selector("body[data-ops-live='1']")
    # started from the page
    await page.click("button.start-run[data-workflow='report']")
    await page.wait_for_selector("#action-status:has-text('Started run')")
    ok_run = (await page.locator("#action-status").inner_text()).split()[2]
    await page.wait_for_selector(
        f"#runs tr[data-run='{ok_run}']:has-text('succeeded')", timeout=10_000
    )
    await page.fill("#run-input", "{not json")
    await page.click("button.start-run[data-workflow='report']")
    await page.wait_for_selector("#action-status:has-text('input: not JSON')")
    await page.fill("#run-input", '{"fail": true}')
    await page.click("button.start-run[data-workflow='report']")
    await page.wait_for_selector("#action-status:has-text('Started run')")
    bad_run = (await page.locator("#action-status").inner_text()).split()[2]
    await page.wait_for_selector(
        f"#runs tr[data-run='{bad_run}']:has-text('failed')", timeout=15_000
    )
    await times_are_local(page)
    await shot(page, "ops-14-workflows.png")
    await no_overflow_at_390(page)
    await page.close()


@pytest.mark.timeout(90)
async def test_a_task_page_follows_its_attempts_and_errors(live: Live, browser: Any) -> None:  # noqa: F811
    task_id = await _dead(live, "flaky")
    page = await browser.new_page()
    await sign_in_at(page, live, live.admin_key, f"/tasks/{task_id}")
    assert "0 of 2" in await page.locator("#attempts").inner_text()
    await page.wait_for_selector("body[data-ops-live='1']")

    async def handle(task: TaskRecord) -> Any:
        raise RuntimeError(f"upstream down (attempt {task.attempts})")

    assert live.node.queue is not None
    async with live.node.queue.worker(handle, capabilities={"io"}, poll_interval=0.05):
        await page.wait_for_selector(
            "#attempt-log li:has-text('task.dead_lettered')", timeout=10_000
        )
    log = await page.locator("#attempt-log").inner_text()
    assert "task.retried" in log and "upstream down (attempt 1)" in log
    await page.wait_for_selector("#attempts:has-text('2 of 2')")
    await page.wait_for_selector("#last-error:has-text('upstream down (attempt 2)')")
    await page.wait_for_selector("#task .status:has-text('dead')")
    assert await page.locator("#no-attempts").is_hidden()
    await times_are_local(page)
    # a user may not open another key's task
    other = live.client(Cookie=f"netsuke_key={await live.key('user', 'bob')}")
    assert (await other.get(f"/tasks/{task_id}")).status_code in (403, 404)
    await page.close()


async def test_tasks_page_lists_the_newest_first_and_a_user_its_own(live: Live) -> None:
    ids = []
    for i in range(3):
        r = await live.admin.post("/api/v1/tasks", json={"kind": f"k{i}"})
        ids.append(r.json()["id"])
    ann_key = await live.key("user", "ann")
    r = await live.client(ann_key).post("/api/v1/tasks", json={"kind": "mine"})
    mine = r.json()["id"]
    html = (await live.client(Cookie=f"netsuke_key={live.admin_key}").get("/tasks")).text
    order = [html.index(f'data-task="{t}"') for t in [mine, *reversed(ids)]]
    assert order == sorted(order)
    assert 'data-status="queued"' in html
    html = (await live.client(Cookie=f"netsuke_key={ann_key}").get("/tasks")).text
    assert f'data-task="{mine}"' in html and not any(t in html for t in ids)
    assert 'id="depth"' not in html  # the queue's depth is for operators
