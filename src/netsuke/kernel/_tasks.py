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
value (``TaskOutcome``). A task succeeds only by *returning*: one whose process exits ``normal``
without a value (``rt.exit(own_pid, "normal")`` from inside it) fails with reason ``normal``, as
Elixir's ``Task.await`` exits on a normal exit without a reply.

The rest of Elixir's ``Task`` API, with OTP's result table (``TaskOutcome(ok=True, value)`` is
``{:ok, value}``, ``TaskOutcome(ok=False, reason=r)`` is ``{:exit, r}``, ``None`` is ``nil``):

* ``await handle.yield_(timeout=5.0)``: the outcome, or ``None`` if the task still runs;
* ``await handle.shutdown(timeout=5.0 | "brutal_kill")``: unlink and stop the task (exit signal
  ``shutdown``, killed after ``timeout``; ``"brutal_kill"`` kills at once), then the table:
  a value it returned -> ok; it exited ``shutdown`` (``killed`` for ``brutal_kill``) because of
  this call -> ``None``; any other exit (before or during the call) -> ``{:exit, reason}``;
* ``handle.ignore()``: unlink and stop tracking; the task keeps running. Returns the outcome if
  it had already finished, else ``None``;
* ``await rt.tasks.join_many(handles, timeout=5.0)``: every value in input order
  (``Task.await_many``); raises at once when one fails, ``CallTimeoutError`` after ``timeout``;
* ``await rt.tasks.yield_many(handles, timeout=5.0, limit=None, on_timeout="nothing")``:
  ``[(handle, outcome | None)]`` in input order; ``on_timeout``: ``"nothing"``, ``"ignore"``,
  ``"kill_task"``;
* ``rt.tasks.async_stream(items, fn, max_concurrency=os.cpu_count(), ordered=True, timeout=5.0,
  on_timeout="exit", zip_input_on_exit=False)``: an async iterator of outcomes, running
  ``fn(item)`` with at most ``max_concurrency`` tasks at a time; a task that runs longer than
  ``timeout`` makes the iteration raise ``CallTimeoutError`` (``"exit"``) or yields
  ``TaskOutcome(False, reason="timeout")`` (``"kill_task"``). Closing the iterator
  (``aclose()``, ``contextlib.aclosing``) kills the tasks still running;
