"""A workflow process for the crash test: steps a, b, c, d in sequence; c SIGKILLs its own
process on the first run. Every step appends its name to a log file when it runs.

Usage: ``python crash_workflow.py DATABASE_URL LOG_FILE RUN_ID start|resume``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from netsuke.routing import StepContext, Workflow, WorkflowRunner
from netsuke.store import Store


def build(log: Path, crash: bool) -> Workflow:
    wf = Workflow("pipeline", strategy="sequential")

    def note(name: str) -> None:
        with log.open("a") as fh:
            fh.write(name + "\n")

    @wf.step()
    def a(ctx: StepContext) -> int:
        note("a")
        return int(ctx.input["x"]) + 1

    @wf.step(after=["a"])
    def b(ctx: StepContext) -> int:
        note("b")
        return int(ctx.outputs["a"]) * 10

    @wf.step(after=["b"])
    def c(ctx: StepContext) -> int:
        note("c")
        if crash:
            os.kill(os.getpid(), signal.SIGKILL)
        return int(ctx.outputs["b"]) + 5

    @wf.step(after=["c", "a"])
    def d(ctx: StepContext) -> dict[str, int]:
        note("d")
        return {"sum": int(ctx.outputs["c"]) + int(ctx.outputs["a"])}

    return wf


async def main(url: str, log: Path, run_id: str, mode: str) -> None:
    async with Store.open(url) as store:
        runner = WorkflowRunner(store)
        if mode == "start":
            result = await runner.start(build(log, crash=True), {"x": 1}, run_id=run_id)
        else:
            [result] = await runner.resume_all([build(log, crash=False)])
        print(result.status, result.outputs, result.ran)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4]))
