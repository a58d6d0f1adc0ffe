"""DynamicSupervisor: many children of one kind, started on demand.

Start one with ``await rt.start(DynamicSupervisor, DynamicSupervisorSpec(...), name=...)`` or as
a child: ``ChildSpec(DynamicSupervisor, DynamicSupervisorSpec(...))``. Options (defaults):

* ``max_children`` [``None``, unlimited]: ``start_child`` beyond it raises ``MaxChildrenError``.
  A child whose restart is being retried still counts.
* ``max_restarts`` [``3``] in ``max_seconds`` [``5.0``]: restart intensity, as for
  ``Supervisor`` (the strategy is always ``one_for_one``).
* ``extra_arguments`` [``()``]: values put before every child's own argument: with
  ``extra_arguments=(a, b)`` a child started with ``arg=x`` gets ``init((a, b, x))`` (Elixir
  prepends them to the start arguments). Restarts reuse the argument the child got.

``start_child(sup, spec, arg=..., name=...)`` starts a child from a ``ChildSpec``; ``arg`` and
``name`` override the spec's, so one spec can serve as the template of every child (children
then cost only their own state). Restart values and shutdown policies mean what they mean for
``Supervisor``; a significant child is refused (``InvalidChildSpecError("invalid_significant")``,
as in Elixir: a DynamicSupervisor has no ``auto_shutdown``). A child whose restart returns
``IGNORE`` is dropped. A local ``start_child`` runs directly in the caller (the kernel is one
thread, so it is as serialised as a message to the supervisor, without the round trip); a remote
one is a call. ``which_children``, ``which_child``, ``get_childspec`` and ``count_children`` are
always calls, so they see every exit the supervisor was told of before them. Refused requests
raise in the caller and leave the supervisor as it was.

A failed restart is retried through the supervisor's mailbox (see ``Supervisor``): meanwhile
``which_children`` shows the child with ``pid="restarting"``, ``count_children`` counts it as a
spec and a worker but not as active, it counts against ``max_children``, and
``terminate_child(sup, old_pid)`` ends the retries. Each retry counts against the intensity.

``which_children`` lists children in start order (a restarted child keeps the place of the
child it replaced only while it is restarting; once running it sorts by its new pid).

On shutdown every child gets the exit signal ``shutdown`` at once (there is no order between
dynamic children); children that trap exits get their ``shutdown`` time, then are killed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, overload

import structlog

from ._errors import (
    ChildNotFoundError,
    InvalidChildSpecError,
    MaxChildrenError,
    NoProcessError,
    UsageError,
)
from ._messages import From
from ._pid import KILLED, SHUTDOWN, ExitReason, Pid, Target, Via, is_abnormal
from ._process import F_DEAD, F_NORESTART, F_STARTING, F_STOP, Process, linked
from ._runtime import current_runtime
from ._startinfo import StartResult
from ._supervisor import (
    RESTARTING,
    ChildInfo,
    ChildSpec,
    RestartIntensity,
    TryAgain,
    _counts,
    count_restart,
    schedule_retry,
    shutdown_process,
)

if TYPE_CHECKING:
    from ._runtime import Runtime

__all__ = ["DynamicSupervisor", "DynamicSupervisorSpec"]

log = structlog.get_logger("netsuke.kernel.supervisor")
_UNSET: Any = object()


@dataclass(frozen=True, slots=True)
class DynamicSupervisorSpec:
    """Options of a ``DynamicSupervisor`` (defaults shown)."""

    max_children: int | None = None
    max_restarts: int = 3
    max_seconds: float = 5.0
    extra_arguments: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        if self.max_children is not None and self.max_children < 0:
            raise ValueError("max_children must be >= 0 or None")
        if self.max_restarts < 0 or self.max_seconds <= 0:
            raise ValueError("max_restarts must be >= 0 and max_seconds > 0")
        if not isinstance(self.extra_arguments, tuple):
            raise ValueError(f"extra_arguments must be a tuple: {self.extra_arguments!r}")


def _name_of(p: Process) -> Any:
    r = p._reg
    if r is None or type(r) is str:
        return r
    return Via(r[0][0], r[0][1]) if r else None


class DynamicSupervisor(Process):
    """Supervises children started on demand. See the module documentation."""

    __slots__ = ("_count", "_dspec", "_intensity", "_restarting")
    hibernate_after = 1.0

    def init(self, arg: Any) -> None:
        spec = arg if arg is not None else DynamicSupervisorSpec()
        if not isinstance(spec, DynamicSupervisorSpec):
            raise TypeError(f"DynamicSupervisor needs a DynamicSupervisorSpec, got {arg!r}")
        self.trap_exit = True
        self._dspec = spec
        self._count = 0
        self._intensity = RestartIntensity(spec.max_restarts, spec.max_seconds)
        # old pid -> (spec, arg, name) of the children whose restart is being retried
        self._restarting: dict[Pid, tuple[ChildSpec, Any, Any]] | None = None

    # ------------------------------------------------------------ internals

    def _children_procs(self) -> list[Process]:
        return [
            p
            for p in linked(self._links)
            if p._parent is self and p._spec is not None and not p._flags & (F_DEAD | F_STARTING)
        ]

    async def _start(
        self, spec: ChildSpec, arg: Any, name: Any, info: list[Any] | None = None
    ) -> Pid | None:
        if self._flags & (F_DEAD | F_STOP):
            raise NoProcessError(self.pid)
        if type(spec) is not ChildSpec:
            raise InvalidChildSpecError("invalid_child_spec", spec)
        if spec.significant:
            raise InvalidChildSpecError("invalid_significant", True)
        mc = self._dspec.max_children
        if mc is not None and self._count >= mc:
            raise MaxChildrenError(self.pid, mc)
        a = spec.arg if arg is _UNSET else arg
        extra = self._dspec.extra_arguments
        if extra:
            a = (*extra, a)
        self._count += 1
        try:
            p = await self._rt._start_proc(
                spec.start,
                a,
                name=spec.name if name is _UNSET else name,
                parent=self,
                spec=spec,
                info=info,
            )
        except BaseException:
            self._count -= 1
            raise
        if p is None:
            self._count -= 1
            return None
        if self._flags & F_DEAD:  # we died while the child was starting
            self._rt._exit(p, SHUTDOWN)
            raise NoProcessError(self.pid)
        return p.pid

    def _child_exited(self, child: Process, reason: ExitReason) -> Any:
        if child._flags & F_STARTING:
            return None  # failed in init: start_child already reported it
        spec: ChildSpec | None = child._spec
        if spec is None:
            return None
        if (
            child._flags & F_NORESTART
            or spec.restart == "temporary"
            or (spec.restart == "transient" and not is_abnormal(reason))
        ):
            self._count -= 1
            return None
        if reason != KILLED:
            log.warning(
                "child_exited",
                supervisor=repr(self.pid),
                child=repr(child.pid),
                reason=repr(reason),
            )
        return self._restart(child.pid, spec, child._arg, _name_of(child))

    async def _restart(self, key: Pid, spec: ChildSpec, arg: Any, name: Any) -> None:
        """Restart the child that was ``key`` (its slot in ``_count`` is kept meanwhile; it
        shows as restarting until the new process runs)."""
        if not count_restart(self, self._intensity, key):
            return
        r = self._restarting
        if r is None:
            r = self._restarting = {}
        r[key] = (spec, arg, name)
        try:
            p = await self._rt._start_proc(spec.start, arg, name=name, parent=self, spec=spec)
        except Exception as e:
            log.error(
                "child_restart_failed",
                supervisor=repr(self.pid),
                child=repr(key),
                error=repr(getattr(e, "reason", e)),
            )
            if key in r:  # not terminated meanwhile
                schedule_retry(self, key)
            return
        if r.pop(key, None) is None:  # terminate_child ended it while it was starting
            if p is not None:
                p._flags |= F_NORESTART
                await shutdown_process(self, p, spec.shutdown_policy)
            return
        if not r and self._restarting is r:
            self._restarting = None
        if p is None:
            self._count -= 1  # a restart that returns IGNORE drops the child
        elif self._flags & F_DEAD:
            self._rt._exit(p, SHUTDOWN)

    async def handle_info(self, message: Any) -> None:
        if type(message) is TryAgain:
            r = self._restarting
            entry = r.get(message.child) if r else None
            if entry is not None:
                await self._restart(message.child, *entry)
            return
        super().handle_info(message)

    async def terminate(self, reason: ExitReason) -> None:
        rt = self._rt
        self._restarting = None
        waits: list[tuple[Process, asyncio.Future[Any], float | None]] = []
        for p in self._children_procs():
            p._flags |= F_NORESTART
            policy = p._spec.shutdown_policy if p._spec is not None else 5.0
            if policy == "brutal_kill":
                rt._exit(p, KILLED)
                continue
            rt._signal(p, SHUTDOWN, self, None)
            if not p._flags & F_DEAD:
                t = None if policy == "infinity" else float(policy)
                waits.append((p, rt._exit_future(p), t))
        if not waits:
            return
        timeouts = [t for _, _, t in waits]
        limit = (
            None if any(t is None for t in timeouts) else max(t for t in timeouts if t is not None)
        )
        await asyncio.wait([f for _, f, _ in waits], timeout=limit)
        for p, f, _ in waits:
            if not f.done():
                log.warning("child_shutdown_timeout_killing", child=repr(p.pid))
                rt._exit(p, KILLED)

    async def handle_call(self, request: Any, from_: From) -> Any:
        try:
            return await self._request(request)
        except Exception as e:  # a refused request: the caller raises it, we live on
            self.reply_error(from_, e)
            return None

    async def _request(self, request: Any) -> Any:
        op = request[0] if type(request) is tuple and request else request
        if op == "start_child":
            info: list[Any] = []
            pid = await self._start(request[1], request[2], request[3], info)
            return StartResult(pid, info[0] if info else None)
        if op == "terminate_child":
            return await self._terminate_child(request[1])
        if op == "which_children":
            return self._which()
        if op == "which_child":
            return self._which_child(request[1])
        if op == "get_childspec":
            return self._childspec(request[1])
        if op == "count_children":
            return self._counts()
        raise UsageError(f"unknown dynamic supervisor request {request!r}")

    def _child(self, pid: Any) -> Process:
        p = self._rt._resolve(pid) if type(pid) is Pid else None
        if p is None or p._parent is not self or p._spec is None:
            raise ChildNotFoundError(self.pid, pid)
        return p

    async def _terminate_child(self, pid: Pid) -> None:
        r = self._restarting
        if r and pid in r:
            del r[pid]
            self._count -= 1
            return
        p = self._child(pid)
        p._flags |= F_NORESTART
        await shutdown_process(self, p, p._spec.shutdown_policy)

    def _rows(self) -> list[tuple[int, ChildSpec, Pid | None]]:
        rows: list[tuple[int, ChildSpec, Pid | None]] = [
            (p._id, p._spec, p.pid) for p in self._children_procs()
        ]
        r = self._restarting
        if r:
            rows.extend((k.id, spec, None) for k, (spec, _, _) in r.items())
        rows.sort(key=_first)
        return rows

    def _which(self) -> list[ChildInfo]:
        return [
            ChildInfo(None, pid if pid is not None else RESTARTING, s.child_type, s.restart)
            for _, s, pid in self._rows()
        ]

    def _which_child(self, pid: Any) -> ChildInfo:
        r = self._restarting
        if r and pid in r:
            s = r[pid][0]
            return ChildInfo(None, RESTARTING, s.child_type, s.restart)
        p = self._child(pid)
        return ChildInfo(None, p.pid, p._spec.child_type, p._spec.restart)

    def _childspec(self, pid: Any) -> ChildSpec:
        r = self._restarting
        if r and pid in r:
            return r[pid][0]
        return self._child(pid)._spec  # type: ignore[no-any-return]

    def _counts(self) -> dict[str, int]:
        return _counts((s, pid is not None) for _, s, pid in self._rows())

    # --------------------------------------------------------- client API

    @staticmethod
    def _local(sup: Target, rt: Runtime) -> DynamicSupervisor | None:
        p = rt._resolve(sup)
        if p is None:
            raise NoProcessError(sup)
        return p if isinstance(p, DynamicSupervisor) else None

    @overload
    @staticmethod
    async def start_child(
        sup: Target,
        spec: ChildSpec,
        *,
        arg: Any = _UNSET,
        name: str | Via | None = _UNSET,
        with_info: Literal[False] = False,
        runtime: Runtime | None = None,
    ) -> Pid | None: ...

    @overload
    @staticmethod
    async def start_child(
        sup: Target,
        spec: ChildSpec,
        *,
        arg: Any = _UNSET,
        name: str | Via | None = _UNSET,
        with_info: Literal[True],
        runtime: Runtime | None = None,
    ) -> StartResult: ...

    @staticmethod
    async def start_child(
        sup: Target,
        spec: ChildSpec,
        *,
        arg: Any = _UNSET,
        name: str | Via | None = _UNSET,
        with_info: bool = False,
        runtime: Runtime | None = None,
    ) -> Pid | StartResult | None:
        """Start a child under ``sup``. Returns its pid (``None`` if its init returned
        ``IGNORE``), or ``StartResult(pid, info)`` with ``with_info=True``. Raises
        ``MaxChildrenError``, ``StartError``, ``AlreadyStartedError`` (``name`` taken),
        ``InvalidChildSpecError``, ``NoProcessError``; the supervisor is unchanged."""
        rt = runtime or current_runtime()
        p = DynamicSupervisor._local(sup, rt)
        if p is not None:
            if not with_info:
                return await p._start(spec, arg, name)
            info: list[Any] = []
            pid = await p._start(spec, arg, name, info)
            return StartResult(pid, info[0] if info else None)
        r: StartResult = await rt.call(sup, ("start_child", spec, arg, name), timeout=None)
        return r if with_info else r.pid

    @staticmethod
    async def terminate_child(sup: Target, pid: Pid, *, runtime: Runtime | None = None) -> None:
        """Stop child ``pid`` by its shutdown policy; it is not restarted (a restarting child:
        its retries end). Raises ``ChildNotFoundError`` when ``pid`` is not a child of ``sup``."""
        rt = runtime or current_runtime()
        p = DynamicSupervisor._local(sup, rt)
        if p is not None:
            await p._terminate_child(pid)
            return
        await rt.call(sup, ("terminate_child", pid), timeout=None)

    @staticmethod
    async def which_children(sup: Target, *, runtime: Runtime | None = None) -> list[ChildInfo]:
        """Every child (``id`` is ``None``), in start order."""
        rt = runtime or current_runtime()
        return await rt.call(sup, ("which_children",), timeout=None)  # type: ignore[no-any-return]

    @staticmethod
    async def which_child(sup: Target, pid: Pid, *, runtime: Runtime | None = None) -> ChildInfo:
        """The ``ChildInfo`` of child ``pid``. Raises ``ChildNotFoundError``."""
        rt = runtime or current_runtime()
        return await rt.call(sup, ("which_child", pid), timeout=None)  # type: ignore[no-any-return]

    @staticmethod
    async def get_childspec(sup: Target, pid: Pid, *, runtime: Runtime | None = None) -> ChildSpec:
        """The ``ChildSpec`` child ``pid`` was started from. Raises ``ChildNotFoundError``."""
        rt = runtime or current_runtime()
        return await rt.call(sup, ("get_childspec", pid), timeout=None)  # type: ignore[no-any-return]

    @staticmethod
    async def count_children(sup: Target, *, runtime: Runtime | None = None) -> dict[str, int]:
        """``{"specs", "active", "workers", "supervisors"}`` as in OTP."""
        rt = runtime or current_runtime()
        return await rt.call(sup, ("count_children",), timeout=None)  # type: ignore[no-any-return]


def _first(row: tuple[int, Any, Any]) -> int:
    return row[0]
