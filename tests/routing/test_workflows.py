"""Workflows: DAG order, parallel branches, outputs feeding later steps, retries, events,
failure and resume (the crash case is in test_crash.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from netsuke.events import EventBus, topics
from netsuke.routing import (
    RetryPolicy,
    Step,
    StepContext,
    Workflow,
    WorkflowDefinitionError,
    WorkflowError,
    WorkflowMismatchError,
    WorkflowRunner,
)
from netsuke.store import Store

from .helpers import Fixed


def diamond(log: list[str], strategy: Any = "parallel") -> Workflow:
    wf = Workflow("diamond", strategy=strategy)
    began: set[str] = set()
    both = asyncio.Event()

    async def together(step: str) -> None:
        """In parallel, each branch waits until both began (proof they overlap, whatever the
        machine's load); in sequence, it just yields."""
        began.add(step)
        if strategy != "parallel":
            await asyncio.sleep(0)
            return
        if len(began) == 2:
            both.set()
        await asyncio.wait_for(both.wait(), 30)

    @wf.step()
    async def fetch(ctx: StepContext) -> dict[str, Any]:
        log.append("fetch:start")
        await asyncio.sleep(0)
        log.append("fetch:end")
        return {"text": ctx.input["text"]}

    @wf.step(after=["fetch"])
    async def upper(ctx: StepContext) -> str:
        log.append("upper:start")
        await together("upper")
        log.append("upper:end")
        return str(ctx.outputs["fetch"]["text"]).upper()

    @wf.step(after=["fetch"])
    async def length(ctx: StepContext) -> int:
        log.append("length:start")
        await together("length")
        log.append("length:end")
        return len(ctx.outputs["fetch"]["text"])

    @wf.step(after=["upper", "length"])
    def report(ctx: StepContext) -> str:
        log.append("report")
        return f"{ctx.outputs['upper']} ({ctx.outputs['length']})"

    return wf


async def test_parallel_branches_run_together_and_outputs_feed_later_steps(store: Store) -> None:
    bus = EventBus("t")
    sub = bus.subscribe("workflow.*")
    log: list[str] = []
    result = await WorkflowRunner(store, events=bus).start(diamond(log), {"text": "hello"})
    assert result.status == "succeeded"
    assert result.outputs["report"] == "HELLO (5)"
    assert log[:2] == ["fetch:start", "fetch:end"]
    assert set(log[2:4]) == {"upper:start", "length:start"}  # both branches began together
    assert log[-1] == "report"
    events = list(iter(sub.get_nowait, None))
    assert events[0].topic == topics.WORKFLOW_STARTED
    assert events[-1].topic == topics.WORKFLOW_FINISHED
    assert events[-1].data["status"] == "succeeded"
    steps = [e.data["step"] for e in events if e.topic == topics.WORKFLOW_STEP_FINISHED]
    assert sorted(steps) == ["fetch", "length", "report", "upper"]
    run = await store.workflows.get(result.run_id)
    assert run.status == "succeeded" and run.steps["upper"].output == "HELLO"


async def test_sequential_strategy_runs_one_step_at_a_time(store: Store) -> None:
    log: list[str] = []
    result = await WorkflowRunner(store).start(diamond(log, "sequential"), {"text": "ab"})
    assert result.outputs["report"] == "AB (2)"
    assert log == [
        "fetch:start",
        "fetch:end",
        "upper:start",
        "upper:end",
        "length:start",
        "length:end",
        "report",
    ]


async def test_a_step_retries_under_its_policy_then_succeeds(store: Store) -> None:
    wf = Workflow("flaky")
    tries: list[int] = []

    @wf.step(retry=RetryPolicy(max_attempts=3, base=0.01, rng=Fixed(1.0)))
    def flaky(ctx: StepContext) -> str:
        tries.append(ctx.attempt)
        if ctx.attempt < 3:
            raise ConnectionError("try again")
        return "ok"

    result = await WorkflowRunner(store).start(wf)
    assert result.status == "succeeded" and tries == [1, 2, 3]
    run = await store.workflows.get(result.run_id)
    assert run.steps["flaky"].attempts == 3


async def test_a_failed_step_fails_the_run_and_resume_reruns_only_what_is_left(
    store: Store,
) -> None:
    broken = True
    counts: dict[str, int] = {}
    wf = Workflow("fragile")

    def count(ctx: StepContext) -> None:
        counts[ctx.step] = counts.get(ctx.step, 0) + 1

    @wf.step()
    def first(ctx: StepContext) -> int:
        count(ctx)
        return 1

    @wf.step(after=["first"])
    def second(ctx: StepContext) -> int:
        count(ctx)
        if broken:
            raise ValueError("bad data")
        return int(ctx.outputs["first"]) + 1

    @wf.step(after=["second"])
    def third(ctx: StepContext) -> int:
        count(ctx)
        return int(ctx.outputs["second"]) * 10

    runner = WorkflowRunner(store)
    failed = await runner.start(wf, run_id="r1")
    assert failed.status == "failed" and failed.failed_step == "second"
    assert failed.error == "step second: ValueError: bad data"
    assert (await runner.get("r1")).status == "failed"
    broken = False
    again = await runner.resume(wf, "r1")
    assert again.status == "succeeded" and again.outputs["third"] == 20
    assert again.ran == ("second", "third")
    assert counts == {"first": 1, "second": 2, "third": 1}
    done = await runner.resume(wf, "r1")  # nothing left to do
    assert done.status == "succeeded" and counts["third"] == 1


async def test_bad_definitions_and_mismatched_resumes_are_refused(store: Store) -> None:
    noop = lambda ctx: None  # noqa: E731
    with pytest.raises(WorkflowDefinitionError) as ei:
        Workflow("w", [Step("a", noop, after=("b",))]).order()
    assert ei.value.field == "a"
    with pytest.raises(WorkflowDefinitionError):
        Workflow("w", [Step("a", noop, after=("b",)), Step("b", noop, after=("a",))]).order()
    with pytest.raises(WorkflowDefinitionError):
        Workflow("w", [Step("a", noop), Step("a", noop)])
    with pytest.raises(WorkflowDefinitionError):
        Workflow("w", strategy="random")  # type: ignore[arg-type]
    runner = WorkflowRunner(store)
    with pytest.raises(WorkflowDefinitionError):
        await runner.start(Workflow("empty"))
    with pytest.raises(WorkflowError):
        await runner.start(Workflow("w", [Step("a", noop)]), input={"x": object()})
    await runner.start(Workflow("w", [Step("a", noop)]), run_id="r")
    with pytest.raises(WorkflowMismatchError):
        await runner.resume(Workflow("other", [Step("a", noop)]), "r")
    with pytest.raises(WorkflowMismatchError):
        await runner.resume(Workflow("w", [Step("b", noop)]), "r")
    with pytest.raises(WorkflowMismatchError):
        await runner.resume(Workflow("w", [Step("a", noop)]), "missing")
    with pytest.raises(WorkflowError):
        await runner.start(Workflow("w", [Step("a", noop)]), run_id="r")  # id taken
