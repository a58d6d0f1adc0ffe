"""Crashes of real processes (SIGKILL): a held task is delivered again, never lost; a workflow
resumes without re-running the steps that completed."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest

from netsuke.routing import TaskQueue, TaskRecord, WorkflowRunner
from netsuke.store import Store

from .helpers import eventually

HERE = Path(__file__).parent


@pytest.mark.timeout(60)
async def test_task_held_by_a_killed_worker_is_delivered_again_and_never_lost(
    migrated_url: str, tmp_path: Path
) -> None:
    marker = tmp_path / "taken"
    async with Store.open(migrated_url, migrate=True) as store:
        queue = TaskQueue.sql(store)
        task = await queue.submit("important", {"n": 42})
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HERE / "crash_worker.py"),
        migrated_url,
        str(marker),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with asyncio.timeout(30):
            while not marker.exists():
                assert proc.returncode is None, "the worker process exited early"
                await asyncio.sleep(0.02)
        assert marker.read_text() == f"{task.id} 1"
        proc.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(proc.wait(), 10) == -signal.SIGKILL
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    # "restart": a new process (here: this one) opens the store and runs a worker
    async with Store.open(migrated_url) as store:
        queue = TaskQueue.sql(store)
        held = await queue.get(task.id)
        assert held.status == "leased" and held.lease_owner == "doomed"
        seen: list[tuple[int, int]] = []

        def handle(t: TaskRecord) -> str:
            seen.append((t.payload["n"], t.attempts))
            return "done"

        async with queue.worker(handle, poll_interval=0.05):

            async def finished() -> bool:
                return (await queue.get(task.id)).status == "succeeded"

            await eventually(finished, timeout=20)
        assert seen == [(42, 2)]
        assert (await queue.get(task.id)).result == "done"


@pytest.mark.timeout(60)
async def test_workflow_killed_half_way_resumes_without_rerunning_completed_steps(
    migrated_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "steps.log"
    script = str(HERE / "crash_workflow.py")
    if migrated_url.startswith("sqlite"):
        async with Store.open(migrated_url):
            pass  # migrate the file first
    code, _, err = await run_script(script, migrated_url, str(log), "run-1", "start")
    assert code == -signal.SIGKILL, err
    assert log.read_text().split() == ["a", "b", "c"]
    async with Store.open(migrated_url) as store:
        run = await WorkflowRunner(store).get("run-1")
        assert run.status == "running"
        assert {k: s.status for k, s in run.steps.items()} == {
            "a": "succeeded",
            "b": "succeeded",
            "c": "running",
            "d": "pending",
        }
    code, out, err = await run_script(script, migrated_url, str(log), "run-1", "resume")
    assert code == 0, err
    assert log.read_text().split() == ["a", "b", "c", "c", "d"]
    assert "succeeded" in out and "('c', 'd')" in out
    async with Store.open(migrated_url) as store:
        run = await WorkflowRunner(store).get("run-1")
        assert run.status == "succeeded"
        assert run.steps["d"].output == {"sum": 2 + 25}
        assert run.steps["c"].attempts == 2 and run.steps["a"].attempts == 1


async def run_script(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