* ``TaskHandle.completed(value)``: a handle already done with ``value`` (no process);
* ``TaskSupervisor.child_spec(fn, restart="temporary", shutdown=5.0)``: a ``ChildSpec`` that
  runs ``fn()`` under any supervisor (Elixir's ``{Task, fun}`` child);
* ``await rt.tasks.start_child(fn, restart="temporary", shutdown=5.0)``: a fire-and-forget task
  (``Task.Supervisor.start_child``): returns its pid; ``restart="transient"`` restarts it after
  an abnormal exit, ``"permanent"`` after any exit, within the task supervisor's intensity
  (``fn`` must then be a coroutine function: a coroutine cannot run twice).
"""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from ._dynamic import DynamicSupervisor
from ._errors import ArgumentError, CallTimeoutError, TaskFailedError
from ._pid import KILLED, NORMAL, SHUTDOWN, ExitReason, Pid, Target
from ._process import F_DEAD, Process
from ._runtime import _drop_link, check_timeout
from ._supervisor import ChildSpec

__all__ = ["TaskHandle", "TaskOutcome", "TaskSupervisor"]

T = TypeVar("T")
R = TypeVar("R")
OnTimeout = Literal["nothing", "ignore", "kill_task"]


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
        h = self._handle
        if h is not None and not self._flags & F_DEAD:
            h._value = value
            h._replied = True
        self.stop(NORMAL)


class TaskHandle(Generic[T]):
    """A running task. ``pid`` is its process (``None`` for ``TaskHandle.completed``)."""

    __slots__ = ("_done", "_ignored", "_link", "_replied", "_rt", "_timer", "_value", "pid")

    def __init__(self, rt: Any) -> None:
        self._rt = rt
        self._value: Any = None
        self._replied = False
        self._done: asyncio.Future[Any] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._link: Process | None = None
        self._ignored = False
        self.pid: Pid | None = None

    @staticmethod
    def completed(value: R) -> TaskHandle[R]:
        """A handle already done with ``value`` (Elixir's ``Task.completed/1``): awaiting it
        returns ``value`` without a process. Needs a running event loop."""
        h: TaskHandle[R] = TaskHandle(None)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        fut.set_result(NORMAL)
        h._done = fut
        h._value = value
        h._replied = True
        return h

    def _cancel_timer(self, _: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def done(self) -> bool:
        return self._done is not None and self._done.done()

    def _outcome_now(self) -> TaskOutcome[T]:
        assert self._done is not None
        reason = self._done.result()
        if self._replied:
            return TaskOutcome(True, self._value)
        return TaskOutcome(False, None, reason)

    async def outcome(self, timeout: float | None = None) -> TaskOutcome[T]:
        """Wait for the task; returns its outcome as a value. Raises ``CallTimeoutError`` after
        ``timeout`` seconds (the task keeps running; ``cancel()`` it if you no longer need it)."""
        check_timeout(timeout)
        assert self._done is not None
        if self._ignored:  # OTP: an ignored task never replies to its handle again
            if timeout is None:
                await asyncio.Event().wait()
            else:
                await asyncio.sleep(timeout)
            raise CallTimeoutError(self.pid, timeout or 0.0)
        try:
            if timeout is None:
                await asyncio.shield(self._done)
            else:
                await asyncio.wait_for(asyncio.shield(self._done), timeout)
        except TimeoutError:
            raise CallTimeoutError(self.pid, timeout or 0.0) from None
        return self._outcome_now()

    async def yield_(self, timeout: float | None = 5.0) -> TaskOutcome[T] | None:
        """Elixir's ``Task.yield/2``: the outcome if the task ends within ``timeout`` seconds
        (``None``: wait forever), else ``None``; the task keeps running."""
        try:
            return await self.outcome(timeout)
        except CallTimeoutError:
            return None

    async def join(self, timeout: float | None = None) -> T:
        """Wait for the task and return its value. Raises ``TaskFailedError`` (its ``reason`` is
        the exception, ``"killed"``, ``"timeout"`` or ``"normal"`` for a task that exited
        without a value; an exception is also the ``__cause__``) or ``CallTimeoutError``."""
        out = await self.outcome(timeout)
        if out.ok:
            return out.value  # type: ignore[return-value]
        err = TaskFailedError(self.pid, out.reason)
        if isinstance(out.reason, BaseException):
            raise err from out.reason
        raise err

    async def shutdown(
        self, timeout: float | Literal["brutal_kill"] = 5.0
    ) -> TaskOutcome[T] | None:
        """Elixir's ``Task.shutdown/2``: unlink the task and stop it, then report. ``timeout``
        [``5.0``]: send the exit signal ``shutdown`` and kill the task if it has not exited
        after that many seconds; ``"brutal_kill"``: kill it at once. Returns ``TaskOutcome(ok)``
        when it had returned a value, ``None`` when it was stopped by this call (exit reason
        ``shutdown``, or ``killed`` with ``"brutal_kill"``; also when it had already exited so),
        ``TaskOutcome(False, reason)`` when it exited for any other reason (before the call,
        on its own meanwhile, or ``killed`` after the timeout)."""
        brutal = timeout == "brutal_kill"
        if not brutal:
            check_timeout(timeout)
        assert self._done is not None
        rt = self._rt
        p = rt._procs.get(self.pid.id) if rt is not None and self.pid is not None else None
        expected = KILLED if brutal else SHUTDOWN
        if p is not None and not p._flags & F_DEAD and not self._done.done():
            self._unlink()
            if brutal:
                rt._exit(p, KILLED)
            else:
                rt.exit(self.pid, SHUTDOWN)
                if not self._done.done():
                    try:
                        await asyncio.wait_for(asyncio.shield(self._done), timeout)  # type: ignore[arg-type]
                    except TimeoutError:
                        rt._exit(p, KILLED)  # OTP: a kill after the timeout reports killed
        reason = await asyncio.shield(self._done)
        if self._replied:
            return TaskOutcome(True, self._value)
        if type(reason) is str and reason == expected:
            return None
        return TaskOutcome(False, None, reason)

    def ignore(self) -> TaskOutcome[T] | None:
        """Elixir's ``Task.ignore/1``: unlink the task and let it run on its own. Returns its
        outcome if it had already ended, else ``None``. From then on the handle reports
        nothing: ``yield_`` returns ``None`` and ``join``/``outcome`` time out, as OTP's
        ``Task.await`` on an ignored task."""
        self._unlink()
        out = self._outcome_now() if self.done() and not self._ignored else None
        self._ignored = True
        return out

    def _unlink(self) -> None:
        lk = self._link
        if lk is not None and self.pid is not None:
            self._link = None
            p = self._rt._procs.get(self.pid.id)
            if p is not None:
                _drop_link(p, lk)
                _drop_link(lk, p)

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
        check_timeout(timeout)
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
            handle._link = linked
        if timeout is not None:
            handle._timer = rt._loop.call_later(timeout, _time_out, rt, p)
            handle._done.add_done_callback(handle._cancel_timer)
        return handle

    start = start_task

    async def start_child(  # type: ignore[override]
        self,
        work: Callable[[], Awaitable[Any]] | Awaitable[Any],
        *,
        restart: Literal["temporary", "transient", "permanent"] = "temporary",
        shutdown: float | Literal["brutal_kill", "infinity"] = 5.0,
    ) -> Pid:
        """Elixir's ``Task.Supervisor.start_child``: run ``work`` as a child nobody awaits and
        return its pid. ``restart`` [``"temporary"``]: ``"transient"`` restarts it after an
        abnormal exit, ``"permanent"`` after any exit (a restart calls ``work()`` again, so it
        must be a coroutine function). ``shutdown`` [``5.0``] as in ``ChildSpec``."""
        if restart != "temporary" and not callable(work):
            if inspect.iscoroutine(work):
                work.close()  # refused: never awaited, and no warning about it
            raise ArgumentError(f"restart={restart!r} needs a coroutine function, not {work!r}")
        if not (callable(work) or inspect.isawaitable(work)):
            raise TypeError(f"a task needs a coroutine function or an awaitable, not {work!r}")
        try:
            spec = ChildSpec(_TaskProcess, restart=restart, shutdown=shutdown, id="task")
        except (TypeError, ValueError) as e:
            raise ArgumentError(str(e)) from None
        pid = await self._start(spec, (work, None), None)
        assert pid is not None
        return pid

    @staticmethod
    def child_spec(
        work: Callable[[], Awaitable[Any]] | Any,
        *,
        id: Any = "task",
        restart: Literal["temporary", "transient", "permanent"] = "temporary",
        shutdown: float | Literal["brutal_kill", "infinity"] = 5.0,
    ) -> ChildSpec:
        """Elixir's ``Task.child_spec/1``: a ``ChildSpec`` that runs ``work()`` as a child of
        any supervisor (``{Task, fun}`` in a children list). Defaults as Elixir's: temporary,
        ``shutdown`` 5 s. ``work`` must be a coroutine function (a restart calls it again)."""
        if not callable(work):
            if inspect.iscoroutine(work):
                work.close()  # refused: never awaited, and no warning about it
            raise ArgumentError(f"a task child needs a coroutine function, not {work!r}")
        try:
            return ChildSpec(_TaskProcess, (work, None), id=id, restart=restart, shutdown=shutdown)
        except (TypeError, ValueError) as e:
            raise ArgumentError(str(e)) from None

    @staticmethod
    def completed(value: R) -> TaskHandle[R]:
        """``TaskHandle.completed(value)``."""
        return TaskHandle.completed(value)

    @staticmethod
    async def join_many(
        handles: Iterable[TaskHandle[Any]], timeout: float | None = 5.0
    ) -> list[Any]:
        """Elixir's ``Task.await_many/2``: the values of every task, in input order, once all
        have returned. Raises at once when any task fails (``TaskFailedError`` with its reason,
        the first to end first) and ``CallTimeoutError`` after ``timeout`` seconds [``5.0``;
        ``None``: forever]; the tasks keep running (``shutdown`` them if need be)."""
        hs = list(handles)
        check_timeout(timeout)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            for h in hs:
                if h.done() and not h._ignored and not h._replied:
                    await h.join(0)  # raises TaskFailedError with its reason
            pending = [h._done for h in hs if h._done is not None and not h.done()]
            if not pending and not any(h._ignored for h in hs):
                return [h._value for h in hs]
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                raise CallTimeoutError([h.pid for h in hs], timeout or 0.0)
            if not pending:  # only ignored handles are left: they never answer
                await asyncio.sleep(left) if left is not None else await asyncio.Event().wait()
                continue
            await asyncio.wait(pending, timeout=left, return_when=asyncio.FIRST_COMPLETED)

    @staticmethod
    async def yield_many(
        handles: Iterable[TaskHandle[Any]],
        timeout: float | None = 5.0,
        *,
        limit: int | None = None,
        on_timeout: OnTimeout = "nothing",
    ) -> list[tuple[TaskHandle[Any], TaskOutcome[Any] | None]]:
        """Elixir's ``Task.yield_many/2``: wait up to ``timeout`` seconds [``5.0``; ``None``:
        forever] for the tasks, or until ``limit`` of them have ended. Returns
        ``[(handle, outcome or None)]`` in input order. ``on_timeout`` [``"nothing"``] applies
        to the tasks still running when the timeout (not the limit) ends the wait:
        ``"ignore"`` (``handle.ignore()``) or ``"kill_task"`` (``shutdown("brutal_kill")``)."""
        hs = list(handles)
        check_timeout(timeout)
        if on_timeout not in ("nothing", "ignore", "kill_task"):
            raise ArgumentError(f"on_timeout must be nothing, ignore or kill_task: {on_timeout!r}")
        if limit is not None and (type(limit) is not int or limit < 1):
            raise ArgumentError(f"limit must be a positive int or None: {limit!r}")
        want = len(hs) if limit is None else min(limit, len(hs))
        futs = {h._done for h in hs if h._done is not None}
        timed_out = False
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while sum(1 for h in hs if h.done()) < want:
            pending = [f for f in futs if f is not None and not f.done()]
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                timed_out = True
                break
            await asyncio.wait(pending, timeout=left, return_when=asyncio.FIRST_COMPLETED)
        out: list[tuple[TaskHandle[Any], TaskOutcome[Any] | None]] = []
        for h in hs:
            res: TaskOutcome[Any] | None = h._outcome_now() if h.done() else None
            if res is None and timed_out:
                if on_timeout == "kill_task":
                    res = await h.shutdown("brutal_kill")
                elif on_timeout == "ignore":
                    res = h.ignore()
            out.append((h, res))
        return out

    def async_stream(
        self,
        items: Iterable[Any] | AsyncIterable[Any],
        fn: Callable[[Any], Awaitable[Any]],
        *,
        max_concurrency: int | None = None,
        ordered: bool = True,
        timeout: float | None = 5.0,
        on_timeout: Literal["exit", "kill_task"] = "exit",
        zip_input_on_exit: bool = False,
    ) -> AsyncIterator[TaskOutcome[Any]]:
        """Elixir's ``Task.Supervisor.async_stream_nolink``: run ``fn(item)`` for each item as
        a supervised task, at most ``max_concurrency`` [``os.cpu_count()``] at a time, and
        yield each outcome: in input order (``ordered`` [``True``]) or as they finish. Each
        task may run ``timeout`` [``5.0``; ``None``: forever] seconds; then ``on_timeout``
        [``"exit"``]: kill every task of the stream and raise ``CallTimeoutError``;
        ``"kill_task"``: kill that task and yield ``TaskOutcome(False, reason="timeout")``.
        ``zip_input_on_exit`` [``False``]: failed outcomes carry ``(item, reason)``. Nothing
        runs before the first ``__anext__``; closing the iterator kills the running tasks and
        closes a generator source.
        Raises ``ArgumentError`` at once for a bad option."""
        mc = (os.cpu_count() or 1) if max_concurrency is None else max_concurrency
        if type(mc) is not int or mc < 1:
            raise ArgumentError(f"max_concurrency must be a positive int: {max_concurrency!r}")
        check_timeout(timeout)
        if on_timeout not in ("exit", "kill_task"):
            raise ArgumentError(f"on_timeout must be exit or kill_task: {on_timeout!r}")
        if not callable(fn):
            raise ArgumentError(f"async_stream needs a function of one item, not {fn!r}")
        return self._stream(items, fn, mc, ordered, timeout, on_timeout, zip_input_on_exit)

    async def _stream(
        self,
        items: Iterable[Any] | AsyncIterable[Any],
        fn: Callable[[Any], Awaitable[Any]],
        mc: int,
        ordered: bool,
        timeout: float | None,
        on_timeout: str,
        zip_input: bool,
    ) -> AsyncIterator[TaskOutcome[Any]]:
        loop = self._rt._loop
        if isinstance(items, AsyncIterable):
            ait = aiter(items)
            sit = None
        else:
            ait = None
            sit = iter(items)
        running: dict[asyncio.Future[Any], tuple[int, Any, TaskHandle[Any], float | None]] = {}
        results: dict[int, TaskOutcome[Any]] = {}
        finished: list[TaskOutcome[Any]] = []
        next_in = 0
        next_out = 0
        exhausted = False

        def record(idx: int, item: Any, out: TaskOutcome[Any]) -> None:
            if not out.ok and zip_input:
                out = TaskOutcome(False, None, (item, out.reason))
            if ordered:
                results[idx] = out
            else:
                finished.append(out)

        try:
            while True:
                while not exhausted and len(running) < mc:
                    try:
                        item = await anext(ait) if ait is not None else next(sit)  # type: ignore[arg-type]
                    except (StopIteration, StopAsyncIteration):
                        exhausted = True
                        break
                    h = await self.start_task(_bind(fn, item))
                    assert h._done is not None
                    dl = None if timeout is None else loop.time() + timeout
                    running[h._done] = (next_in, item, h, dl)
                    next_in += 1
                if ordered:
                    while next_out in results:
                        yield results.pop(next_out)
                        next_out += 1
                else:
                    while finished:
                        yield finished.pop(0)
                if not running:
                    if exhausted:
                        return
                    continue
                dls = [d for _, _, _, d in running.values() if d is not None]
                wait = None if not dls else max(0.0, min(dls) - loop.time())
                done, _ = await asyncio.wait(
                    list(running), timeout=wait, return_when=asyncio.FIRST_COMPLETED
                )
                for f in done:
                    idx, item, h, _ = running.pop(f)
                    record(idx, item, h._outcome_now())
                now = loop.time()
                for f, (idx, item, h, dl) in list(running.items()):
                    if dl is None or dl > now or f.done():
                        continue
                    if on_timeout == "exit":
                        raise CallTimeoutError(h.pid, timeout or 0.0)
                    del running[f]
                    h.cancel()
                    record(idx, item, TaskOutcome(False, None, "timeout"))
        finally:
            for _, _, h, _ in running.values():
                h.cancel()
            # A halted stream halts its source, as Elixir's streams run their after-callbacks.
            if inspect.isasyncgen(ait):
                await ait.aclose()
            elif inspect.isgenerator(sit):
                sit.close()


def _bind(fn: Callable[[Any], Awaitable[Any]], item: Any) -> Callable[[], Awaitable[Any]]:
    return lambda: fn(item)


def _time_out(rt: Any, p: Process) -> None:  # the ``timeout`` option of ``start_task``
    if p.alive:
        rt._exit(p, "timeout")
