"""The process: a GenServer-like base class with a mailbox, run by the node's event loop.

A process is an object, not a thread or a permanent asyncio task. Messages go into its mailbox;
while the mailbox has messages an asyncio task serves them one at a time, in order. When it has
nothing to do the process *hibernates*: the task ends, the mailbox is released, and what stays is
the object and its state. The next message starts a new task, transparently.

Callbacks (override what you need; each may be ``def`` or ``async def``):

========================  ==================================================================
``init(arg)``             runs before ``start`` returns. Raise to refuse to start (the starter
                          gets ``StartError``); return ``IGNORE`` to not start (supervisors
                          record the child as not running). Keep it short: the starter waits.
                          Ask for ``continue_with(arg)`` to do slow set-up after ``start``.
``handle_continue(arg)``  runs before any other message after ``continue_with``.
``handle_call(req, from_)`` answers a ``call``: its return value is the reply, or ``NOREPLY``
                          to answer later with ``reply(from_, value)``. Default: crash with
                          ``UnhandledMessageError``.
``handle_cast(req)``      handles a ``cast``. Default: crash with ``UnhandledMessageError``.
``handle_info(msg)``      handles everything else: ``send``, ``Exit`` (when trapping exits),
                          ``Down`` (monitors). Default: log and drop.
``terminate(reason)``     runs when the process stops itself (``stop``), crashes in a
                          callback, is stopped with ``Runtime.stop``, or traps exits and its
                          parent (its supervisor) asks it to shut down. It does **not** run when
                          the process is killed, or when a linked process's exit signal takes it
                          down while it does not trap exits.
========================  ==================================================================

An exception raised by a callback crashes the process: ``terminate`` runs, the process exits
with the exception as its reason, its links and monitors are told, a caller waiting on it gets
``ProcessExitedError`` at once, and the error is logged. Nothing else is affected.

From a callback, a process can also ask (OTP's return tuples): ``stop(reason)`` (exit after
the callback), ``exit(reason)`` (leave the callback at once, ``terminate(reason)``, exit; in
``terminate`` it replaces the exit reason; in ``init`` the start fails), ``set_timeout(s)``
(``handle_info(TIMEOUT)`` if no message arrives within ``s`` seconds), ``hibernate()``,
``continue_with(arg)``.

Class options: ``hibernate_after`` (default ``1.0`` second): idle time before the task is
released; ``0`` hibernates as soon as the mailbox is empty; ``None`` never hibernates.

Do not override ``__init__``: the node creates the object and ``init(arg)`` sets it up, as in
OTP (one init argument; pass a tuple, dict or dataclass for more). Subclasses may declare
``__slots__`` to make idle processes cheaper still.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import deque
from typing import TYPE_CHECKING, Any, ClassVar, Final, NoReturn

import structlog

from ._errors import ArgumentError, UnhandledMessageError
from ._messages import Cast, Exit, From, SysContinue, SysParentExit, SysStop
from ._pid import NORMAL, ExitReason, Pid, Ref, Target, is_abnormal

if TYPE_CHECKING:
    from ._runtime import Runtime

__all__ = ["IGNORE", "NOREPLY", "TIMEOUT", "ExitNow", "Process"]

log = structlog.get_logger("netsuke.kernel")

F_TRAP: Final = 1
F_DEAD: Final = 2
F_STARTING: Final = 4
F_HIBERNATE: Final = 8
F_STOP: Final = 16
F_SCOPE: Final = 32
F_SCOPE_CANCELLED: Final = 64
F_NORESTART: Final = 128
F_TIMEOUT: Final = 256  # a callback asked for a timeout (``set_timeout``); requested or armed
IDLE_SHIFT: Final = 9
IDLE_UNIT: Final = 1 << IDLE_SHIFT  # the bits above 9 count the sweeps a process was idle for
IDLE_CLEAR: Final = IDLE_UNIT - 1


class _Sentinel:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


NOREPLY: Final[Any] = _Sentinel("NOREPLY")
"""Return it from ``handle_call`` to reply later with ``Process.reply(from_, value)``."""
IGNORE: Final[Any] = _Sentinel("IGNORE")
"""Return it from ``init`` to not start; ``start`` then returns ``None``."""
TIMEOUT: Final[Any] = _Sentinel("TIMEOUT")
"""What ``handle_info`` gets when a ``set_timeout`` expires (OTP's ``timeout`` message)."""


class ExitNow(BaseException):
    """Raised by ``Process.exit(reason)``: leaves the callback and exits with ``reason``.

    A ``BaseException``, so ``except Exception`` in a callback does not swallow it."""

    def __init__(self, reason: ExitReason) -> None:
        super().__init__(reason)
        self.reason = reason


class _Ext:
    """The rarely used parts of a process, allocated on first use."""

    __slots__ = (
        "deferred",
        "monitor_names",
        "monitored_by",
        "monitoring",
        "stop_reason",
        "timeout",
    )

    def __init__(self) -> None:
        self.monitored_by: dict[Ref, Process | asyncio.Future[Any]] | None = None
        # monitors taken by name: ref -> the name form their Down reports
        self.monitor_names: dict[Ref, Any] | None = None
        # a callback's timeout (``set_timeout``): seconds, then the armed timer
        self.timeout: Any = None
        self.monitoring: dict[Ref, Process] | None = None
        self.deferred: set[From] | None = None
        self.stop_reason: ExitReason = NORMAL


class Process:
    """Base class of every Netsuke process. See the module documentation for the callbacks."""

    __slots__ = (
        "_arg",
        "_current",
        "_ext",
        "_flags",
        "_id",
        "_links",
        "_mailbox",
        "_parent",
        "_reg",
        "_rt",
        "_spec",
        "_task",
        "_waiter",
    )

    hibernate_after: ClassVar[float | None] = 1.0
    _call_async: ClassVar[bool] = False
    _cast_async: ClassVar[bool] = False
    _info_async: ClassVar[bool] = False

    _rt: Runtime
    _id: int
    _mailbox: deque[Any] | None
    _task: asyncio.Task[None] | None
    _waiter: asyncio.Future[Any] | None
    _current: From | None
    _links: Process | set[Process] | None
    _flags: int
    _reg: Any
    _parent: Process | None
    _spec: Any
    _arg: Any
    _ext: _Ext | None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            raise TypeError(
                f"{cls.__name__} overrides __init__; processes are set up in init(arg) instead"
            )
        cls._call_async = inspect.iscoroutinefunction(cls.handle_call)
        cls._cast_async = inspect.iscoroutinefunction(cls.handle_cast)
        cls._info_async = inspect.iscoroutinefunction(cls.handle_info)

    # ----------------------------------------------------------------- callbacks

    def init(self, arg: Any) -> Any:
        """Set up the state from the start argument. May be ``async``."""
        return None

    def handle_continue(self, arg: Any) -> Any:
        """Slow set-up requested with ``continue_with(arg)``. May be ``async``."""
        return None

    def handle_call(self, request: Any, from_: From) -> Any:
        """Answer a call. Return the reply, or ``NOREPLY``. May be ``async``."""
        raise UnhandledMessageError(self.pid, "call", request)

    def handle_cast(self, request: Any) -> Any:
        """Handle a cast. May be ``async``."""
        raise UnhandledMessageError(self.pid, "cast", request)

    def handle_info(self, message: Any) -> Any:
        """Handle any other message (sends, ``Exit``, ``Down``). May be ``async``."""
        log.warning("unexpected_message", pid=repr(self.pid), message=repr(message)[:200])
        return None

    def terminate(self, reason: ExitReason) -> Any:
        """Clean up before exiting. May be ``async``."""
        return None

    # ------------------------------------------------------------ process API

    @property
    def pid(self) -> Pid:
        """This process's Pid."""
        return Pid(self._rt.node, self._id)

    @property
    def runtime(self) -> Runtime:
        """The node this process runs on."""
        return self._rt

    @property
    def alive(self) -> bool:
        return not self._flags & F_DEAD

    @property
    def hibernating(self) -> bool:
        """True when no asyncio task is held for this process."""
        return self._task is None

    @property
    def trap_exit(self) -> bool:
        """When true, exit signals from linked processes arrive as ``Exit`` messages instead of
        taking this process down (except ``kill``). Default: false."""
        return bool(self._flags & F_TRAP)

    @trap_exit.setter
    def trap_exit(self, value: bool) -> None:
        if value:
            self._flags |= F_TRAP
        else:
            self._flags &= ~F_TRAP

    @staticmethod
    def reply(from_: From, value: Any) -> None:
        """Send a deferred reply. Ignored when the caller already gave up."""
        fut = from_.future
        if not fut.done():
            fut.set_result(value)

    @staticmethod
    def reply_error(from_: From, error: BaseException) -> None:
        """Make the caller's ``call`` raise ``error`` (the process itself does not crash)."""
        fut = from_.future
        if not fut.done():
            fut.set_exception(error)

    def reply_later(self, from_: From) -> Any:
        """Mark ``from_`` as answered later; returns ``NOREPLY`` for ``handle_call`` to return."""
        return NOREPLY

    def exit(self, reason: ExitReason) -> NoReturn:
        """Erlang's ``exit/1`` in a gen_server: leave the current callback at once and exit with
        ``reason``. From ``handle_*``/``handle_continue``, ``terminate(reason)`` runs first;
        from ``terminate``, the process exits with ``reason`` instead of the reason terminate
        was given (a child stopped by its supervisor may so exit with something other than
        ``shutdown``); from ``init``, the start fails with ``StartError(reason)``."""
        raise ExitNow(reason)

    def stop(self, reason: ExitReason = NORMAL) -> None:
        """Exit after the current callback returns (a pending reply is sent first)."""
        self._flags |= F_STOP
        self._ensure_ext().stop_reason = reason

    def set_timeout(self, seconds: float | None) -> None:
        """OTP's callback timeout (``{reply, R, S, Timeout}``): when the current callback
        returns, if no message arrives within ``seconds`` (``0``: none is waiting), the process
        gets ``TIMEOUT`` in ``handle_info``. Any message that comes first (or is already in the
        mailbox) cancels it; ``None`` cancels a pending request (OTP's ``infinity``, the
        default). A process waiting on a timeout does not hibernate. Works in ``init`` too."""
        if seconds is None:
            if self._flags & F_TIMEOUT:
                self._flags &= ~F_TIMEOUT
                ext = self._ensure_ext()
                t = ext.timeout
                if type(t) is asyncio.TimerHandle:
                    t.cancel()
                ext.timeout = None
            return
        if type(seconds) not in (int, float) or not 0 <= seconds < float("inf"):
            raise ArgumentError(f"set_timeout needs seconds >= 0 or None, not {seconds!r}")
        self._ensure_ext().timeout = float(seconds)
        self._flags |= F_TIMEOUT

    def _timeout_fired(self, w: asyncio.Future[Any]) -> None:
        if self._waiter is w and self._flags & F_TIMEOUT:
            self._flags &= ~F_TIMEOUT
            self._ensure_ext().timeout = None
            self._deliver(TIMEOUT)

    def hibernate(self) -> None:
        """Release the task as soon as the mailbox is empty."""
        self._flags |= F_HIBERNATE

    def continue_with(self, arg: Any) -> None:
        """Run ``handle_continue(arg)`` before any other message."""
        mb = self._mailbox
        if mb is None:
            mb = self._mailbox = deque()
        mb.appendleft(SysContinue(arg))
        self._wake()

    def link(self, target: Target) -> None:
        """Link to ``target``: when either exits abnormally the other gets the exit signal."""
        self._rt._link_procs(self, self._rt._resolve_or_noproc(target))

    def unlink(self, target: Target) -> None:
        self._rt.unlink(self.pid, target)

    def monitor(self, target: Target) -> Ref:
        """Watch ``target``; a ``Down`` message arrives when it exits (at once if it is gone)."""
        return self._rt._monitor_proc(self, target)

    def demonitor(self, ref: Ref, *, flush: bool = False) -> bool:
        """Stop watching. ``flush`` [``False``]: also remove a ``Down`` for ``ref`` already in
        the mailbox (Erlang's ``demonitor(Ref, [flush])``); without it, such a ``Down`` stays.
        Returns whether the monitor was still active (``[info]``). Raises ``ArgumentError``
        when ``ref`` is not a ``Ref`` (Erlang's ``badarg``)."""
        if type(ref) is not Ref:
            raise ArgumentError(f"demonitor needs a Ref, not {ref!r}")
        return self._rt._demonitor(self, ref, flush)

    def send_after(self, delay: float, message: Any) -> asyncio.TimerHandle:
        """Send ``message`` to this process after ``delay`` seconds; ``.cancel()`` to revoke."""
        rt = self._rt
        return rt._loop.call_later(delay, self._deliver_if_alive, message)

    # --------------------------------------------------------------- internals

    def _ensure_ext(self) -> _Ext:
        ext = self._ext
        if ext is None:
            ext = self._ext = _Ext()
        return ext

    def _deliver_if_alive(self, message: Any) -> None:
        if not self._flags & F_DEAD:
            self._deliver(message)

    def _deliver(self, message: Any) -> None:
        mb = self._mailbox
        if mb is None:
            mb = self._mailbox = deque()
        mb.append(message)
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)
        elif self._task is None and not self._flags & (F_STARTING | F_DEAD):
            self._task = self._rt._loop.create_task(self._run())
            self._rt._active.add(self)

    def _wake(self) -> None:
        if (
            (self._mailbox or self._flags & F_TIMEOUT)
            and self._task is None
            and not self._flags & (F_STARTING | F_DEAD)
        ):
            self._task = self._rt._loop.create_task(self._run())
            self._rt._active.add(self)

    def _go_idle(self) -> None:
        self._task = None
        self._mailbox = None
        self._waiter = None
        self._flags &= IDLE_CLEAR & ~F_HIBERNATE
        self._rt._active.discard(self)

    async def _run(self) -> None:
        rt = self._rt
        loop = rt._loop
        while True:
            mb = self._mailbox
            if not mb:
                fl = self._flags
                if fl & F_DEAD:
                    return
                if fl & F_TIMEOUT:
                    if not await self._wait_timeout():
                        return
                    continue
                if fl & F_HIBERNATE or self.hibernate_after == 0:
                    self._go_idle()
                    return
                w = loop.create_future()
                self._waiter = w
                try:
                    await w
                except asyncio.CancelledError:
                    self._cancelled()
                    return
                if self._flags & F_DEAD:
                    return
                if not self._mailbox:  # the sweeper woke us: hibernate
                    self._go_idle()
                    return
                self._flags &= IDLE_CLEAR
                continue
            m = mb.popleft()
            tm = type(m)
            try:
                if tm is From:
                    self._current = m
                    r = self.handle_call(m.request, m)
                    if self._call_async:
                        r = await r
                    self._current = None
                    if r is not NOREPLY:
                        f = m.future
                        if not f.done():
                            f.set_result(r)
                    elif not m.future.done():
                        ext = self._ensure_ext()
                        if ext.deferred is None:
                            ext.deferred = set()
                        ext.deferred.add(m)
                elif tm is Cast:
                    r = self.handle_cast(m.request)
                    if self._cast_async:
                        await r
                else:
                    if tm is SysStop or tm is SysParentExit:
                        await self._terminate_and_exit(m.reason)
                        if tm is SysStop and m.future is not None and not m.future.done():
                            m.future.set_result(None)
                        return
                    if tm is SysContinue:
                        r = self.handle_continue(m.arg)
                        if inspect.isawaitable(r):
                            await r
                    elif tm is ChildExit:
                        r = self._child_exited(m.proc, m.reason)
                        if inspect.isawaitable(r):
                            await r
                    elif tm is _Resume:  # after a call answered in place (call_in_place)
                        if m.error is not None:
                            raise m.error
                    else:
                        r = self.handle_info(m)
                        if self._info_async:
                            await r
                if self._flags & (F_STOP | F_DEAD | F_TIMEOUT):
                    fl = self._flags
                    if fl & F_DEAD:
                        return
                    x = self._ext
                    if fl & F_STOP:
                        await self._terminate_and_exit(x.stop_reason if x else NORMAL)
                        return
                    if self._mailbox:  # a message is already waiting: no timeout (OTP)
                        self.set_timeout(None)
            except asyncio.CancelledError:
                self._cancelled()
                return
            except Exception as e:
                await self._crash(e)
                return
            except ExitNow as e:
                if not self._flags & F_DEAD and is_abnormal(e.reason):
                    # OTP logs a gen_server that exits with an abnormal reason, not
                    # normal/shutdown/{shutdown, _}
                    log.error(
                        "process_crashed",
                        pid=repr(self.pid),
                        process=type(self).__name__,
                        name=self._rt._name_of(self),
                        error=repr(e.reason),
                    )
                await self._terminate_and_exit(e.reason)
                return

    def _call_in_place(self, m: From) -> bool:
        """Answer the call ``m`` now, in the current task, if this process is idle: its
        ``handle_call`` is plain ``def``, its mailbox is empty and it is parked (or
        hibernated), so running the callback here is what its own task would do next, one
        event-loop turn earlier. Returns ``False`` (nothing done) otherwise; the caller then
        delivers ``m`` to the mailbox as usual.

        What the callback leaves to do (``stop``, ``set_timeout``, ``hibernate``, an exception,
        ``exit``) is handed to the process's task with a private message at the front of the
        mailbox, so it happens before any later message, as it would have. The transport uses
        this for calls from other nodes (the receiving task holds no caller context)."""
        fl = self._flags
        if (
            fl & _NOT_IN_PLACE
            or self._call_async
            or self._mailbox
            or self._current is not None
            or not (self._task is None or self._waiter is not None)
        ):
            return False
        rt = self._rt
        self._current = m
        outer = rt._in_place
        rt._in_place = self
        try:
            r = self.handle_call(m.request, m)
        except (Exception, ExitNow, asyncio.CancelledError) as e:
            # ``_current`` stays ``m``: if the process exits, its caller is told at once
            self._resume(e)
            return True
        finally:
            rt._in_place = outer
        self._current = None
        self._flags &= IDLE_CLEAR
        if r is not NOREPLY:
            f = m.future
            if not f.done():
                f.set_result(r)
        elif not m.future.done():
            ext = self._ensure_ext()
            if ext.deferred is None:
                ext.deferred = set()
            ext.deferred.add(m)
        if self._flags & (F_STOP | F_TIMEOUT | F_HIBERNATE):
            self._resume(None)
        return True

    def _resume(self, error: BaseException | None) -> None:
        """Let the task finish what a callback run in place left to do (see above)."""
        if self._flags & F_DEAD:
            return
        mb = self._mailbox
        if mb is None:
            mb = self._mailbox = deque()
        mb.appendleft(_Resume(error))
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)
        elif self._task is None:
            self._task = self._rt._loop.create_task(self._run())
            self._rt._active.add(self)

    async def _wait_timeout(self) -> bool:
        """Wait for a message with the requested timeout armed; ``TIMEOUT`` comes if none.
        Returns false when the process was killed meanwhile."""
        ext = self._ensure_ext()
        w = self._rt._loop.create_future()
        self._waiter = w
        timer = self._rt._loop.call_later(ext.timeout, self._timeout_fired, w)
        ext.timeout = timer
        try:
            await w
        except asyncio.CancelledError:
            timer.cancel()
            self._cancelled()
            return False
        if self._flags & F_TIMEOUT:  # a message came first
            self._flags &= ~F_TIMEOUT
            timer.cancel()
            ext.timeout = None
        return not self._flags & F_DEAD

    def _cancelled(self) -> None:
        """Our task was cancelled: by a kill (already dead) or by the loop shutting down."""
        if not self._flags & F_DEAD:
            self._rt._exit(self, "killed")

    async def _crash(self, error: Exception) -> None:
        log.error(
            "process_crashed",
            pid=repr(self.pid),
            process=type(self).__name__,
            name=self._rt._name_of(self),
            error=repr(error),
            exc_info=error,
        )
        await self._terminate_and_exit(error)

    async def _terminate_and_exit(self, reason: ExitReason) -> None:
        if self._flags & F_DEAD:
            return
        try:
            r = self.terminate(reason)
            if inspect.isawaitable(r):
                await r
        except asyncio.CancelledError:
            self._cancelled()
            return
        except Exception as e:
            log.error("terminate_failed", pid=repr(self.pid), error=repr(e), exc_info=e)
            reason = e
        except ExitNow as e:
            reason = e.reason
        self._rt._exit(self, reason)

    def _child_exited(self, child: Process, reason: ExitReason) -> Any:
        """A trapped exit from a child (a process whose parent is this one)."""
        r = self.handle_info(Exit(child.pid, reason))
        return r

    def __repr__(self) -> str:
        try:
            return f"<{type(self).__name__} {self.pid!r}>"
        except AttributeError:
            return f"<{type(self).__name__} (not started)>"


def linked(ls: Process | set[Process] | None) -> tuple[Process, ...] | list[Process]:
    """The processes in a ``_links`` slot (which holds None, one process, or a set)."""
    if ls is None:
        return ()
    if isinstance(ls, set):
        return list(ls)
    return (ls,)


_NOT_IN_PLACE: Final = F_DEAD | F_STARTING | F_TIMEOUT | F_SCOPE | F_STOP | F_HIBERNATE


class _Resume:
    """Private: a callback ran in place (``Process._call_in_place``); the task finishes it."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


class ChildExit:
    """Private: an exit signal from a child, kept with the child's object for its supervisor."""

    __slots__ = ("proc", "reason")

    def __init__(self, proc: Process, reason: ExitReason) -> None:
        self.proc = proc
        self.reason = reason
