"""``TaskHosting``: the work a node runs from its queue, and the tasks nobody can take.

It starts, in order: the handler workers and workflows loaded from ``WorkerSpec``s
(``load_workers``), and the agents' task workers (``AgentTaskWorkers``); ``aclose`` stops them
in the reverse order. Every ``scan`` [``5.0`` s] it counts the ready queued tasks that none of
them can take (the gauge ``netsuke_tasks_unroutable``); ``detail(task)`` says why a queued task
waits. Workers in other processes (``netsuke worker``) are not known here: the detail says so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from netsuke.agents import Agents
from netsuke.store import Store, TaskRecord

from ._agent_tasks import AgentTaskWorkers
from ._loading import LoadedWorkers, WorkerSpec, load_workers
from ._observe import METRICS, log
from ._queue import TaskQueue
from ._workflow import Workflow

__all__ = ["TaskHosting", "takes"]


def takes(caps: frozenset[str] | None, kinds: Sequence[str] | None, task: TaskRecord) -> bool:
    """Whether a worker offering ``caps`` (``None``: any) narrowed to ``kinds`` takes ``task``."""
    if kinds is not None and task.kind not in kinds:
        return False
    return caps is None or all(c in caps for c in task.capabilities)


class TaskHosting:
    """See the module documentation. ``agents`` None: no agent workers."""

    def __init__(
        self,
        queue: TaskQueue,
        store: Store,
        agents: Agents | None,
        specs: Sequence[WorkerSpec] = (),
        *,
        scan: float = 5.0,
    ) -> None:
        self.queue = queue
        self.loaded: LoadedWorkers = load_workers(specs, queue)  # WorkerLoadError first
        self.agent_workers = AgentTaskWorkers(queue, agents, store) if agents is not None else None
        self.scan = scan
        self._scanner: asyncio.Task[None] | None = None

    @property
    def workflows(self) -> list[Workflow]:
        return list(self.loaded.workflows)

    def offered(self) -> list[tuple[frozenset[str] | None, list[str] | None]]:
        out = list(self.loaded.offered)
        if self.agent_workers is not None:
            out += [(caps, None) for caps in self.agent_workers.offered.values()]
        return out

    def can_take(self, task: TaskRecord) -> bool:
        # an agent worker takes only tasks asking for capabilities (see AgentTaskWorkers)
        loaded = any(takes(c, k, task) for c, k in self.loaded.offered)
        agents = self.agent_workers.offered.values() if self.agent_workers is not None else ()
        return loaded or (bool(task.capabilities) and any(takes(c, None, task) for c in agents))

    def detail(self, task: TaskRecord) -> str | None:
        """Why ``task`` waits, when it is queued and nothing on this node can take it."""
        if task.status != "queued" or self.can_take(task):
            return None
        asked = ", ".join(task.capabilities) or "none"
        return (
            f"no agent or worker on this node takes it (kind {task.kind!r}, capabilities "
            f"{asked}): define an agent offering those capabilities, or run a worker for it "
            "(serve --worker module:function, or netsuke worker); a worker in another process "
            "is not visible here"
        )

    async def start(self) -> TaskHosting:
        await self.loaded.start()
        if self.agent_workers is not None:
            await self.agent_workers.start()
        self._scanner = asyncio.create_task(self._scan_loop(), name="netsuke-task-scan")
        return self

    async def aclose(self) -> None:
        if self._scanner is not None:
            self._scanner.cancel()
            await asyncio.gather(self._scanner, return_exceptions=True)
        if self.agent_workers is not None:
            await self.agent_workers.aclose()
        await self.loaded.stop()
        METRICS.unroutable = None

    async def count_unroutable(self) -> int:
        """Ready queued tasks (the oldest 1000) that nothing on this node can take."""
        now = self.queue.now()
        page = await self.queue.list(status="queued", limit=1000)
        return sum(1 for t in page.items if t.run_at <= now and not self.can_take(t))

    async def _scan_loop(self) -> None:
        while True:
            try:
                METRICS.unroutable = n = await self.count_unroutable()
                if n:
                    log.info("tasks.unroutable", count=n)
            except Exception as exc:
                log.warning("tasks.scan_failed", error=repr(exc))
            await asyncio.sleep(self.scan)
