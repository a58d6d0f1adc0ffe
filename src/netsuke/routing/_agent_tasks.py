"""Agents take the tasks whose capabilities they offer.

``AgentTaskWorkers(queue, agents, store)`` runs one ``Worker`` per stored agent definition that
declares capabilities (named ``agent:<name>``), offering exactly those capabilities: it takes a
queued task when the agent offers **all** the capabilities the task asks for (a task asking for
none is left to handler workers). For each task:

* the payload is the agent's input: with an input schema the payload itself (validated by it);
  without one the payload's ``message`` string (a payload without one fails the attempt);
* the turn runs in a session of its own (``<agent>-task-<id>``, stopped afterwards), so tasks
  never share a conversation;
* the reply (the turn's output) is the task's result; a failed turn (``InvalidInputError``,
  ``TurnError`` ...) is a failed attempt under the task's retry policy, then the dead-letter
  queue.

The set of workers follows ``definition.changed`` events (created, updated, rolled back,
deleted) and is also reconciled every ``refresh`` [``10.0`` s] from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

from netsuke.agents import Agents
from netsuke.events import Event, Subscription, topics
from netsuke.store import CAPABLE_ONLY, Store, TaskRecord

from ._errors import TaskValidationError
from ._observe import log
from ._queue import TaskQueue
from ._worker import Worker

__all__ = ["AgentTaskWorkers", "agent_input"]


def agent_input(task: TaskRecord, has_schema: bool) -> Any:
    """The agent's input for ``task``: its payload (with an input schema) or its ``message``."""
    if has_schema:
        return task.payload
    message = task.payload.get("message")
    if not isinstance(message, str) or not message.strip():
        raise TaskValidationError(
            "payload.message", "a non-empty string (the agent has no input schema)"
        )
    return message


class AgentTaskWorkers:
    """The task workers of a node's agents; see the module documentation."""

    def __init__(
        self,
        queue: TaskQueue,
        agents: Agents,
        store: Store,
        *,
        lease: float = 60.0,
        concurrency: int = 4,
        refresh: float = 10.0,
    ) -> None:
        self.queue = queue
        self.agents = agents
        self.store = store
        self.lease = lease
        self.concurrency = concurrency
        self.refresh = refresh
        self.workers: dict[str, Worker] = {}
        self._offered: dict[str, frozenset[str]] = {}
        self._sub: Subscription | None = None
        self._loop: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    @property
    def offered(self) -> dict[str, frozenset[str]]:
        """Agent name → the capabilities its worker offers."""
        return dict(self._offered)

    async def start(self) -> AgentTaskWorkers:
        await self.reconcile()
        if self.queue.events is not None:
            self._sub = self.queue.events.listen(topics.DEFINITION_CHANGED, self._changed)
        self._loop = asyncio.create_task(self._periodic(), name="netsuke-agent-task-workers")
        return self

    async def aclose(self) -> None:
        if self._sub is not None:
            self._sub.close()
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)
        async with self._lock:
            for name in list(self.workers):
                await self._stop(name)

    async def _changed(self, event: Event) -> None:
        await self.reconcile()

    async def _periodic(self) -> None:
        while True:
            await asyncio.sleep(self.refresh)
            try:
                await self.reconcile()
            except Exception as exc:  # the store is unreachable: the next round retries
                log.warning("agent_tasks.reconcile_failed", error=repr(exc))

    async def _definitions(self) -> dict[str, tuple[frozenset[str], bool]]:
        out: dict[str, tuple[frozenset[str], bool]] = {}
        cursor: str | None = None
        while True:
            page = await self.store.agents.list(limit=500, cursor=cursor)
            for d in page.items:
                if d.capabilities:
                    out[d.name] = (frozenset(d.capabilities), d.input_schema is not None)
            cursor = page.next_cursor
            if cursor is None:
                return out

    async def reconcile(self) -> None:
        """Start, replace or stop workers so they match the stored definitions."""
        wanted = await self._definitions()
        async with self._lock:
            for name in [n for n in self.workers if n not in wanted]:
                await self._stop(name)
            for name, (caps, schema) in wanted.items():
                if self._offered.get(name) == caps and name in self.workers:
                    self.workers[name].handler = self._handler(name, schema)
                    continue
                if name in self.workers:
                    await self._stop(name)
                worker = Worker(
                    self.queue,
                    self._handler(name, schema),
                    name=f"agent:{name}",
                    capabilities=caps | {CAPABLE_ONLY},
                    concurrency=self.concurrency,
                    lease=self.lease,
                )
                self.workers[name] = await worker.start()
                self._offered[name] = caps
                log.info("agent_tasks.worker_started", agent=name, capabilities=sorted(caps))

    async def _stop(self, name: str) -> None:
        worker = self.workers.pop(name)
        self._offered.pop(name, None)
        await worker.stop()

    def _handler(self, name: str, has_schema: bool) -> Any:
        agents = self.agents

        async def handle(task: TaskRecord) -> Any:
            message = agent_input(task, has_schema)
            session = await agents.start_session(name, f"task-{task.id}")
            try:
                return _jsonable(await agents.run(session.session_id, message))
            finally:
                with contextlib.suppress(Exception):
                    await agents.stop_agent(session.session_id)

        return handle


def _jsonable(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    if isinstance(value, Mapping):
        return dict(value)
    return value
