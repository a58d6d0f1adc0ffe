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
    a sibling's crash makes ``one_for_all``/``rest_for_one`` stop it, and when its start
    returns ``IGNORE``).

* ``shutdown`` [``5.0`` for workers, ``"infinity"`` for supervisors]: how a child is stopped.
  A number: send the exit signal ``shutdown`` (a child that traps exits runs ``terminate``) and
  wait that many seconds, then kill it. ``"brutal_kill"``: kill it at once. ``"infinity"``: wait
  as long as it takes (right for supervisors, which need the time to stop their own children).
* ``type`` [``"supervisor"`` when ``start`` is a Supervisor subclass, else ``"worker"``].
* ``name`` [``None``]: register the child under this name (``str`` or ``Via``) each time it
  starts.
* ``significant`` [``False``]: a ``transient`` or ``temporary`` child whose own exit (not a
  restart, not ``terminate_child``, not a sibling's crash) may stop the supervisor, by its
  ``auto_shutdown``. A permanent significant child is refused (``bad_combination``).

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
while *t* > now - ``max_seconds``. A restart is one decision of the strategy: a
``one_for_all``/``rest_for_one`` group restart counts once, whatever the size of the group.
When a restart would make more than ``max_restarts`` count, the supervisor stops all its
children (reverse order) and exits with reason ``shutdown``; its own supervisor then decides (a
permanent child supervisor is restarted by its parent, whose intensity counts that restart in
turn).

A failed restart is retried through the supervisor's mailbox, as in OTP: the child is shown as
``restarting`` (``which_children`` gives ``pid="restarting"``; ``count_children`` counts it as a
spec, not as active), the supervisor answers calls and can be stopped meanwhile, and each retry
counts against the intensity, so a child that never starts again makes the supervisor give up.
In a ``one_for_all`` group, a sibling that fails to start makes the retry stop the children
already restarted and start the whole group again; in ``rest_for_one`` the retry restarts the
failed child and the ones after it. ``terminate_child`` ends the retries of a restarting child;
``restart_child``/``delete_child`` refuse it (``ChildStateError("restarting")``).

Auto shutdown
-------------
``auto_shutdown`` [``"never"``]: ``"any_significant"`` stops the supervisor (reverse order, exit
reason ``shutdown``) when any significant child exits by itself and is not restarted;
``"all_significant"`` when the last significant child that was running (or restarting) does.

Start and stop order
--------------------
Children start in list order; ``init`` of a supervisor returns only when every child has
started (if one fails to start, the ones already started are stopped in reverse order and the
supervisor fails to start). On shutdown, children stop in reverse start order, one at a time,
each within its ``shutdown``.

Requests
--------
``start_child``, ``restart_child``, ``terminate_child``, ``delete_child``, ``which_children``,
``which_child``, ``count_children`` and ``get_childspec`` are calls; a bad request (a malformed
spec, a taken id or name, a start that fails) raises in the caller and leaves the supervisor as
it was. ``check_childspecs(specs)`` validates specs without a supervisor.

When not to use a Supervisor: for many children of one kind started on demand (sessions,
agents), use :class:`DynamicSupervisor`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal, overload

import structlog

from ..events import topics
from ..observability import get_tracer
from ._errors import (
    AlreadyStartedError,
    ChildNotFoundError,
    ChildStateError,
    InvalidChildSpecError,
    UsageError,
)
from ._messages import From
from ._pid import KILLED, SHUTDOWN, ExitReason, Pid, Target, Via, is_abnormal
from ._process import F_DEAD, IGNORE, Process
from ._runtime import current_runtime
from ._startinfo import StartResult

if TYPE_CHECKING:
    from ._runtime import Runtime

__all__ = [
    "RESTARTING",
    "AutoShutdown",
    "ChildInfo",
    "ChildSpec",
    "Restart",
    "Strategy",
    "Supervisor",
    "SupervisorSpec",
    "check_childspecs",
]

log = structlog.get_logger("netsuke.kernel.supervisor")
tracer = get_tracer("netsuke.kernel")

Restart = Literal["permanent", "transient", "temporary"]
Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]
AutoShutdown = Literal["never", "any_significant", "all_significant"]
ShutdownPolicy = float | Literal["brutal_kill", "infinity"]

RESTARTING: Final[Literal["restarting"]] = "restarting"
"""The ``pid`` of a ``ChildInfo`` whose restart failed and is being retried."""


