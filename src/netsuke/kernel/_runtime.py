"""The node: process table, message delivery, exit signals, links and monitors.

``async with Runtime() as rt:`` starts a node: its name registry (``rt.registry``), its root
supervisor (``rt.root``) and its task supervisor (``rt.tasks``). Leaving the block shuts the
node down (see :meth:`Runtime.aclose` for the order) and leaves no asyncio task behind.

Exit signals follow Erlang. When a process exits with ``reason``, every linked process gets an
exit signal:

* if it traps exits, the signal becomes a message: ``Exit(pid, reason)`` for ``handle_info`` (a
  signal from its parent makes it ``terminate(reason)`` and exit, as an OTP server does);
* otherwise a ``normal`` signal is ignored and any other reason makes it exit with that reason.

``exit(pid, "kill")`` cannot be trapped: the target exits with reason ``killed`` (which linked
processes then receive like any other reason). Monitors are one-way: the watcher gets
``Down(ref, pid, reason)``, or ``reason="noproc"`` at once if the target was already gone.

A process that exits fails, at once, every call waiting on it: the one it is handling, the ones
in its mailbox and the deferred ones. Callers get ``ProcessExitedError`` with the reason; they
never wait out their timeout.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import itertools
import weakref
from collections import deque
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..events import EventBus
from ..observability import register_collector
from ._compaction import MIN_PEAK, TableWatch, compact_tables
from ._errors import (
    AlreadyStartedError,
    ArgumentError,
    BadTargetError,
    CallSelfError,
    CallTimeoutError,
    Exited,
    NoProcessError,
    NotInProcessError,
    ProcessExitedError,
    RuntimeClosedError,
    StartError,
)
from ._messages import Cast, Down, Exit, From, SysParentExit, SysStop
from ._pid import KILL, KILLED, NOPROC, NORMAL, SHUTDOWN, ExitReason, Pid, Ref, Target, Via
from ._process import (
    F_DEAD,
    F_SCOPE,
    F_SCOPE_CANCELLED,
    F_STARTING,
    F_TIMEOUT,
    F_TRAP,
    IDLE_SHIFT,
    IDLE_UNIT,
    IGNORE,
    ChildExit,
    ExitNow,
    Process,
    _Ext,
    linked,
)
from ._registry import Registry
from ._startinfo import StartInfo
from ._transport import Transport

if TYPE_CHECKING:
    from ._supervisor import ChildSpec
    from ._tasks import TaskSupervisor

__all__ = ["NameFallback", "Runtime", "current_runtime"]

log = structlog.get_logger("netsuke.kernel")
P = TypeVar("P", bound=Process)

_current: contextvars.ContextVar[Runtime | None] = contextvars.ContextVar(
    "netsuke_runtime", default=None
)


def current_runtime() -> Runtime:
    """The runtime of the surrounding ``async with Runtime()`` block.

    Raises ``NotInProcessError`` outside of one."""
    rt = _current.get()
    if rt is None:
        raise NotInProcessError("no running netsuke Runtime in this context")
    return rt


def _is_normal(reason: ExitReason) -> bool:
    return type(reason) is str and reason == NORMAL


_INF = float("inf")


def check_timeout(timeout: object, *, what: str = "timeout") -> None:
    """Raise ``ArgumentError`` unless ``timeout`` is ``None`` or a finite number >= 0."""
    if timeout is None:
        return
    if type(timeout) not in (int, float) or not 0 <= timeout < _INF:  # type: ignore[operator]
        raise ArgumentError(f"{what} must be None or a number of seconds >= 0, not {timeout!r}")


def _exit_kind(reason: ExitReason) -> str:
    if type(reason) is str and reason in (NORMAL, SHUTDOWN, KILLED):
        return reason
    if isinstance(reason, BaseException):
        return "crash"
    from ._pid import Shutdown

    if type(reason) is Shutdown:
        return SHUTDOWN
    return "other"


class NameFallback(Protocol):
    """Where a ``str`` name that is not registered on this node is looked up next (the
    cluster's global names set one: ``Runtime.name_fallback``)."""

    def resolve_cached(self, name: str) -> Process | None:
        """The process named ``name``, from what this node knows now, without I/O (``send``,
        ``cast``, ``whereis``, ``link``, ``monitor`` use it)."""

    async def resolve_missing(self, name: str) -> Process | None:
        """The process named ``name`` when ``resolve_cached`` knew none: may ask the
        authority (``call`` uses it)."""


class _Stats:
    __slots__ = ("compactions", "exits", "restarts", "spawned", "sup_shutdowns")

    def __init__(self) -> None:
        self.compactions = 0
        self.spawned = 0
        self.restarts = 0
        self.sup_shutdowns = 0
        self.exits: dict[str, int] = {}


class _KernelCollector:
    """Reads the plain counters of every live runtime at scrape time."""

    def __init__(self) -> None:
        self.runtimes: weakref.WeakSet[Runtime] = weakref.WeakSet()

    def collect(self) -> Iterable[Metric]:
        procs = GaugeMetricFamily("netsuke_processes", "Live processes", labels=["node", "state"])
        spawned = CounterMetricFamily(
            "netsuke_processes_spawned", "Processes started", labels=["node"]
        )
        exits = CounterMetricFamily(
            "netsuke_process_exits", "Process exits by kind of reason", labels=["node", "kind"]
        )
        restarts = CounterMetricFamily(
            "netsuke_supervisor_restarts", "Children restarted by supervisors", labels=["node"]
        )
        gaveup = CounterMetricFamily(
            "netsuke_supervisor_intensity_exceeded",
            "Supervisors that exceeded their restart intensity",
            labels=["node"],
        )
        for rt in list(self.runtimes):
            active = len(rt._active)
            procs.add_metric([rt.node, "active"], active)
            procs.add_metric([rt.node, "hibernated"], len(rt._procs) - active)
            spawned.add_metric([rt.node], rt.stats.spawned)
            for kind, n in rt.stats.exits.items():
                exits.add_metric([rt.node, kind], n)
            restarts.add_metric([rt.node], rt.stats.restarts)
            gaveup.add_metric([rt.node], rt.stats.sup_shutdowns)
        return [procs, spawned, exits, restarts, gaveup]

    def describe(self) -> Iterable[Metric]:
        return []


_collector = _KernelCollector()
register_collector(_collector)


class _ScopeProcess(Process):
    """A process whose body is the code inside ``async with runtime.scope()``."""

    __slots__ = ()

    async def receive(self, timeout: float | None = None) -> Any:
        """The next message in the mailbox (calls arrive as ``From``, casts unwrapped).

        Raises ``TimeoutError`` when none arrives within ``timeout``."""
        while not self._mailbox:
            w = self._rt._loop.create_future()
            self._waiter = w
            try:
                if timeout is None:
                    await w
                else:
                    await asyncio.wait_for(w, timeout)
            finally:
                if self._waiter is w:
                    self._waiter = None
        m = self._mailbox.popleft()
        return m.request if type(m) is Cast else m


class Runtime:
    """A Netsuke node. Options (all keyword, defaults in brackets):

    * ``node`` [``"local"``]: the node name that every Pid of this node carries.
    * ``transport`` [none]: how foreign pids are reached; share a ``LocalTransport`` between
      runtimes to join nodes of one Python process.
    * ``shutdown_timeout`` [``30.0``]: seconds the whole shutdown may take before every process
      that is left is killed.
    * ``hibernate_sweep`` [``0.5``]: seconds between two passes of the hibernation sweeper,
      which releases the task of processes idle for their ``hibernate_after``.
    * ``timer_resolution`` [``0.005``]: call timeouts fire within this many seconds after
      their deadline (never before); calls in flight share one timer per slot.
    * ``root_max_restarts`` [``3``], ``root_max_seconds`` [``5.0``]: restart intensity of the
      root supervisor.
    """

    def __init__(
        self,
        node: str = "local",
        *,
        transport: Transport | None = None,
        shutdown_timeout: float = 30.0,
        hibernate_sweep: float = 0.5,
        timer_resolution: float = 0.005,
        root_max_restarts: int = 3,
        root_max_seconds: float = 5.0,
        events: EventBus | None = None,
    ) -> None:
        if not node or not isinstance(node, str):
            raise ValueError("node must be a non-empty string")
        if hibernate_sweep <= 0:
            raise ValueError("hibernate_sweep must be > 0")
        if not 0 < timer_resolution <= 1:
            raise ValueError("timer_resolution must be in (0, 1] seconds")
        self.node = node
        self._own_bus = events is None
        self.events = events if events is not None else EventBus(node)
        """The node's event bus (``netsuke.events``); every layer publishes into it."""
        self.transport = transport
        self.shutdown_timeout = shutdown_timeout
        self.hibernate_sweep = hibernate_sweep
        self.timer_resolution = timer_resolution
        self._timer_inv = 1.0 / timer_resolution
        self._timer_slots: dict[int, dict[From, tuple[Any, float]]] = {}
        self._root_intensity = (root_max_restarts, root_max_seconds)
        self._procs: dict[int, Process] = {}
        self._ids = itertools.count(1)
        self._refs = itertools.count(1)
        self.registry = Registry(self, keys="unique", name="names")
        self._names = self.registry._unique
        self._active: set[Process] = set()
        self._dying: set[asyncio.Task[Any]] = set()
        self._exit_queue: deque[tuple[Process, ExitReason]] = deque()
        self._draining = False
        self._closing = False
        self._started = False
        self._sweeper: asyncio.TimerHandle | None = None
        self._token: contextvars.Token[Runtime | None] | None = None
        self.stats = _Stats()
        self._watch = TableWatch()
        self._root: Process | None = None
        self._in_place: Process | None = None  # runs a callback in place (_call_in_place)
        self.name_fallback: NameFallback | None = None
        """Resolves a ``str`` name that this node's registry does not hold (see
        :class:`NameFallback`); ``None``: such a name is not registered anywhere."""
        self._tasks: TaskSupervisor | None = None
        self._loop: asyncio.AbstractEventLoop

    # ------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Runtime:
        await self.open()
        self._token = _current.set(self)
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.aclose()
        finally:
            if self._token is not None:
                try:
                    _current.reset(self._token)
                except ValueError:  # exited in another context
                    _current.set(None)
                self._token = None

    async def open(self) -> None:
        """Start the node (``async with`` does it): root supervisor, then task supervisor."""
        if self._started:
            raise RuntimeError("runtime already started")
        self._loop = asyncio.get_running_loop()
        self._started = True
        if self.transport is not None:
            self.transport.attach(self)
        _collector.runtimes.add(self)
        from ._supervisor import Supervisor, SupervisorSpec
        from ._tasks import TaskSupervisor

        max_r, max_s = self._root_intensity
        root = await self._start_proc(
            Supervisor,
            SupervisorSpec(
                children=[], strategy="one_for_one", max_restarts=max_r, max_seconds=max_s
            ),
            name="netsuke.root",
        )
        assert root is not None
        self._root = root
        tasks = await self._start_proc(TaskSupervisor, None, name="netsuke.tasks")
        assert isinstance(tasks, TaskSupervisor)
        self._tasks = tasks
        self._schedule_sweep()
        log.info("node_started", node=self.node)

    async def aclose(self) -> None:
        """Shut the node down, in this order:

        1. the task supervisor: running tasks are killed (they are ``brutal_kill`` children);
        2. the root supervisor: its children stop in reverse start order, each within its
           ``shutdown`` (then killed), supervisors recursively;
        3. every other unsupervised process is shut down as if the node were its parent
           (processes that trap exits run ``terminate``), all at once; their supervised
           descendants stop through their own supervisors;
        4. whatever is still alive after ``shutdown_timeout`` is killed;
        5. the tasks of dead processes are awaited, so no asyncio task is left behind;
        6. the event bus closes its subscriptions and awaits its listeners (only when the
           runtime created the bus; a bus passed in belongs to the caller).
        """
        if not self._started or self._closing:
            return
        self._closing = True
        deadline = self._loop.time() + self.shutdown_timeout
        try:
            for p in (self._tasks, self._root):
                if p is not None and not p._flags & F_DEAD:
                    await self._stop_proc(p, SHUTDOWN, max(0.0, deadline - self._loop.time()))
            # Unsupervised processes: the node acts as their parent. Children of those are
            # stopped by their own supervisors, in their order.
            rest = [
                p
                for p in list(self._procs.values())
                if (p._parent is None or p._spec is None) and not p._flags & (F_DEAD | F_SCOPE)
            ]
            waits = []
            for p in rest:
                waits.append(self._exit_future(p))
                if p._flags & F_TRAP:
                    p._deliver(SysParentExit(SHUTDOWN))
                else:
                    self._exit(p, SHUTDOWN)
            pending = [w for w in waits if not w.done()]
            if pending:
                await asyncio.wait(pending, timeout=max(0.0, deadline - self._loop.time()))
            for p in list(self._procs.values()):
                if not p._flags & F_SCOPE:
                    self._exit(p, KILLED)
            for w in waits:
                if not w.done():
                    w.cancel()
        finally:
            if self._sweeper is not None:
                self._sweeper.cancel()
                self._sweeper = None
            while self._dying:
                await asyncio.gather(*list(self._dying), return_exceptions=True)
            if self.transport is not None:
                self.transport.detach(self)
            if self._own_bus:
                await self.events.aclose()
            log.info("node_stopped", node=self.node)

    @property
    def root(self) -> Pid:
        """The root supervisor; ``start_child`` puts children under it."""
        if self._root is None:
            raise RuntimeClosedError("runtime not started")
        return self._root.pid

    @property
    def tasks(self) -> TaskSupervisor:
        """The task supervisor (see :class:`TaskSupervisor`)."""
        if self._tasks is None:
            raise RuntimeClosedError("runtime not started")
        return self._tasks

    @property
    def closed(self) -> bool:
        return self._closing

    # ------------------------------------------------------------ resolution

    def _local_proc(self, pid: Pid) -> Process | None:
        if pid.node != self.node:
            return None
        p = self._procs.get(pid.id)
        if p is None or p._flags & F_DEAD:
            return None
        return p

    def _resolve(self, target: Any) -> Process | None:
        t = type(target)
        if t is str:
            p = self._names.get(target)
            if p is None:
                fb = self.name_fallback
                if fb is not None:  # a name of the cluster (registered on this node or not)
                    p = fb.resolve_cached(target)
            elif type(p) is tuple:
                p = p[0]
        elif t is Pid:
            if target.node == self.node:
                p = self._procs.get(target.id)
            elif self.transport is not None:
                p = self.transport.resolve(target)
            else:
                p = None
        elif t is Via:
            p = target.registry._whereis_proc(target.key)
        elif t is tuple and len(target) == 2 and type(target[0]) is str:
            # Erlang's {Name, Node}: a name registered on that node (this one or another).
            name, node = target
            if node == self.node:
                p = self._names.get(name)
                if type(p) is tuple:
                    p = p[0]
            elif type(node) is str and self.transport is not None:
                p = self.transport.resolve_name(name, node)
            else:
                p = None
        elif isinstance(target, Process):
            p = target
        else:
            raise BadTargetError(target)
        if p is None or p._flags & F_DEAD:
            return None
        return p

    def _resolve_local_name(self, name: str) -> Process | None:
        """The live process registered as ``name`` in this node's registry (never the
        fallback: what ``(name, node)`` from another node means)."""
        p = self._names.get(name)
        if type(p) is tuple:
            p = p[0]
        if p is None or p._flags & F_DEAD:
            return None
        return p  # type: ignore[no-any-return]

    def _resolve_or_noproc(self, target: Any) -> Process:
        p = self._resolve(target)
        if p is None:
            raise NoProcessError(target)
        return p

    def whereis(self, target: Target) -> Pid | None:
        """The pid of a live process named by ``target``, or ``None``."""
        p = self._resolve(target)
        return None if p is None else p.pid

    def alive(self, target: Target) -> bool:
        return self._resolve(target) is not None

    def process(self, target: Target) -> Process | None:
        """The local process object named by ``target`` (for inspection and tests)."""
        p = self._resolve(target)
        if p is None or p._rt is not self:
            return None
        return p

    def count_processes(self) -> int:
        return len(self._procs)

    def _name_of(self, p: Process) -> Any:
        r = p._reg
        if r is None or type(r) is str:
            return r
        return r[0][1] if r else None

    # -------------------------------------------------------------- messaging

    async def call(self, target: Target, request: Any, timeout: float | None = 5.0) -> Any:
        """Send ``request`` to ``handle_call`` of ``target`` and wait for the reply.

        Raises ``NoProcessError`` (no such process), ``ProcessExitedError`` (it exited before
        replying, at once, not after the timeout), ``CallTimeoutError`` (no reply within
        ``timeout`` seconds; ``None`` waits forever), ``CallSelfError``, ``BadTargetError``,
        ``ArgumentError`` (a timeout that is not ``None`` or a finite number >= 0; nothing is
        sent), and whatever the process passed to ``reply_error``."""
        proc = self._resolve(target)
        if proc is None:
            fb = self.name_fallback
            if fb is not None and type(target) is str:  # not known here yet: ask the authority
                proc = await fb.resolve_missing(target)
            if proc is None or proc._flags & F_DEAD:
                raise NoProcessError(target)
        t = proc._task
        if t is not None and t is asyncio.current_task():
            raise CallSelfError(target)
        if timeout is not None and not (type(timeout) is float and 0.0 <= timeout < _INF):
            check_timeout(timeout)
        loop = self._loop
        fut = loop.create_future()
        m = From(request, fut)
        proc._deliver(m)
        if timeout is None:
            return await fut
        # Timeouts share one timer per slot of ``timer_resolution`` seconds: arming and
        # disarming is a dict insert and delete, whatever the number of calls in flight.
        k = int((loop.time() + timeout) * self._timer_inv) + 1
        b = self._timer_slots.get(k)
        if b is None:
            b = self._timer_slots[k] = {}
            loop.call_at(k * self.timer_resolution, self._expire_slot, k)
        b[m] = (target, timeout)
        try:
            return await fut
        finally:
            b.pop(m, None)

    def _expire_slot(self, k: int) -> None:
        slot = self._timer_slots.pop(k, None)
        if slot:
            for m, (target, timeout) in list(slot.items()):
                if not m.future.done():
                    m.future.set_exception(CallTimeoutError(target, timeout))

    def cast(self, target: Target, request: Any) -> bool:
        """Send ``request`` to ``handle_cast`` of ``target`` without waiting. Like OTP, a cast
        to a process that does not exist is dropped; returns whether it was delivered."""
        proc = self._resolve(target)
        if proc is None:
            return False
        proc._deliver(Cast(request))
        return True

    def send(self, target: Target, message: Any) -> bool:
        """Put ``message`` in the mailbox of ``target`` (for ``handle_info``).

        A pid that has exited drops the message (returns ``False``); a *name* that is not
        registered raises ``NoProcessError``, as Erlang's ``send`` does."""
        proc = self._resolve(target)
        if proc is None:
            if type(target) is Pid:
                return False
            raise NoProcessError(target)
        proc._deliver(message)
        return True

    # ---------------------------------------------------------------- spawning

    async def start(
        self,
        cls: type[Process],
        arg: Any = None,
        *,
        name: str | Via | None = None,
        link: Target | None = None,
    ) -> Pid | None:
        """Start a process of class ``cls`` with ``init(arg)`` and return its pid once ``init``
        has returned (``None`` if ``init`` returned ``IGNORE``).

        * ``name``: register it (a ``str`` in the node's registry, or a ``Via``) before
          ``init`` runs; a taken name raises ``AlreadyStartedError`` with the holder's pid.
        * ``link``: link it to that process from its first instant (``spawn_link``).

        A process started here is not supervised; use ``start_child`` or a supervisor for that.
        Raises ``StartError`` when ``init`` fails."""
        linked = self._resolve_or_noproc(link) if link is not None else None
        p = await self._start_proc(cls, arg, name=name, link=linked)
        return None if p is None else p.pid

    async def ensure_started(self, cls: type[Process], arg: Any = None, *, name: str | Via) -> Pid:
        """Get-or-start: the pid registered under ``name``, or a new process started under it.
        Safe under concurrency: any number of concurrent callers get one process. Only this
        node's registry counts (``name`` is registered here)."""
        p = self._resolve_local_name(name) if type(name) is str else self._resolve(name)
        if p is not None:
            return p.pid
        try:
            pid = await self.start(cls, arg, name=name)
        except AlreadyStartedError as e:
            return e.pid  # type: ignore[no-any-return]
        if pid is None:
            raise StartError(cls.__name__, "ignore")
        return pid

    async def start_child(self, spec: ChildSpec) -> Pid | None:
        """Start ``spec`` under the root supervisor (see ``Supervisor.start_child``)."""
        from ._supervisor import Supervisor

        return await Supervisor.start_child(self.root, spec, runtime=self)

    def _spawn(
        self,
        cls: type[P],
        arg: Any,
        name: Any,
        parent: Process | None,
        spec: Any,
    ) -> P:
        if self._closing and parent is None and name not in ("netsuke.root", "netsuke.tasks"):
            raise RuntimeClosedError(f"node {self.node} is shutting down")
        if name is not None:
            if type(name) is str:
                holder = self._names.get(name)
                if holder is not None:
                    holder = holder[0] if type(holder) is tuple else holder
                    raise AlreadyStartedError(name, holder.pid)
            elif type(name) is Via:
                holder = name.registry._whereis_proc(name.key)
                if holder is not None:
                    raise AlreadyStartedError(name, holder.pid)
            else:
                raise BadTargetError(name)
        p = object.__new__(cls)
        pid_id = next(self._ids)
        p._rt = self
        p._id = pid_id
        p._mailbox = None
        p._task = None
        p._waiter = None
        p._current = None
        p._flags = F_STARTING
        p._reg = None
        p._parent = parent
        p._spec = spec
        p._arg = arg
        p._ext = None
        if parent is not None:
            p._links = parent
            pl = parent._links
            if pl is None:
                parent._links = p
            elif type(pl) is set:
                pl.add(p)
                n = len(pl)
                if n >= MIN_PEAK and not n & (n - 1):  # a power of two: note a big link set
                    self._watch.note_links(parent, n)
            else:
                parent._links = {pl, p}  # type: ignore[arg-type]
        else:
            p._links = None
        self._procs[pid_id] = p
        if name is not None:
            if type(name) is str:
                self._names[name] = p
                p._reg = name
            else:
                name.registry._register(name.key, p, None)
        self.stats.spawned += 1
        return p

    async def _start_proc(
        self,
        cls: type[P],
        arg: Any,
        *,
        name: Any = None,
        parent: Process | None = None,
        spec: Any = None,
        link: Process | None = None,
        info: list[Any] | None = None,
    ) -> P | None:
        # A process started linked to ``link`` and to no supervisor has ``link`` as its parent
        # (Erlang's start_link): an exit signal from it makes the process terminate.
        p = self._spawn(cls, arg, name, parent if parent is not None else link, spec)
        if link is not None and parent is not None:
            self._link_procs(p, link)
        return await self._init(p, info)

    async def _init(self, p: P, info: list[Any] | None = None) -> P | None:
        try:
            r = p.init(p._arg)
            if r is not None and inspect.isawaitable(r):
                r = await r
        except asyncio.CancelledError:
            self._exit(p, KILLED)
            raise
        except Exception as e:
            log.warning("init_failed", process=type(p).__name__, error=repr(e))
            self._exit(p, e)
            raise StartError(type(p).__name__, e) from e
        except ExitNow as e:
            self._exit(p, e.reason)
            raise StartError(type(p).__name__, e.reason) from None
        if p._flags & F_DEAD:
            raise StartError(type(p).__name__, self.exit_reason_of(p))
        if r is IGNORE:
            self._exit(p, NORMAL)
            return None
        if info is not None and type(r) is StartInfo:
            info.append(r.info)
        p._flags &= ~F_STARTING
        if p._mailbox or p._flags & F_TIMEOUT:
            p._wake()
        return p

    # ----------------------------------------------------- exits and signals

    def exit(self, target: Target, reason: ExitReason, *, sender: Target | None = None) -> bool:
        """Send the exit signal ``reason`` to ``target`` (Erlang's ``exit/2``), as from
        ``sender`` (a pid) or from outside any process. ``"kill"`` cannot be trapped. Returns
        whether the target existed.

        A process that signals itself (from its own callback; ``sender`` defaults to it) and is
        taken down by it, ``normal`` included as in Erlang, does not return: ``ExitNow`` ends
        the callback at once (the process is already dead; ``terminate`` does not run)."""
        p = self._resolve(target)
        if p is None:
            return False
        sp = self._resolve(sender) if sender is not None else None
        if sp is None and (
            p is self._in_place or (p._task is not None and p._task is asyncio.current_task())
        ):
            sp = p  # exit(self(), reason): the caller signals itself
        if sp is p and not p._flags & F_TRAP and _is_normal(reason):
            # Erlang: a process that sends itself ``normal`` exits (a ``normal`` signal from
            # anyone else is ignored by a process that does not trap exits).
            self._exit(p, NORMAL)
        else:
            p._rt._signal(p, reason, sp, sp.pid if sp is not None else None, explicit=True)
        if sp is p and p._flags & F_DEAD and not p._flags & F_SCOPE:
            # The caller took itself down: its callback ends here, as the process does.
            raise ExitNow(self.exit_reason_of(p))
        return True

    def kill(self, target: Target) -> bool:
        """``exit(target, "kill")``: the target exits with reason ``killed`` at once."""
        return self.exit(target, KILL)

    async def stop(
        self, target: Target, reason: ExitReason = NORMAL, timeout: float | None = None
    ) -> None:
        """Stop ``target`` the orderly way (``GenServer.stop``): after the messages before this
        request, ``terminate(reason)`` runs and the process exits with ``reason``. Returns once it
        is gone. Raises ``NoProcessError``, ``CallTimeoutError`` after ``timeout`` (the target
        is then killed), ``CallSelfError`` when a process stops itself this way (it would wait
        for its own exit; use ``Process.stop`` instead), ``ArgumentError`` for a timeout that is
        not ``None`` or a number >= 0. Nothing is sent when it raises before waiting."""
        check_timeout(timeout)
        p = self._resolve_or_noproc(target)
        t = p._task
        if t is not None and t is asyncio.current_task():
            raise CallSelfError(target)
        await self._stop_proc(p, reason, timeout)

    async def _stop_proc(self, p: Process, reason: ExitReason, timeout: float | None) -> None:
        done = self._exit_future(p)
        p._deliver(SysStop(reason, None))
        try:
            if timeout is None:
                await asyncio.shield(done)
            else:
                await asyncio.wait_for(asyncio.shield(done), timeout)
        except TimeoutError:
            log.warning("stop_timed_out_killing", pid=repr(p.pid), timeout=timeout)
            self._exit(p, KILLED)
            raise CallTimeoutError(p.pid, timeout or 0.0) from None

    def _signal(
        self,
        target: Process,
        reason: ExitReason,
        sender: Process | None,
        sender_pid: Pid | None,
        *,
        explicit: bool = False,
    ) -> None:
        fl = target._flags
        if fl & F_DEAD:
            return
        if explicit and type(reason) is str and reason == KILL:
            self._exit(target, KILLED)
            return
        if fl & F_TRAP:
            if (
                sender is not None
                and sender._parent is target
                and sender._spec is not None
                and not explicit
            ):
                target._deliver(ChildExit(sender, reason))
            elif sender is not None and target._parent is sender:
                target._deliver(SysParentExit(reason))
            else:
                target._deliver(Exit(sender_pid, reason))
            return
        if _is_normal(reason):
            return
        self._exit(target, reason)

    def _exit(self, p: Process, reason: ExitReason) -> None:
        """Make ``p`` exit with ``reason`` now. Signals to linked processes are processed from a
        work list, so arbitrarily long link chains do not recurse."""
        if p._flags & F_DEAD:
            return
        p._flags |= F_DEAD
        rt = p._rt
        rt._exit_queue.append((p, reason))
        if rt._draining:
            return
        rt._draining = True
        try:
            q = rt._exit_queue
            while q:
                dp, dr = q.popleft()
                dp._rt._finish(dp, dr)
        finally:
            rt._draining = False

    def _finish(self, p: Process, reason: ExitReason) -> None:
        procs = self._procs
        if procs.get(p._id) is p:
            del procs[p._id]
        reg = p._reg  # kept on the dead object: a supervisor restarts the child under it
        if reg is not None:
            if type(reg) is str:
                cur = self._names.get(reg)
                if cur is p or (type(cur) is tuple and cur[0] is p):
                    del self._names[reg]
            else:
                for r, k in reg:
                    r._drop(k, p)
        pid = p.pid
        err: ProcessExitedError | None = None

        def fail(fut: asyncio.Future[Any]) -> None:
            nonlocal err
            if not fut.done():
                if err is None:
                    err = ProcessExitedError(pid, reason)
                    if isinstance(reason, BaseException):
                        err.__cause__ = reason
                fut.set_exception(err)

        cur_call = p._current
        if cur_call is not None:
            p._current = None
            fail(cur_call.future)
        mb = p._mailbox
        if mb and not p._flags & F_SCOPE:
            for m in mb:
                tm = type(m)
                if tm is From:
                    fail(m.future)
                elif tm is SysStop and m.future is not None and not m.future.done():
                    m.future.set_result(None)
            p._mailbox = None
        ext = p._ext
        if ext is None:
            ext = p._ext = _Ext()
        ext.stop_reason = reason
        if ext.deferred:
            for f in ext.deferred:
                fail(f.future)
            ext.deferred = None
        t = p._task
        if t is not None:
            if p._flags & F_SCOPE:
                if t is not asyncio.current_task():
                    p._flags |= F_SCOPE_CANCELLED
                    t.cancel()
            else:
                p._task = None
                self._active.discard(p)
                if t is not asyncio.current_task() and not t.done():
                    t.cancel()
                    self._dying.add(t)
                    t.add_done_callback(self._dying.discard)
        w = p._waiter
        if w is not None:
            p._waiter = None
        links = p._links
        if links is not None:
            p._links = None
            for lp in linked(links):
                _drop_link(lp, p)
                lp._rt._signal(lp, reason, p, pid)
        if ext.monitored_by:
            names = ext.monitor_names
            for ref, watcher in list(ext.monitored_by.items()):
                if isinstance(watcher, Process):
                    wext = watcher._ext
                    if wext is not None and wext.monitoring is not None:
                        wext.monitoring.pop(ref, None)
                    if not watcher._flags & F_DEAD:
                        who = pid if names is None else names.get(ref, pid)
                        watcher._deliver(Down(ref, who, reason))
                elif not watcher.done():
                    watcher.set_result(reason)
            ext.monitored_by = None
        if ext.monitoring:
            for ref, target in ext.monitoring.items():
                text = target._ext
                if text is not None and text.monitored_by is not None:
                    text.monitored_by.pop(ref, None)
            ext.monitoring = None
        kind = _exit_kind(reason)
        ex = self.stats.exits
        ex[kind] = ex.get(kind, 0) + 1

    def exit_reason_of(self, p: Process) -> ExitReason:
        """The exit reason of a dead process object (``None`` while it lives)."""
        if not p._flags & F_DEAD:
            return None
        return p._ext.stop_reason if p._ext is not None else None

    # ------------------------------------------------------- links, monitors

    def link(self, a: Target, b: Target) -> None:
        """Link two processes. If either is gone, the other gets the exit signal ``noproc``
        (Erlang's ``link`` to a dead pid), which kills it unless it traps exits."""
        pa = self._resolve(a)
        pb = self._resolve(b)
        if pa is None and pb is None:
            raise NoProcessError(a)
        if pa is None or pb is None:
            live = pa or pb
            assert live is not None
            live._rt._signal(live, NOPROC, None, None)
            return
        self._link_procs(pa, pb)

    def _link_procs(self, a: Process, b: Process) -> None:
        if a is b:
            return
        _add_link(a, b)
        _add_link(b, a)
        if a._rt is not b._rt and self.transport is not None:
            self.transport.linked(a, b)

    def unlink(self, a: Target, b: Target) -> None:
        pa = self._resolve(a)
        pb = self._resolve(b)
        if pa is not None and pb is not None:
            _drop_link(pa, pb)
            _drop_link(pb, pa)
            if pa._rt is not pb._rt and self.transport is not None:
                self.transport.unlinked(pa, pb)

    def links(self, target: Target) -> list[Pid]:
        p = self._resolve_or_noproc(target)
        ls = p._links
        if ls is None:
            return []
        return [x.pid for x in linked(ls)]

    def _new_ref(self) -> Ref:
        return Ref(self.node, next(self._refs))

    def _monitor_proc(self, watcher: Process, target: Target) -> Ref:
        ref = self._new_ref()
        p = self._resolve(target)
        tt = type(target)
        # OTP: a monitor taken by name reports the name form ({Name, Node}) in its DOWN.
        who: Any = (
            (target, self.node) if tt is str else target if tt is Via or tt is tuple else None
        )
        if p is None:
            if who is None:
                who = target if tt is Pid else target.pid  # type: ignore[union-attr]
            watcher._deliver(Down(ref, who, NOPROC))
            return ref
        pe = p._ensure_ext()
        if pe.monitored_by is None:
            pe.monitored_by = {}
        pe.monitored_by[ref] = watcher
        if who is not None:
            if pe.monitor_names is None:
                pe.monitor_names = {}
            pe.monitor_names[ref] = who
        we = watcher._ensure_ext()
        if we.monitoring is None:
            we.monitoring = {}
        we.monitoring[ref] = p
        if p._rt is not self and self.transport is not None:
            self.transport.monitored(ref, watcher, p)
        return ref

    def _demonitor(self, watcher: Process, ref: Ref, flush: bool = False) -> bool:
        we = watcher._ext
        found = False
        if we is not None and we.monitoring:
            p = we.monitoring.pop(ref, None)
            if p is not None:
                found = True
                pe = p._ext
                if pe is not None and pe.monitored_by is not None:
                    pe.monitored_by.pop(ref, None)
                    if pe.monitor_names is not None:
                        pe.monitor_names.pop(ref, None)
                if p._rt is not self and self.transport is not None:
                    self.transport.demonitored(ref, watcher, p)
        if flush:
            mb = watcher._mailbox
            if mb:
                kept = [m for m in mb if not (type(m) is Down and m.ref == ref)]
                if len(kept) != len(mb):
                    mb.clear()
                    mb.extend(kept)
        return found

    def _exit_future(self, p: Process) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = self._loop.create_future()
        if p._flags & F_DEAD:
            fut.set_result(self.exit_reason_of(p))
            return fut
        pe = p._ensure_ext()
        if pe.monitored_by is None:
            pe.monitored_by = {}
        pe.monitored_by[self._new_ref()] = fut
        return fut

    async def wait_exit(self, target: Target, timeout: float | None = None) -> ExitReason:
        """Wait until ``target`` exits and return its reason (``"noproc"`` if it is gone).
        Raises ``TimeoutError`` after ``timeout`` seconds."""
        p = self._resolve(target)
        if p is None:
            return NOPROC
        fut = p._rt._exit_future(p)
        if timeout is None:
            return await fut
        return await asyncio.wait_for(fut, timeout)

    # ------------------------------------------------------------------ scopes

    @asynccontextmanager
    async def scope(
        self, *, name: str | Via | None = None, trap_exit: bool = False
    ) -> AsyncIterator[_ScopeProcess]:
        """Make the current coroutine a process for the duration of the block.

        The block gets a process (``.pid``, ``.link``, ``.monitor``, ``await .receive()``) that
        other processes can link to, monitor and send to: the owner of an agent is typically a
        WebSocket handler's scope. When the block ends, the process exits ``normal`` (or with the
        exception that ended the block). When the process is exited from outside (a linked
        process crashed, ``kill``), the block is cancelled and ``Exited`` is raised from it."""
        p = self._spawn(_ScopeProcess, None, name, None, None)
        p._flags = (p._flags & ~F_STARTING) | F_SCOPE | (F_TRAP if trap_exit else 0)
        task = asyncio.current_task()
        assert task is not None
        p._task = task
        try:
            yield p
        except asyncio.CancelledError:
            if p._flags & F_SCOPE_CANCELLED:
                task.uncancel()
                raise Exited(p.pid, self.exit_reason_of(p)) from None
            self._exit(p, KILLED)
            raise
        except BaseException as e:
            if p._flags & F_DEAD:
                raise
            self._exit(p, e.reason if type(e) is ExitNow else e)
            raise
        else:
            if p._flags & F_DEAD:
                if p._flags & F_SCOPE_CANCELLED:
                    task.uncancel()
                raise Exited(p.pid, self.exit_reason_of(p))
            self._exit(p, NORMAL)
        finally:
            p._task = None

    # ---------------------------------------------------------- hibernation

    def _schedule_sweep(self) -> None:
        if not self._closing:
            self._sweeper = self._loop.call_later(self.hibernate_sweep, self._sweep)

    def _sweep(self, force: bool = False) -> int:
        """Release the task of every process idle for its ``hibernate_after``, then shrink the
        tables that fell far below their peak (``_compaction``)."""
        n = 0
        interval = self.hibernate_sweep
        for p in list(self._active):
            w = p._waiter
            if w is None or p._mailbox or p._flags & F_TIMEOUT:
                continue
            after = type(p).hibernate_after
            if after is None and not force:
                continue
            idle = (p._flags >> IDLE_SHIFT) + 1
            if force or idle * interval >= (after or 0.0):
                p._waiter = None
                if not w.done():
                    w.set_result(None)
                n += 1
            else:
                p._flags += IDLE_UNIT
        compact_tables(self)
        if not force:
            self._schedule_sweep()
        return n

    async def hibernate_idle(self) -> int:
        """Hibernate every idle process now, whatever its ``hibernate_after``; returns how
        many. (The sweeper does this on its own; this is for tests and benchmarks.)"""
        n = self._sweep(force=True)
        for _ in range(3):
            await asyncio.sleep(0)
        return n

    def active_count(self) -> int:
        """Processes that hold an asyncio task right now (the others are hibernated)."""
        return len(self._active)


def _add_link(a: Process, b: Process) -> None:
    ls = a._links
    if ls is None:
        a._links = b
    elif type(ls) is set:
        ls.add(b)
        n = len(ls)
        if n >= MIN_PEAK and not n & (n - 1):  # a power of two: note a big link set
            a._rt._watch.note_links(a, n)
    elif ls is not b:
        a._links = {ls, b}  # type: ignore[arg-type]


def _drop_link(a: Process, b: Process) -> None:
    ls = a._links
    if ls is b:
        a._links = None
    elif type(ls) is set:
        ls.discard(b)
