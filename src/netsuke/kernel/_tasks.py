"""Supervised tasks: one-off coroutines run as processes, like Elixir's ``Task.Supervisor``.

``handle = rt.tasks.start(fn, link=None, timeout=None)`` runs ``fn()`` (a coroutine function, or a
coroutine) as a process under the node's task supervisor and returns a :class:`TaskHandle` at
once. Options (defaults):

* ``link`` [``None``]: a process to link the task to. A crash of the task then takes that
  process down (unless it traps exits), and the death of that process kills the task
  (Elixir's ``Task.Supervisor.async``). Without it the task is unlinked (``async_nolink``).
* ``timeout`` [``None``]: seconds the task may run; after it the task is killed and its reason is
  ``"timeout"``.

Tasks are ``temporary`` children shut down with ``brutal_kill``: never restarted, killed at once
when the node stops. Killing a task (``handle.cancel()``, a linked exit, the timeout) cancels its
coroutine, so cancellation propagates into whatever it awaits.

A crashed task never crashes its awaiter by surprise: ``await handle.join()`` raises
``TaskFailedError`` carrying the reason, and ``await handle.outcome()`` returns the outcome as a
value (``TaskOutcome``).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ._dynamic import DynamicSupervisor
from ._errors import CallTimeoutError, TaskFailedError
from ._pid import NORMAL, ExitReason, Pid, Target
from ._process import Process
from ._supervisor import ChildSpec

__all__ = ["TaskHandle", "TaskOutcome", "TaskSupervisor"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class TaskOutcome(Generic[T]):
    """How a task ended: ``ok`` with ``value``, or not ``ok`` with ``reason``."""

    ok: bool
    value: T | None = None
    reason: ExitReason = NORMAL


class _TaskProcess(Process):
    __slots__ = ("_handle", "_work")
    hibernate_after = None

    def init(self, arg: Any) -> None:
        self._work, self._handle = arg
        self.continue_with(None)

    async def handle_continue(self, _: Any) -> None:
        work = self._work
        self._work = None
        coro = work() if callable(work) else work
        value = await coro
        self._handle._value = value
        self.stop(NORMAL)


class TaskHandle(Generic[T]):
    """A running task. ``pid`` is its process."""

    __slots__ = ("_done", "_rt", "_timer", "_value", "pid")

    def __init__(self, rt: Any) -> None:
        self._rt = rt
        self._value: Any = None
        self._done: asyncio.Future[Any] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.pid: Pid | None = None

    def _cancel_timer(self, _: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def done(self) -> bool:
        return self._done is not None and self._done.done()

    async def outcome(self, timeout: float | None = None) -> TaskOutcome[T]:
        """Wait for the task; returns its outcome as a value. Raises ``CallTimeoutError`` after
        ``timeout`` seconds (the task keeps running; ``cancel()`` it if you no longer need it)."""
        assert self._done is not None
        try:
            if timeout is None:
                reason = await asyncio.shield(self._done)
            else:
                reason = await asyncio.wait_for(asyncio.shield(self._done), timeout)
        except TimeoutError:
            raise CallTimeoutError(self.pid, timeout or 0.0) from None
        if reason == NORMAL and type(reason) is str:
            return TaskOutcome(True, self._value)
        return TaskOutcome(False, None, reason)

    async def join(self, timeout: float | None = None) -> T:
        """Wait for the task and return its value. Raises ``TaskFailedError`` (its ``reason`` is
        the exception, ``"killed"`` or ``"timeout"``; an exception is also the ``__cause__``) or
        ``CallTimeoutError``."""
        out = await self.outcome(timeout)
        if out.ok:
            return out.value  # type: ignore[return-value]
        err = TaskFailedError(self.pid, out.reason)
        if isinstance(out.reason, BaseException):
            raise err from out.reason
        raise err

    def on_exit(self, callback: Callable[[ExitReason], object]) -> None:
        """Call ``callback(reason)`` once the task has exited (soon after, from the event loop,
        outside any process; scheduled at once if it already has). Cheaper than a monitor for
        a caller that only needs to hear about an exit: no ref, no ``Down`` message."""
        assert self._done is not None
        self._done.add_done_callback(lambda done: callback(done.result()))

    def cancel(self) -> bool:
        """Kill the task (its coroutine is cancelled). Returns whether it was still running."""
        if self.pid is None or self.done():
            return False
        return bool(self._rt.kill(self.pid))

    def __repr__(self) -> str:
        return f"<TaskHandle {self.pid!r} done={self.done()}>"


_TASK_SPEC = ChildSpec(_TaskProcess, restart="temporary", shutdown="brutal_kill", id="task")


class TaskSupervisor(DynamicSupervisor):
    """The node's supervisor of tasks: ``rt.tasks``. See the module documentation."""

    __slots__ = ()

    async def start_task(
        self,
        work: Callable[[], Awaitable[T]] | Awaitable[T],
        *,
        link: Target | None = None,
        timeout: float | None = None,
    ) -> TaskHandle[T]:
        """Start ``work`` as a supervised task; returns its handle once it runs."""
        if not (callable(work) or inspect.isawaitable(work)):
            raise TypeError(f"a task needs a coroutine function or an awaitable, not {work!r}")
        rt = self._rt
        linked = rt._resolve_or_noproc(link) if link is not None else None
        handle: TaskHandle[T] = TaskHandle(rt)
        pid = await self._start(_TASK_SPEC, (work, handle), None)
        assert pid is not None
        p = rt._procs[pid.id]
        handle.pid = pid
        handle._done = rt._exit_future(p)
        if linked is not None:
            rt._link_procs(p, linked)
        if timeout is not None:
            handle._timer = rt._loop.call_later(timeout, _time_out, rt, p)
            handle._done.add_done_callback(handle._cancel_timer)
        return handle

    start = start_task


def _time_out(rt: Any, p: Process) -> None:
    if p.alive:
        rt._exit(p, "timeout")