def _spec_fault(spec: Any) -> tuple[str, Any] | None:
    """What is wrong with ``spec`` (OTP's reason and the offending value), or ``None``."""
    if not isinstance(spec, ChildSpec):
        return "invalid_child_spec", spec
    s: Any = spec  # checked field by field: a spec may be mutated or built around __init__
    start = s.start
    if not (isinstance(start, type) and issubclass(start, Process)):
        return "invalid_start", start
    if s.restart not in ("permanent", "transient", "temporary"):
        return "invalid_restart_type", s.restart
    sd = s.shutdown
    if (
        sd is not None
        and sd not in ("brutal_kill", "infinity")
        and (not isinstance(sd, int | float) or isinstance(sd, bool) or sd < 0)
    ):
        return "invalid_shutdown", sd
    if s.type not in (None, "worker", "supervisor"):
        return "invalid_child_type", s.type
    if s.name is not None and not isinstance(s.name, str | Via):
        return "invalid_name", s.name
    if not isinstance(s.significant, bool):
        return "invalid_significant", s.significant
    if s.significant and s.restart == "permanent":
        return "bad_combination", {"restart": "permanent", "significant": True}
    return None


def check_childspecs(specs: Iterable[Any], auto_shutdown: AutoShutdown = "never") -> None:
    """Validate child specs as a supervisor with ``auto_shutdown`` would (OTP's
    ``check_childspecs``). Raises ``InvalidChildSpecError`` naming the first fault."""
    if isinstance(specs, ChildSpec) or not isinstance(specs, Iterable):
        raise InvalidChildSpecError("badarg", specs)
    seen: set[Any] = set()
    for spec in specs:
        _check_spec(spec, auto_shutdown)
        cid = spec.child_id
        if cid in seen:
            raise InvalidChildSpecError("duplicate_child_name", cid)
        seen.add(cid)


def _check_spec(spec: Any, auto_shutdown: AutoShutdown) -> None:
    fault = _spec_fault(spec)
    if fault is not None:
        raise InvalidChildSpecError(*fault)
    if spec.significant and auto_shutdown == "never":
        raise InvalidChildSpecError(
            "bad_combination", {"auto_shutdown": "never", "significant": True}
        )


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
    significant: bool = False

    def __post_init__(self) -> None:
        fault = _spec_fault(self)
        if fault is not None:
            reason, value = fault
            raise InvalidChildSpecError(reason, value)

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
    auto_shutdown: AutoShutdown = "never"

    def __post_init__(self) -> None:
        if self.strategy not in ("one_for_one", "one_for_all", "rest_for_one"):
            raise ValueError(f"unknown strategy {self.strategy!r}")
        if self.max_restarts < 0 or self.max_seconds <= 0:
            raise ValueError("max_restarts must be >= 0 and max_seconds > 0")
        if self.auto_shutdown not in ("never", "any_significant", "all_significant"):
            raise ValueError(f"unknown auto_shutdown {self.auto_shutdown!r}")
        check_childspecs(self.children, self.auto_shutdown)


@dataclass(frozen=True, slots=True)
class ChildInfo:
    """One row of ``which_children``: ``pid`` is ``None`` when the child is not running and
    ``"restarting"`` while a failed restart is being retried."""

    id: Any
    pid: Pid | Literal["restarting"] | None
    type: Literal["worker", "supervisor"]
    restart: Restart


class _Child:
    __slots__ = ("proc", "restarting", "spec")

    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.proc: Process | None = None
        self.restarting = False

    def info(self) -> ChildInfo:
        s = self.spec
        pid = self.proc.pid if self.proc is not None else (RESTARTING if self.restarting else None)
        return ChildInfo(s.child_id, pid, s.child_type, s.restart)


class TryAgain:
    """Private: a message a supervisor sends itself to retry a failed restart."""

    __slots__ = ("child",)

    def __init__(self, child: Any) -> None:
        self.child = child


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


def count_restart(sup: Process, intensity: RestartIntensity, child: Any) -> bool:
    """Count one restart of ``sup``; when the intensity is exceeded, log, count and ask ``sup``
    to stop with ``shutdown`` (after the current message), and return ``False``."""
    rt = sup._rt
    if intensity.add(rt._loop.time()):
        rt.stats.restarts += 1
        return True
    rt.stats.sup_shutdowns += 1
    rt.events.publish(topics.SUPERVISOR_GAVE_UP, supervisor=repr(sup.pid), child=repr(child))
    log.error(
        "supervisor_max_restart_intensity",
        supervisor=repr(sup.pid),
        child=repr(child),
        max_restarts=intensity.max_restarts,
        max_seconds=intensity.max_seconds,
    )
    sup.stop(SHUTDOWN)
    return False


