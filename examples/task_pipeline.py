"""Seed 002, in Netsuke: task agents, an orchestration agent running a pipeline, a task queue
with retries, a fallback handler and a dead-letter queue, and events between them.

* Task agents are supervised processes that declare capabilities in the registry; the
  capability router sends each piece of work to the least-loaded agent that can do it.
* The orchestration agent runs a pipeline (a workflow DAG): fetch, then two analyses in
  parallel, then a report built from their outputs; every step is persisted, so the pipeline
  would resume after a crash without redoing finished steps.
* Work also flows through the durable task queue: a flaky agent's task is retried with
  exponential backoff and full jitter; a poison task ends in the dead-letter queue, is
  inspected and requeued; a task that keeps failing goes to the fallback handler.
* Everything publishes events on the node's bus; a listener prints them.

    python examples/task_pipeline.py
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from netsuke import From, Process, Runtime
from netsuke.events import Event
from netsuke.observability import configure_logging
from netsuke.routing import (
    CapabilityRouter,
    RetryPolicy,
    StepContext,
    TaskQueue,
    TaskRecord,
    Workflow,
    WorkflowRunner,
)
from netsuke.store import Store


class TaskAgent(Process):
    """A task agent: handles one well-defined kind of work and reports its load."""

    def init(self, arg: tuple[str, list[str]]) -> None:
        name, capabilities = arg
        self.name = name
        self.load = 0
        self.failures_left = 1 if name == "analyst-flaky" else 0
        self.runtime.registry.register(
            name, self.pid, {"kind": "agent", "agent": name, "capabilities": capabilities}
        )

    async def handle_call(self, request: dict[str, Any], from_: From) -> Any:
        self.load += 1
        try:
            await asyncio.sleep(0.01)  # the work
            if self.failures_left:
                self.failures_left -= 1
                return {"error": f"{self.name}: upstream timeout"}
            match request["op"]:
                case "fetch":
                    return {"sales": [120, 95, 143], "visits": [1800, 1650, 2100]}
                case "analyse":
                    series = request["series"]
                    return {"total": sum(series), "peak": max(series)}
                case "report":
                    return f"sales {request['sales']['total']}, visits {request['visits']['total']}"
            return {"error": f"unknown op {request['op']!r}"}
        finally:
            self.load -= 1


async def main() -> None:
    configure_logging("error")
    with tempfile.TemporaryDirectory() as tmp:
        async with (
            Runtime() as rt,
            Store.open(f"sqlite+aiosqlite:///{Path(tmp) / 'netsuke.db'}") as store,
        ):
            printed = rt.events.listen("*", lambda e: print_event(e))
            for name, caps in [
                ("fetcher", ["fetch"]),
                ("analyst-1", ["analyse"]),
                ("analyst-flaky", ["analyse"]),
                ("reporter", ["report", "write"]),
            ]:
                await rt.start(TaskAgent, (name, caps))
            router = CapabilityRouter(rt.registry, fallback="reporter")

            async def ask(capability: str, request: dict[str, Any]) -> Any:
                agent = router.route([capability])
                reply = await rt.call(agent.pid, request)
                if isinstance(reply, dict) and "error" in reply:
                    raise ConnectionError(reply["error"])
                return reply

            # -- the orchestration agent's pipeline --------------------------------------
            pipeline = Workflow("daily-report", strategy="parallel")
            retry = RetryPolicy(max_attempts=3, base=0.02, cap=0.1)

            @pipeline.step()
            async def fetch(ctx: StepContext) -> Any:
                return await ask("fetch", {"op": "fetch", "day": ctx.input["day"]})

            @pipeline.step(after=["fetch"], retry=retry)
            async def sales(ctx: StepContext) -> Any:
                return await ask(
                    "analyse", {"op": "analyse", "series": ctx.outputs["fetch"]["sales"]}
                )

            @pipeline.step(after=["fetch"], retry=retry)
            async def visits(ctx: StepContext) -> Any:
                return await ask(
                    "analyse", {"op": "analyse", "series": ctx.outputs["fetch"]["visits"]}
                )

            @pipeline.step(after=["sales", "visits"])
            async def report(ctx: StepContext) -> Any:
                return await ask("report", {"op": "report", **ctx.outputs})

            runner = WorkflowRunner(store, events=rt.events)
            result = await runner.start(pipeline, {"day": "2026-11-21"})
            print(f"pipeline {result.status}: {result.outputs['report']}")

            # -- the task queue ------------------------------------------------------------
            queue = TaskQueue.sql(store, events=rt.events)
            policy = RetryPolicy(max_attempts=2, base=0.02, cap=0.1)

            async def handle(task: TaskRecord) -> Any:
                if task.payload.get("poison"):
                    raise ValueError("cannot parse the input")
                return await ask(task.capabilities[0], task.payload["request"])

            def fallback(task: TaskRecord, error: BaseException) -> str:
                return f"queued for a human: {error}"

            t1 = await queue.submit(
                "analyse",
                {"request": {"op": "analyse", "series": [1, 2, 3]}},
                capabilities=["analyse"],
                idempotency_key="analyse:week-47",
                retry=policy,
            )
            again = await queue.submit("analyse", {"other": 1}, idempotency_key="analyse:week-47")
            assert again.id == t1.id  # a duplicate returns the first task
            poison = await queue.submit("analyse", {"poison": True}, retry=policy)
            async with queue.worker(handle, capabilities={"analyse"}, concurrency=4):
                await settled(queue, [t1.id, poison.id])
                print(f"task result: {(await queue.get(t1.id)).result}")
                dead = (await queue.dead_letters()).items
                print(f"dead letters: {[(t.id[:8], t.last_error) for t in dead]}")
                await queue.requeue(poison.id)  # an operator retries it ...
                await settled(queue, [poison.id])
                print(f"purged {await queue.purge_dead()} dead letter(s)")
            async with queue.worker(handle, fallback=fallback):
                last = await queue.submit("analyse", {"poison": True}, retry=policy)
                await settled(queue, [last.id])
                print(f"fallback result: {(await queue.get(last.id)).result}")
            await queue.close()
            await asyncio.sleep(0.05)
            printed.close()


async def settled(queue: TaskQueue, ids: list[str]) -> None:
    """Wait until every task in ``ids`` is acked or dead."""
    async with asyncio.timeout(10):
        while True:
            states = [(await queue.get(i)).status for i in ids]
            if all(s in ("succeeded", "dead") for s in states):
                return
            await asyncio.sleep(0.02)


def print_event(event: Event) -> None:
    if event.topic.startswith(("task.", "workflow.")):
        data = {k: (v[:8] if k in ("task", "run") else v) for k, v in event.data.items()}
        print(f"  event {event.topic}: {data}")


if __name__ == "__main__":
    asyncio.run(main())
