"""``WorkflowCatalog``: the workflows a node knows by name (``node.workflows``), and their runs.

Workflows are code (``netsuke.routing.Workflow`` with step functions), so a node runs the ones
registered with ``catalog.add(workflow)`` (by name; ``Node.open`` adds those its ``workers``
load) and the server lists and starts them over HTTP. ``start(name, input)`` records the run
and returns its id at once; the run goes on in a background task of the catalog (its outcome
is in the store: ``catalog.runner.get``). ``aclose()`` cancels the runs still going; they stay
``running`` in the store and ``resume_all`` continues them on the next start.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from netsuke.observability import get_logger
from netsuke.routing import Workflow, WorkflowRunner

__all__ = ["WorkflowCatalog"]

log = get_logger("netsuke.node")


class WorkflowCatalog:
    def __init__(self, runner: WorkflowRunner) -> None:
        self.runner = runner
        self.workflows: dict[str, Workflow] = {}
        self._runs: set[asyncio.Task[Any]] = set()
        self.pending: dict[str, str] = {}
        """Runs started whose record may not be written yet: run id → workflow name."""

    def add(self, workflow: Workflow) -> Workflow:
        """Serve ``workflow`` under its name (replacing one of that name)."""
        self.workflows[workflow.name] = workflow
        return workflow

    def start(self, name: str, input: Any = None) -> str:
        """Start a run of ``name`` in the background; its id. ``KeyError`` when unknown."""
        workflow = self.workflows[name]
        run_id = uuid.uuid4().hex
        self.pending[run_id] = name
        task = asyncio.ensure_future(self._run(workflow, input, run_id))
        self._runs.add(task)
        task.add_done_callback(self._runs.discard)
        return run_id

    async def _run(self, workflow: Workflow, input: Any, run_id: str) -> None:
        try:
            await self.runner.start(workflow, input, run_id=run_id)
        except Exception as exc:  # the run's failure is recorded by the runner
            log.warning("node.workflow_failed", workflow=workflow.name, run=run_id, error=repr(exc))
        finally:
            self.pending.pop(run_id, None)

    async def aclose(self) -> None:
        for task in list(self._runs):
            task.cancel()
        await asyncio.gather(*self._runs, return_exceptions=True)