def schedule_retry(sup: Process, key: Any) -> None:
    """Retry a failed restart through ``sup``'s mailbox, after the loop has run other work."""
    sup._rt._loop.call_soon(sup._deliver_if_alive, TryAgain(key))


class Supervisor(Process):
    """A process that supervises an ordered list of children. Start one with
    ``await rt.start(Supervisor, SupervisorSpec(children=[...], strategy=...))`` or put it in
    another supervisor with ``ChildSpec(Supervisor, SupervisorSpec(...))``. Subclasses may
    override ``supervise(arg) -> SupervisorSpec`` to build the spec from their own argument.
    See the module documentation for the semantics."""

    __slots__ = ("_by_proc", "_children", "_intensity", "_sup_spec")
    hibernate_after = 1.0

    def supervise(self, arg: Any) -> SupervisorSpec:
        """The children and options (or ``IGNORE``: the supervisor does not start). Default:
        ``arg`` itself must be a ``SupervisorSpec``."""
        if not isinstance(arg, SupervisorSpec):
            raise TypeError(f"Supervisor needs a SupervisorSpec, got {arg!r}")
        return arg

    async def init(self, arg: Any) -> Any:
        spec = self.supervise(arg)
        if spec is IGNORE:
            return IGNORE
        if not isinstance(spec, SupervisorSpec):
            raise TypeError(f"supervise() must return a SupervisorSpec, got {spec!r}")
        check_childspecs(spec.children, spec.auto_shutdown)
        self.trap_exit = True
        self._sup_spec = spec
        self._intensity = RestartIntensity(spec.max_restarts, spec.max_seconds)
        self._children: list[_Child] = [_Child(c) for c in spec.children]
        self._by_proc: dict[Process, _Child] = {}
        started: list[_Child] = []
        for ch in list(self._children):
            try:
                await self._start_child(ch)
            except Exception:
                for done in reversed(started):
                    await self._shutdown_child(done)
                raise
            if ch.proc is None and ch.spec.restart == "temporary":
                self._children.remove(ch)  # IGNORE from a temporary child: not kept
            else:
                started.append(ch)
        return None

    # ------------------------------------------------------------ internals

    async def _start_child(self, ch: _Child, info: list[Any] | None = None) -> None:
        rt = self._rt
        spec = ch.spec
        p = await rt._start_proc(
            spec.start, spec.arg, name=spec.name, parent=self, spec=spec, info=info
        )
        ch.proc = p
        ch.restarting = False
        if p is not None:
            self._by_proc[p] = ch

    async def _shutdown_child(self, ch: _Child) -> None:
        p = ch.proc
        ch.proc = None
        ch.restarting = False
        if p is None:
            return
        self._by_proc.pop(p, None)
        await shutdown_process(self, p, ch.spec.shutdown_policy)

    def _child_exited(self, child: Process, reason: ExitReason) -> Any:
        ch = self._by_proc.pop(child, None)
        if ch is None or ch.proc is not child:
            return None  # not ours any more (being stopped, or failed in init)
        ch.proc = None
        return self._after_exit(ch, reason)

    async def _after_exit(self, ch: _Child, reason: ExitReason) -> None:
        spec = ch.spec
        if spec.restart == "temporary":
            self._children.remove(ch)
            self._auto_shutdown(ch)
            return
        if spec.restart == "transient" and not is_abnormal(reason):
            self._auto_shutdown(ch)
            return
        if is_abnormal(reason) and reason != KILLED:
            log.warning(
                "child_exited",
                supervisor=repr(self.pid),
                child=repr(spec.child_id),
                reason=repr(reason),
            )
        await self._restart(ch, reason)

    def _auto_shutdown(self, ch: _Child) -> None:
        mode = self._sup_spec.auto_shutdown
        if mode == "never" or not ch.spec.significant:
            return
        if mode == "all_significant" and any(
            c.spec.significant and (c.proc is not None or c.restarting) for c in self._children
        ):
            return
        log.info(
            "supervisor_auto_shutdown",
            supervisor=repr(self.pid),
            child=repr(ch.spec.child_id),
            auto_shutdown=mode,
        )
        self.stop(SHUTDOWN)

    async def _restart(self, ch: _Child, reason: ExitReason) -> None:
        """One restart decision of the strategy for ``ch`` (counted once against the
        intensity). A child that fails to start is marked restarting and retried later."""
        if not count_restart(self, self._intensity, ch.spec.child_id):
            return
        strategy = self._sup_spec.strategy
        children = self._children
        if strategy == "one_for_one":
            group = [ch]
        else:
            group = list(children) if strategy == "one_for_all" else children[children.index(ch) :]
            for other in reversed(group):
                if other is not ch and (other.proc is not None or other.restarting):
                    await self._shutdown_child(other)
            # temporary siblings stopped because of ch are removed, not restarted
            for other in group:
                if other is not ch and other.spec.restart == "temporary":
                    children.remove(other)
            group = [g for g in group if g in children]
        for other in group:
            try:
                with tracer.start_as_current_span("netsuke.supervisor.restart"):
                    await self._start_child(other)
            except Exception as e:
                log.error(
                    "child_restart_failed",
                    supervisor=repr(self.pid),
                    child=repr(other.spec.child_id),
                    error=repr(getattr(e, "reason", e)),
                )
                other.restarting = True
                schedule_retry(self, other)
                return
            self._rt.events.publish(
                topics.PROCESS_RESTARTED,
                supervisor=repr(self.pid),
                child=repr(other.spec.child_id),
                reason=repr(reason),
            )

    async def handle_info(self, message: Any) -> None:
        if type(message) is TryAgain:
            ch = message.child
            if ch.restarting and ch in self._children:
                await self._restart(ch, "restart_failed")
            return
        super().handle_info(message)

    async def terminate(self, reason: ExitReason) -> None:
        for ch in reversed(list(self._children)):
            await self._shutdown_child(ch)

    # ---------------------------------------------------------------- calls

    async def handle_call(self, request: Any, from_: From) -> Any:
        try:
            return await self._request(request)
        except Exception as e:  # a refused request: the caller raises it, we live on
            self.reply_error(from_, e)
            return None

    async def _request(self, request: Any) -> Any:
        op = request[0] if type(request) is tuple and request else request
        if op == "which_children":
            return [c.info() for c in self._children]
        if op == "count_children":
            return _counts((c.spec, c.proc is not None) for c in self._children)
        if op == "start_child":
            return await self._start_new(request[1])
        if op not in (
            "terminate_child",
            "restart_child",
            "delete_child",
            "which_child",
            "get_childspec",
        ):
            raise UsageError(f"unknown supervisor request {request!r}")
        found = self._find(request[1])
        if found is None:
            raise ChildNotFoundError(self.pid, request[1])
        cid = found.spec.child_id
        if op == "which_child":
            return found.info()
        if op == "get_childspec":
            return found.spec
        if op == "terminate_child":
            await self._shutdown_child(found)
            if found.spec.restart == "temporary":
                self._children.remove(found)
            return None
        if found.proc is not None:
            raise ChildStateError(self.pid, cid, "running")
        if found.restarting:
            raise ChildStateError(self.pid, cid, RESTARTING)
        if op == "delete_child":
            self._children.remove(found)
            return None
        info: list[Any] = []  # restart_child
        await self._start_child(found, info)
        return StartResult(found.proc.pid if found.proc else None, info[0] if info else None)

    async def _start_new(self, spec: Any) -> StartResult:
        _check_spec(spec, self._sup_spec.auto_shutdown)
        cid = spec.child_id
        for c in self._children:
            if c.spec.child_id == cid:
                if c.proc is not None:
                    raise AlreadyStartedError(cid, c.proc.pid)
                raise ChildStateError(self.pid, cid, "already_present")
        ch = _Child(spec)
        info: list[Any] = []
        await self._start_child(ch, info)
        if ch.proc is not None or spec.restart != "temporary":
            self._children.append(ch)
        return StartResult(ch.proc.pid if ch.proc else None, info[0] if info else None)

    def _find(self, key: Any) -> _Child | None:
        for c in self._children:
            if c.spec.child_id == key or (c.proc is not None and c.proc.pid == key):
                return c
        return None

    # --------------------------------------------------------- client API

    @overload
    @staticmethod
    async def start_child(
        sup: Target,
        spec: ChildSpec,
        *,
        with_info: Literal[False] = False,
        runtime: Runtime | None = None,
    ) -> Pid | None: ...

    @overload
    @staticmethod
    async def start_child(
        sup: Target, spec: ChildSpec, *, with_info: Literal[True], runtime: Runtime | None = None
    ) -> StartResult: ...

    @staticmethod
    async def start_child(
        sup: Target, spec: ChildSpec, *, with_info: bool = False, runtime: Runtime | None = None
    ) -> Pid | StartResult | None:
        """Add and start a child; returns its pid (``None`` if its init returned ``IGNORE``),
        or ``StartResult(pid, info)`` with ``with_info=True``. Raises
        ``InvalidChildSpecError``, ``AlreadyStartedError`` (the id is running, or the name is
        taken), ``ChildStateError("already_present")`` (the id is there, not running),
        ``StartError``; the supervisor is unchanged."""
        rt = runtime or current_runtime()
        r: StartResult = await rt.call(sup, ("start_child", spec, with_info), timeout=None)
        return r if with_info else r.pid

    @staticmethod
    async def terminate_child(sup: Target, child: Any, *, runtime: Runtime | None = None) -> None:
        """Stop a child by id or pid (it stays in the list, not running, unless temporary);
        also ends the retries of a restarting child. Raises ``ChildNotFoundError``."""
        rt = runtime or current_runtime()
        await rt.call(sup, ("terminate_child", child), timeout=None)

    @overload
    @staticmethod
    async def restart_child(
        sup: Target,
        child_id: Any,
        *,
        with_info: Literal[False] = False,
        runtime: Runtime | None = None,
    ) -> Pid | None: ...

    @overload
    @staticmethod
    async def restart_child(
        sup: Target, child_id: Any, *, with_info: Literal[True], runtime: Runtime | None = None
    ) -> StartResult: ...

    @staticmethod
    async def restart_child(
        sup: Target, child_id: Any, *, with_info: bool = False, runtime: Runtime | None = None
    ) -> Pid | StartResult | None:
        """Start a child that is not running again. Raises ``ChildNotFoundError``,
        ``ChildStateError("running"|"restarting")``, ``StartError`` (the child stays, not
        running)."""
        rt = runtime or current_runtime()
        r: StartResult = await rt.call(sup, ("restart_child", child_id), timeout=None)
        return r if with_info else r.pid

    @staticmethod
    async def delete_child(sup: Target, child_id: Any, *, runtime: Runtime | None = None) -> None:
        """Remove a child that is not running. Raises ``ChildNotFoundError``,
        ``ChildStateError("running"|"restarting")``."""
        rt = runtime or current_runtime()
        await rt.call(sup, ("delete_child", child_id), timeout=None)

    @staticmethod
    async def which_children(sup: Target, *, runtime: Runtime | None = None) -> list[ChildInfo]:
        """Every child, in start order."""
        rt = runtime or current_runtime()
        return await rt.call(sup, ("which_children",), timeout=None)  # type: ignore[no-any-return]

    @staticmethod
    async def which_child(sup: Target, child: Any, *, runtime: Runtime | None = None) -> ChildInfo:
        """The ``ChildInfo`` of one child (by id or pid). Raises ``ChildNotFoundError``."""
        rt = runtime or current_runtime()
        return await rt.call(sup, ("which_child", child), timeout=None)  # type: ignore[no-any-return]

    @staticmethod
    async def get_childspec(
        sup: Target, child: Any, *, runtime: Runtime | None = None
    ) -> ChildSpec:
        """The ``ChildSpec`` of one child (by id or pid). Raises ``ChildNotFoundError``."""
        rt = runtime or current_runtime()
        return await rt.call(sup, ("get_childspec", child), timeout=None)  # type: ignore[no-any-return]

    @staticmethod
    async def count_children(sup: Target, *, runtime: Runtime | None = None) -> dict[str, int]:
        """``{"specs", "active", "workers", "supervisors"}`` as in OTP."""
        rt = runtime or current_runtime()
        return await rt.call(sup, ("count_children",), timeout=None)  # type: ignore[no-any-return]

    check_childspecs = staticmethod(check_childspecs)


def _counts(items: Iterable[tuple[ChildSpec, bool]]) -> dict[str, int]:
    specs = active = workers = sups = 0
    for spec, running in items:
        specs += 1
        if running:
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
