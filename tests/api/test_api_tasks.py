"""Tasks, dead letters and workflows over HTTP on a real node (SQLite task queue), with a
real worker consuming the queue; user A against user B's tasks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from netsuke.routing import StepContext, TaskQueue, TaskRecord, Workflow

from .conftest import Live


def queue(live: Live) -> TaskQueue:
    assert live.node.queue is not None
    return live.node.queue


async def until(predicate: Any, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def test_submit_work_dead_letter_requeue_purge(live: Live) -> None:
    admin = live.admin
    r = await admin.post(
        "/api/v1/tasks",
        json={"kind": "double", "payload": {"n": 21}, "capabilities": ["math"], "priority": 5},
    )
    assert r.status_code == 201, r.text
    ok_id = r.json()["id"]
    assert r.json()["status"] == "queued" and r.headers["location"] == f"/api/v1/tasks/{ok_id}"
    r = await admin.post(
        "/api/v1/tasks", json={"kind": "explode", "capabilities": ["math"], "max_attempts": 1}
    )
    bad_id = r.json()["id"]

    async def handle(task: TaskRecord) -> Any:
        if task.kind == "explode":
            raise RuntimeError("kaboom")
        return {"value": task.payload["n"] * 2}

    async with queue(live).worker(handle, capabilities={"math"}, poll_interval=0.05):

        async def settled() -> bool:
            a = (await admin.get(f"/api/v1/tasks/{ok_id}")).json()
            b = (await admin.get(f"/api/v1/tasks/{bad_id}")).json()
            return bool(a["status"] == "succeeded" and b["status"] == "dead")

        await until(settled)
    done = (await admin.get(f"/api/v1/tasks/{ok_id}")).json()
    assert done["result"] == {"value": 42} and done["attempts"] == 1
    dead = (await admin.get("/api/v1/dead-letters")).json()["items"]
    assert [t["id"] for t in dead] == [bad_id] and "kaboom" in dead[0]["last_error"]
    listed = (await admin.get("/api/v1/tasks?status=succeeded")).json()["items"]
    assert [t["id"] for t in listed] == [ok_id]

    r = await admin.post(f"/api/v1/dead-letters/{bad_id}/requeue")
    assert r.status_code == 200 and r.json()["status"] == "queued" and r.json()["attempts"] == 0
    assert (await admin.post(f"/api/v1/dead-letters/{ok_id}/requeue")).status_code == 404
    async with queue(live).worker(handle, capabilities={"math"}, poll_interval=0.05):
        await until(
            lambda: _status_is(admin, bad_id, "dead"),
        )
    r = await admin.post("/api/v1/dead-letters/purge", json={})
    assert r.json() == {"purged": 1}
    assert (await admin.get(f"/api/v1/tasks/{bad_id}")).status_code == 404


async def _status_is(client: Any, task_id: str, status: str) -> bool:
    return bool((await client.get(f"/api/v1/tasks/{task_id}")).json()["status"] == status)


async def test_bad_tasks_are_4xx_and_queue_nothing(live: Live) -> None:
    admin = live.admin
    for body in (
        {},
        {"kind": ""},
        {"kind": "x", "payload": [1]},
        {"kind": "x", "capabilities": ["has space"]},
        {"kind": "x", "delay": -1},
        {"kind": "x", "max_attempts": 0},
        {"kind": "x", "owner": "me"},
    ):
        r = await admin.post("/api/v1/tasks", json=body)
        assert r.status_code == 422, (body, r.text)
    assert (await admin.get("/api/v1/tasks")).json()["items"] == []
    assert (await admin.get("/api/v1/tasks?status=nope")).status_code == 422
    assert (await admin.get("/api/v1/tasks?cursor=x")).status_code == 422
    for path in ("/api/v1/tasks", "/api/v1/dead-letters"):  # the largest page, huge cursors
        assert (await admin.get(f"{path}?limit=1000")).status_code == 200
        assert (await admin.get(f"{path}?limit=1000&cursor={'0' * 200}")).status_code == 422


async def test_user_a_cannot_reach_user_b_tasks(live: Live) -> None:
    alice = live.client(await live.key("user", "alice"))
    bob = live.client(await live.key("user", "bob"))
    operator = live.client(await live.key("operator", "ops"))
    body = {"kind": "report", "payload": {"secret": "alice-plan"}, "idempotency_key": "k1"}
    r = await alice.post("/api/v1/tasks", json=body)
    assert r.status_code == 201
    task_id = r.json()["id"]
    again = await alice.post("/api/v1/tasks", json=body)
    assert again.status_code == 200 and again.json()["id"] == task_id  # idempotent
    bobs = {**body, "payload": {"secret": "bob-plan"}}
    theirs = await bob.post("/api/v1/tasks", json=bobs)  # same key, another user
    assert theirs.status_code == 201 and theirs.json()["id"] != task_id
    assert (await bob.get(f"/api/v1/tasks/{task_id}")).status_code == 404
    mine = (await bob.get("/api/v1/tasks")).json()["items"]
    assert [t["id"] for t in mine] == [theirs.json()["id"]]
    assert "alice-plan" not in (await bob.get("/api/v1/tasks")).text
    for path in ("/api/v1/dead-letters",):
        assert (await bob.get(path)).status_code == 403
    assert (await bob.post(f"/api/v1/dead-letters/{task_id}/requeue")).status_code == 403
    assert (await bob.post("/api/v1/dead-letters/purge", json={})).status_code == 403
    assert (await alice.get(f"/api/v1/tasks/{task_id}")).status_code == 200
    everyone = (await operator.get("/api/v1/tasks")).json()["items"]
    assert len(everyone) == 2


async def test_workflow_start_and_status(live: Live) -> None:
    assert live.node.workflows is not None
    wf = Workflow("report")

    @wf.step()
    async def fetch(ctx: StepContext) -> Any:
        return [1, 2, 3]

    @wf.step(after=["fetch"])
    async def total(ctx: StepContext) -> Any:
        return sum(ctx.outputs["fetch"]) + ctx.input["bonus"]

    live.node.workflows.add(wf)
    admin = live.admin
    listed = (await admin.get("/api/v1/workflows")).json()["items"]
    assert listed[0]["name"] == "report" and listed[0]["steps"][1]["after"] == ["fetch"]
    r = await admin.post("/api/v1/workflows/report/runs", json={"input": {"bonus": 4}})
    assert r.status_code == 202
    run_id = r.json()["run_id"]

    async def finished() -> bool:
        run = (await admin.get(f"/api/v1/workflows/runs/{run_id}")).json()
        return bool(run["status"] == "succeeded")

    await until(finished)
    run = (await admin.get(f"/api/v1/workflows/runs/{run_id}")).json()
    assert run["steps"]["total"]["output"] == 10
    assert (await admin.post("/api/v1/workflows/nope/runs", json={})).status_code == 404
    assert (await admin.get("/api/v1/workflows/runs/nope")).status_code == 404
    user = live.client(await live.key("user", "u"))
    assert (await user.post("/api/v1/workflows/report/runs", json={})).status_code == 403


async def test_on_a_redis_queue_a_task_still_belongs_to_its_key_and_is_audited(
    live_factory: Callable[..., AbstractAsyncContextManager[Live]], tmp_path: Path
) -> None:
    """A broker cannot share the store's transaction, so the route writes the task's
    ownership record and the request's audit record after Redis has the task."""
    from tests.routing.conftest import need_redis, start_redis, stop_redis

    need_redis()
    proc, url = start_redis(tmp_path, "--appendonly", "yes", "--appendfsync", "always")
    try:
        async with live_factory(queue_url=url) as live:
            alice = live.client(await live.key("user", "alice"))
            bob = live.client(await live.key("user", "bob"))
            r = await alice.post("/api/v1/tasks", json={"kind": "report", "payload": {"n": 1}})
            assert r.status_code == 201, r.text
            task_id = r.json()["id"]
            assert (await alice.get(f"/api/v1/tasks/{task_id}")).status_code == 200
            assert (await bob.get(f"/api/v1/tasks/{task_id}")).status_code == 404
            listed = (await alice.get("/api/v1/tasks")).json()["items"]
            assert [t["id"] for t in listed] == [task_id]
            audit = (await live.admin.get("/api/v1/audit", params={"action": "task.submit"})).json()
            assert [e["target"] for e in audit["items"]] == [f"task:{task_id}"]
            posted = (
                await live.admin.get("/api/v1/audit", params={"action": "POST /api/v1/tasks"})
            ).json()["items"]
            assert len(posted) == 1 and posted[0]["outcome"] == "ok"
    finally:
        stop_redis(proc)
