"""Running workflows durably: every step's outcome is committed before the run goes on.

``WorkflowRunner(store).start(wf, input)`` records the run and its steps, then runs them;
``resume(wf, run_id)`` continues a run after a crash of the process: steps recorded
``succeeded`` are not run again (their stored outputs feed later steps); steps that were
``running`` when the process died are run again (a step runs at least once, so make its side
effects idempotent). ``resume_all(workflows)`` resumes every run left ``running``.

A step's attempts are counted in the store, across crashes. A step that fails its last attempt
fails the run: the other running steps are cancelled (and recorded ``pending``), the run is
recorded ``failed`` with the step's error. ``resume`` of a failed run tries its failed and
pending steps again.

Events: ``workflow.started`` (``resumed``), ``workflow.step_finished`` (``status``:
``succeeded``, ``retrying`` or ``failed``; ``attempt``), ``workflow.finished`` (``status``).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from netsuke.events import EventBus, topics
from netsuke.store import NotFoundError, Store, ValidationError, WorkflowRunRecord

from ._errors import WorkflowDefinitionError, WorkflowError, WorkflowMismatchError
from ._observe import METRICS, log, tracer
from ._workflow import Step, StepContext, Workflow

__all__ = ["WorkflowResult", "WorkflowRunner"]


@dataclass(frozen=True)
class WorkflowResult:
    run_id: str
    workflow: str
    status: str
    outputs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    failed_step: str | None = None
    ran: tuple[str, ...] = ()
    """The steps this call ran (not those a resumed run found done)."""


class _StepFailed(Exception):
    def __init__(self, step: str, error: str) -> None:
        self.step = step
        self.error = error
        super().__init__(f"{step}: {error}")


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:2000]


class WorkflowRunner:
    """Runs ``Workflow`` definitions over ``store.workflows``. ``clock`` gives epoch seconds."""

    def __init__(
        self,
        store: Store,
        *,
        events: EventBus | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.repo = store.workflows
        self.events = events
        self.clock = clock

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def _publish(self, topic: str, **data: Any) -> None:
        if self.events is not None:
            self.events.publish(topic, **data)

    async def start(
        self, workflow: Workflow, input: Any = None, *, run_id: str | None = None
    ) -> WorkflowResult:
        """Record a new run of ``workflow`` with ``input`` (JSON), run it, return the result.
        ``WorkflowDefinitionError`` for a bad DAG or a taken ``run_id``."""
        order = workflow.order()
        try:
            json.dumps(input)
        except (TypeError, ValueError) as exc:
            raise WorkflowError(workflow.name, f"input is not JSON-serialisable: {exc}") from None
        try:
            record = await self.repo.create(
                workflow.name, order, input=input, now=self._now(), run_id=run_id
            )
        except ValidationError as exc:
            raise WorkflowDefinitionError(workflow.name, exc.field, exc.reason) from None
        return await self._execute(workflow, record, resumed=False)

    async def resume(self, workflow: Workflow, run_id: str) -> WorkflowResult:
        """Continue run ``run_id`` of ``workflow`` without re-running its succeeded steps."""
        order = workflow.order()
        try:
            record = await self.repo.get(run_id)
        except NotFoundError:
            raise WorkflowMismatchError(workflow.name, run_id, "no such run") from None
        if record.workflow != workflow.name:
            raise WorkflowMismatchError(
                workflow.name, run_id, f"it belongs to workflow {record.workflow!r}"
            )
        if sorted(record.steps) != sorted(order):
            raise WorkflowMismatchError(workflow.name, run_id, "its steps differ")
        if record.status == "succeeded":
            outputs = {k: s.output for k, s in record.steps.items()}
            return WorkflowResult(run_id, workflow.name, "succeeded", outputs)
        return await self._execute(workflow, record, resumed=True)

    async def resume_all(self, workflows: Iterable[Workflow]) -> list[WorkflowResult]:
        """Resume every ``running`` run of the given workflows (oldest first)."""
        out = []
        for wf in workflows:
            for run_id in await self.repo.list(status="running", workflow=wf.name):
                out.append(await self.resume(wf, run_id))
        return out

    async def get(self, run_id: str) -> WorkflowRunRecord:
        return await self.repo.get(run_id)

    # -------------------------------------------------------------- execution

    async def _execute(
        self, wf: Workflow, record: WorkflowRunRecord, *, resumed: bool
    ) -> WorkflowResult:
        run_id = record.id
        done: dict[str, Any] = {
            name: s.output for name, s in record.steps.items() if s.status == "succeeded"
        }
        METRICS.steps["skipped"] += len(done) if resumed else 0
        if record.status != "running":
            await self.repo.finish(run_id, status="running", now=self._now())
        log.info("workflow.started", workflow=wf.name, run=run_id, resumed=resumed, done=len(done))
        self._publish(topics.WORKFLOW_STARTED, workflow=wf.name, run=run_id, resumed=resumed)
        order = wf.order()
        remaining = [s for s in order if s not in done]
        running: dict[asyncio.Task[Any], str] = {}
        ran: list[str] = []
        failure: _StepFailed | None = None
        limit = 1 if wf.strategy == "sequential" else (wf.max_parallel or len(order))
        with tracer.start_as_current_span(
            "routing.workflow", attributes={"workflow": wf.name, "run": run_id}
        ):
            try:
                while remaining or running:
                    for name in list(remaining):
                        if len(running) >= limit:
                            break
                        step = wf.steps[name]
                        if all(d in done for d in step.after):
                            remaining.remove(name)
                            ran.append(name)
                            ctx_outputs = {d: done[d] for d in step.after}
                            task = asyncio.create_task(
                                self._run_step(wf, run_id, step, record.input, ctx_outputs)
                            )
                            running[task] = name
                    if not running:
                        break  # unreachable for a validated DAG
                    finished, _ = await asyncio.wait(
                        list(running), return_when=asyncio.FIRST_COMPLETED
                    )
                    for task in finished:
                        name = running.pop(task)
                        exc = task.exception()
                        if exc is None:
                            done[name] = task.result()
                        elif isinstance(exc, _StepFailed):
                            failure = failure or exc
                        else:
                            failure = failure or _StepFailed(name, _describe(exc))
                    if failure is not None:
                        break
            finally:
                for task in running:
                    task.cancel()
                if running:
                    await asyncio.gather(*running, return_exceptions=True)
                    for name in running.values():
                        await self.repo.finish_step(
                            run_id, name, status="pending", error="cancelled", now=self._now()
                        )
        status: Literal["succeeded", "failed"] = "failed" if failure is not None else "succeeded"
        error = None if failure is None else f"step {failure.step}: {failure.error}"
        await self.repo.finish(run_id, status=status, error=error, now=self._now())
        log.info("workflow.finished", workflow=wf.name, run=run_id, status=status, error=error)
        self._publish(topics.WORKFLOW_FINISHED, workflow=wf.name, run=run_id, status=status)
        return WorkflowResult(
            run_id,
            wf.name,
            status,
            outputs=done,
            error=error,
            failed_step=None if failure is None else failure.step,
            ran=tuple(ran),
        )

    async def _run_step(
        self, wf: Workflow, run_id: str, step: Step, input: Any, outputs: dict[str, Any]
    ) -> Any:
        policy = step.retry
        max_attempts = policy.max_attempts if policy is not None else 1
        retry_no = 0
        while True:
            attempt = await self.repo.start_step(run_id, step.name, now=self._now())
            ctx = StepContext(wf.name, run_id, step.name, attempt, input, outputs)
            try:
                out = step.fn(ctx)
                if inspect.isawaitable(out):
                    if step.timeout is not None:
                        async with asyncio.timeout(step.timeout):
                            out = await out
                    else:
                        out = await out
                json.dumps(out)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = _describe(exc)
                if attempt < max_attempts and policy is not None:
                    retry_no += 1
                    await self.repo.finish_step(
                        run_id, step.name, status="pending", error=error, now=self._now()
                    )
                    METRICS.steps["retried"] += 1
                    self._publish(
                        topics.WORKFLOW_STEP_FINISHED,
                        workflow=wf.name,
                        run=run_id,
                        step=step.name,
                        status="retrying",
                        attempt=attempt,
                        error=error,
                    )
                    await asyncio.sleep(policy.delay(retry_no))
                    continue
                await self.repo.finish_step(
                    run_id, step.name, status="failed", error=error, now=self._now()
                )
                METRICS.steps["failed"] += 1
                log.warning(
                    "workflow.step_failed",
                    workflow=wf.name,
                    run=run_id,
                    step=step.name,
                    attempt=attempt,
                    error=error,
                )
                self._publish(
                    topics.WORKFLOW_STEP_FINISHED,
                    workflow=wf.name,
                    run=run_id,
                    step=step.name,
                    status="failed",
                    attempt=attempt,
                    error=error,
                )
                raise _StepFailed(step.name, error) from None
            await self.repo.finish_step(
                run_id, step.name, status="succeeded", output=out, now=self._now()
            )
            METRICS.steps["succeeded"] += 1
            self._publish(
                topics.WORKFLOW_STEP_FINISHED,
                workflow=wf.name,
                run=run_id,
                step=step.name,
                status="succeeded",
                attempt=attempt,
            )
            return out
