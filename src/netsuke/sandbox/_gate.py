"""``ExecutionGate``: how many function calls run at once, node-wide and per caller.

* At most ``max_running`` calls run at once on the node (each holds one slot for its whole
  run); a call that finds none free waits, first come first served, in a queue of at most
  ``max_waiting`` calls, for at most ``max_wait_s`` seconds.
* One caller (an API key, by its immutable prefix) has at most ``per_caller`` calls running
  or waiting at once.
* Past either bound, or when the wait times out, the call is refused before anything runs or
  is recorded: ``ExecutionBusyError(scope, limit, retry_after_s)`` (``scope`` is ``"caller"``
  or ``"node"``); the API answers 429 with ``Retry-After``. Refusals are counted
  (``netsuke_sandbox_executions_busy_total{scope}``) and logged (``sandbox.execution.busy``).

Calls without a caller (agent tool calls) are bounded by the node-wide limit only.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ._errors import ExecutionBusyError
from ._observe import METRICS, log

__all__ = ["ExecutionGate"]


class ExecutionGate:
    """Concurrency limits for function calls (defaults: 8 running, 2 per caller, 32
    waiting for at most 30 s)."""

    def __init__(
        self,
        *,
        max_running: int = 8,
        per_caller: int = 2,
        max_waiting: int = 32,
        max_wait_s: float = 30.0,
    ) -> None:
        if max_running < 1 or per_caller < 1 or max_waiting < 0 or max_wait_s <= 0:
            raise ValueError(
                "max_running and per_caller must be >= 1, max_waiting >= 0, max_wait_s > 0"
            )
        self.max_running = max_running
        self.per_caller = per_caller
        self.max_waiting = max_waiting
        self.max_wait_s = max_wait_s
        self._slots = asyncio.Semaphore(max_running)
        self._waiting = 0
        self._running = 0
        self._callers: dict[str, int] = {}

    @property
    def running(self) -> int:
        """Calls holding a slot now."""
        return self._running

    @property
    def waiting(self) -> int:
        """Calls queued for a slot now."""
        return self._waiting

    def _busy(self, scope: str, limit: int, caller: str | None) -> ExecutionBusyError:
        METRICS.busy[scope] += 1
        log.info("sandbox.execution.busy", scope=scope, limit=limit, caller=caller)
        return ExecutionBusyError(scope, limit)

    @asynccontextmanager
    async def slot(self, caller: str | None = None) -> AsyncIterator[None]:
        """Hold one running slot for ``caller`` while the block runs; ``ExecutionBusyError``
        when a bound is reached."""
        if caller is not None and self._callers.get(caller, 0) >= self.per_caller:
            raise self._busy("caller", self.per_caller, caller)
        if self._slots.locked() and self._waiting >= self.max_waiting:
            raise self._busy("node", self.max_running, caller)
        if caller is not None:
            self._callers[caller] = self._callers.get(caller, 0) + 1
        try:
            self._waiting += 1
            try:
                async with asyncio.timeout(self.max_wait_s):
                    await self._slots.acquire()
            except TimeoutError:
                raise self._busy("node", self.max_running, caller) from None
            finally:
                self._waiting -= 1
            self._running += 1
            try:
                yield
            finally:
                self._running -= 1
                self._slots.release()
        finally:
            if caller is not None:
                left = self._callers[caller] - 1
                if left:
                    self._callers[caller] = left
                else:
                    del self._callers[caller]
