"""Supervisor: starts children in order, restarts them by strategy, stops them in reverse order.

Child specs
-----------
A child is described by a :class:`ChildSpec`:

* ``start``: the ``Process`` subclass to start; ``arg``: its ``init`` argument [``None``].
* ``id``: unique within the supervisor [the class name].
* ``restart`` [``"permanent"``]:

  - ``"permanent"``: always restarted;
  - ``"transient"``: restarted only after an abnormal exit (any reason other than ``normal``,
    ``shutdown`` or ``Shutdown(...)``);
  - ``"temporary"``: never restarted, and removed from the supervisor when it exits (also when
    a sibling's crash makes ``one_for_all``/``rest_for_one`` stop it).

* ``shutdown`` [``5.0`` for workers, ``"infinity"`` for supervisors]: how a child is stopped.
  A number: send the exit signal ``shutdown`` (a child that traps exits runs ``terminate``) and
  wait that many seconds, then kill it. ``"brutal_kill"``: kill it at once. ``"infinity"``: wait
  as long as it takes (right for supervisors, which need the time to stop their own children).
* ``type`` [``"supervisor"`` when ``start`` is a Supervisor subclass, else ``"worker"``].
* ``name`` [``None``]: register the child under this name (``str`` or ``Via``) each time it
  starts.

Strategies
----------
* ``"one_for_one"`` [default]: only the child that exited is restarted.
* ``"one_for_all"``: all other children are stopped (in reverse start order), then all are
  started again in order.
* ``"rest_for_one"``: the children started after the one that exited are stopped (in reverse
  order), then it and they are started again in order.

Restart intensity
-----------------
``max_restarts`` [``3``] restarts within ``max_seconds`` [``5.0``]: a restart at time *t* counts
while *t* > now - ``max_seconds``. When a restart would make more than ``max_restarts`` count, the
supervisor stops all its children (reverse order) and exits with reason ``shutdown``; its own
supervisor then decides (a permanent child supervisor is restarted by its parent, whose
intensity counts that restart in turn). A child whose restart fails in ``init`` is retried;
each try counts as a restart.

Start and stop order
--------------------
Children start in list order; ``init`` of a supervisor returns only when every child has
started (if one fails to start, the ones already started are stopped in reverse order and the
supervisor fails to start). On shutdown, children stop in reverse start order, one at a time,
each within its ``shutdown``.

When not to use a Supervisor: for many children of one kind started on demand (sessions,
agents), use :class:`DynamicSupervisor`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import structlog

from ..events import topics
from ..observability import get_tracer
from ._errors import ChildNotFoundError, StartError
from ._messages import From
from ._pid import KILLED, SHUTDOWN, ExitReason, Pid, Target, Via, is_abnormal
from ._process import F_DEAD, Process
from ._runtime import current_runtime

if TYPE_CHECKING:
    from ._runtime import Runtime

__all__ = [
    "ChildInfo",
    "ChildSpec",
    "Restart",
    "Strategy",
    "Supervisor",
    "SupervisorSpec",
]

log = structlog.get_logger("netsuke.kernel.supervisor")
tracer = get_tracer("netsuke.kernel")

Restart = Literal["permanent", "transient", "temporary"]
Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]
ShutdownPolicy = float | Literal["brutal_kill", "infinity"]


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """How to start, restart and stop one child. See the module documentation."""

    start: type[Process]
    arg: Any = None
    id: Any = None
    restart: Restart = "permanent"
    shutdown: ShutdownPolicy | None = None
    type: Literal["worker", "supervisor"] | None = None
    name: str | Via | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.start, type) and issubclass(self.start, Process)):
            raise TypeError(f"ChildSpec.start must be a Process subclass, not {self.start!r}")
        if self.restart not in ("permanent", "transient", "temporary"):
            raise ValueError(f"restart must be permanent, transient or temporary: {self.restart!r}")
        sd = self.shutdown
        bad = sd is not None and sd not in ("brutal_kill", "infinity")
        if bad and (not isinstance(sd, int | float) or isinstance(sd, bool) or sd < 0):
            raise ValueError(f"shutdown must be >= 0, 'brutal_kill' or 'infinity': {sd!r}")
        if self.type not in (None, "worker", "supervisor"):
            raise ValueError(f"type must be worker or supervisor: {self.type!r}")

    @property
    def child_id(self) -> Any:
        return self.id if self.id is not None else self.start.__name__

    @property
    def child_type(self) -> Literal["worker", "supervisor"]:
        if self.type is not None:
            return self.type
        from ._dynamic import DynamicSupervisor

        return "supervisor" if issubclass(self.start, Supervisor | DynamicSupervisor) else "worker"

    @property
    def shutdown_policy(self) -> ShutdownPolicy:
        if self.shutdown is not None:
            return self.shutdown
        return "infinity" if self.child_type == "supervisor" else 5.0


@dataclass(frozen=True, slots=True)
class SupervisorSpec:
    """The ``init`` argument of a plain ``Supervisor``: children and options (defaults shown)."""

    children: list[ChildSpec] = field(default_factory=list)
    strategy: Strategy = "one_for_one"
    max_restarts: int = 3
    max_seconds: float = 5.0

    def __post_init__(self) -> None:
        if self.strategy not in ("one_for_one", "one_for_all", "rest_for_one"):
            raise ValueError(f"unknown strategy {self.strategy!r}")
        if self.max_restarts < 0 or self.max_seconds <= 0:
            raise ValueError("max_restarts must be >= 0 and max_seconds > 0")
        ids = [c.child_id for c in self.children]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ValueError(f"duplicate child ids: {sorted(map(repr, dup))}")


@dataclass(frozen=True, slots=True)
class ChildInfo:
    """One row of ``which_children``: ``pid`` is ``None`` when the child is not running."""

    id: Any
    pid: Pid | None
    type: Literal["worker", "supervisor"]
    restart: Restart


class _Child:
    __slots__ = ("proc", "spec")

    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.proc: Process | None = None


class RestartIntensity:
    """Counts restarts in a sliding window; ``add()`` says whether the limit still holds."""

    __slots__ = ("max_restarts", "max_seconds", "times")

    def __init__(self, max_restarts: int, max_seconds: float) -> None:
        self.max_restarts = max_restarts
        self.max_seconds = max_seconds
        self.times: deque[float] = deque()

    def add(self, now: float) -> bool:
        t = self.times
        t.append(now)
        horizon = now - self.max_seconds
        while t and t[0] <= horizon:
            t.popleft()
        return len(t) <= self.max_restarts


class Supervisor(Process):
    """A process that supervises an ordered list of children. Start one with
    ``await rt.start(Supervisor, SupervisorSpec(children=[...], strategy=...))`` or put it in
    another supervisor with ``ChildSpec(Supervisor, SupervisorSpec(...))``. Subclasses may
    override ``supervise(arg) -> SupervisorSpec`` to build the spec from their own argument."""

    __slots__ = ("_by_proc", "_children", "_intensity", "_sup_spec")
    hibernate_after = 1.0

    def supervise(self, arg: Any) -> SupervisorSpec:
        """The children and options. Default: ``arg`` itself must be a ``SupervisorSpec``."""
        if not isinstance(arg, SupervisorSpec):
            raise TypeError(f"Supervisor needs a SupervisorSpec, got {arg!r}")
        return arg

    async def init(self, arg: Any) -> None:
        spec = self.supervise(arg)
        self.trap_exit = True
        self._sup_spec = spec
        self._intensity = RestartIntensity(spec.max_restarts, spec.max_seconds)
        self._children: list[_Child] = [_Child(c) for c in spec.children]
        self._by_proc: dict[Process, _Child] = {}
        started: list[_Child] = []
        for ch in self._children:
            try:
                await self._start_child(ch)
            except Exception:
                for done in reversed(started):
                    await self._shutdown_child(done)
                raise
            started.append(ch)

    # ------------------------------------------------------------ internals

    async def _start_child(self, ch: _Child) -> None:
        rt = self._rt
        spec = ch.spec
        p = await rt._start_proc(spec.start, spec.arg, name=spec.name, parent=self, spec=spec)
        ch.proc = p
        if p is not None:
            self._by_proc[p] = ch

    async def _shutdown_child(self, ch: _Child) -> None:
        p = ch.proc
        ch.proc = None
        if p is None:
            return
        self._by_proc.pop(p, None)
        await shutdown_process(self, p, ch.spec.shutdown_policy)

    def _child_exited(self, child: Process, reason: ExitReason) -> Any:
        ch = self._by_proc.pop(child, None)
        if ch is None or ch.proc is not child:
            return None  # not ours any more (being stopped, or failed in init)
        ch.proc = None
        return self._restart_after(ch, reason)

    async def _restart_after(self, ch: _Child, reason: ExitReason) -> None:
        spec = ch.spec
        if spec.restart == "temporary":
            self._children.remove(ch)
            return
        if spec.restart == "transient" and not is_abnormal(reason):
            return
        if is_abnormal(reason) and reason != KILLED:
            log.warning(
                "child_exited",
                supervisor=repr(self.pid),
                child=repr(spec.child_id),
                reason=repr(reason),
            )
        strategy = self._sup_spec.strategy
        idx = self._children.index(ch)
        if strategy == "one_for_one":
            group = [ch]
        elif strategy == "one_for_all":
            group = list(self._children)
        else:
            group = self._children[idx:]
        for other in reversed(group):
            if other is not ch and other.proc is not None:
                await self._shutdown_child(other)
        # temporary siblings stopped because of ch are removed, not restarted
        for other in group:
            if other is not ch and other.spec.restart == "temporary":
                self._children.remove(other)
        group = [g for g in group if g in self._children]
        for other in group:
            while True:
                if not self._count_restart(other):
                    return
                try:
                    with tracer.start_as_current_span("netsuke.supervisor.restart"):
                        await self._start_child(other)
                    self._rt.events.publish(
                        topics.PROCESS_RESTARTED,
                        supervisor=repr(self.pid),
                        child=repr(other.spec.child_id),
                        reason=repr(reason),
                    )
                    break
                except StartError as e:
                    log.error(
                        "child_restart_failed",
                        supervisor=repr(self.pid),
                        child=repr(other.spec.child_id),
                        error=repr(e.reason),
                    )

    def _count_restart(self, ch: _Child) -> bool:
        rt = self._rt
        if self._intensity.add(rt._loop.time()):
            rt.stats.restarts += 1
            return True
        rt.stats.sup_shutdowns += 1
        rt.events.publish(
            topics.SUPERVISOR_GAVE_UP, supervisor=repr(self.pid), child=repr(ch.spec.child_id)
        )
        log.error(
            "supervisor_max_restart_intensity",
            supervisor=repr(self.pid),
            child=repr(ch.spec.child_id),
            max_restarts=self._intensity.max_restarts,
            max_seconds=self._intensity.max_seconds,
        )
        self.stop(SHUTDOWN)
        return False

    async def terminate(self, reason: ExitReason) -> None:
        for ch in reversed(list(self._children)):
            await self._shutdown_child(ch)

    # ---------------------------------------------------------------- calls

    async def handle_call(self, request: Any, from_: From) -> Any:
        op = request[0]
        if op == "which_children":
            return [
                ChildInfo(
                    c.spec.child_id,
                    c.proc.pid if c.proc else None,
                    c.spec.child_type,
                    c.spec.restart,
                )
                for c in self._children
            ]
        if op == "count_children":
            return _counts((c.spec, c.proc) for c in self._children)
        if op == "start_child":
            spec: ChildSpec = request[1]
            if any(c.spec.child_id == spec.child_id for c in self._children):
                raise_later = ValueError(f"child id {spec.child_id!r} already present")
                self.reply_error(from_, raise_later)
                return None
            ch = _Child(spec)
            try:
                await self._start_child(ch)
            except StartError as e:
                self.reply_error(from_, e)
                return None
            if ch.proc is not None or spec.restart != "temporary":
                self._children.append(ch)
            return ch.proc.pid if ch.proc else None
        found = self._find(request[1])
        if found is None:
            self.reply_error(from_, ChildNotFoundError(self.pid, request[1]))
            return None
        if op == "terminate_child":
            await self._shutdown_child(found)
            if found.spec.restart == "temporary":
                self._children.remove(found)
            return None
        if op == "restart_child":
            if found.proc is not None:
                self.reply_error(from_, ValueError(f"child {found.spec.child_id!r} is running"))
                return None
            await self._start_child(found)
            return found.proc.pid if found.proc else None
        if op == "delete_child":
            if found.proc is not None:
                self.reply_error(from_, ValueError(f"child {found.spec.child_id!r} is running"))
                return None
            self._children.remove(found)
            return None
        raise ValueError(f"unknown supervisor request {op!r}")

    def _find(self, key: Any) -> _Child | None:
        for c in self._children:
            if c.spec.child_id == key or (c.proc is not None and c.proc.pid == key):
                return c
        return None

    # --------------------------------------------------------- client API

    @staticmethod
    async def start_child(
        sup: Target, spec: ChildSpec, *, runtime: Runtime | None = None
    ) -> Pid | None:
        """Add and start a child. Raises ``StartError``, or ``ValueError`` for a taken id."""
        rt = runtime or current_runtime()
        return await rt.call(sup, ("start_child", spec), timeout=None)  # type: ignore[no-any-return]

    @staticmethod
    async def terminate_child(sup: Target, child: Any, *, runtime: Runtime | None = None) -> None:
        """Stop a child by id or pid (it stays in the list, not running, unless temporary)."""
        rt = runtime or current_runtime()
        await rt.call(sup, ("terminate_child", child), timeout=None)

    @staticmethod
    async def restart_child(
        sup: Target, child_id: Any, *, runtime: Runtime | None = None
    ) -> Pid | None:
        rt = runtime or current_runtime()
        return await rt.call(sup, ("restart_child", child_id), timeout=None)  # type: ignore[no-any-return]

    @staticmethod
    async def delete_child(sup: Target, child_id: Any, *, runtime: Runtime | None = None) -> None:
        rt = runtime or current_runtime()
        await rt.call(sup, ("delete_child", child_id))

    @staticmethod
    async def which_children(sup: Target, *, runtime: Runtime | None = None) -> list[ChildInfo]:
        rt = runtime or current_runtime()
        return await rt.call(sup, ("which_children",))  # type: ignore[no-any-return]

    @staticmethod
    async def count_children(sup: Target, *, runtime: Runtime | None = None) -> dict[str, int]:
        """``{"specs", "active", "workers", "supervisors"}`` as in OTP."""
        rt = runtime or current_runtime()
        return await rt.call(sup, ("count_children",))  # type: ignore[no-any-return]


def _counts(items: Any) -> dict[str, int]:
    specs = active = workers = sups = 0
    for spec, proc in items:
        specs += 1
        if proc is not None:
            active += 1
        if spec.child_type == "supervisor":
            sups += 1
        else:
            workers += 1
    return {"specs": specs, "active": active, "workers": workers, "supervisors": sups}


async def shutdown_process(parent: Process, p: Process, policy: ShutdownPolicy) -> None:
    """Stop child ``p`` of ``parent`` by its shutdown policy (see the module documentation)."""
    rt = p._rt
    if p._flags & F_DEAD:
        return
    if policy == "brutal_kill":
        rt._exit(p, KILLED)
        return
    done = rt._exit_future(p)
    rt._signal(p, SHUTDOWN, parent, parent.pid)
    if p._flags & F_DEAD:
        return
    timeout = None if policy == "infinity" else float(policy)
    try:
        if timeout is None:
            await asyncio.shield(done)
        else:
            await asyncio.wait_for(asyncio.shield(done), timeout)
    except TimeoutError:
        log.warning("child_shutdown_timeout_killing", child=repr(p.pid), timeout=timeout)
        rt._exit(p, KILLED)
