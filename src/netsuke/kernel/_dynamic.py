"""DynamicSupervisor: many children of one kind, started on demand.

Start one with ``await rt.start(DynamicSupervisor, DynamicSupervisorSpec(...), name=...)`` or as
a child: ``ChildSpec(DynamicSupervisor, DynamicSupervisorSpec(...))``. Options (defaults):

* ``max_children`` [``None``, unlimited]: ``start_child`` beyond it raises ``MaxChildrenError``.
* ``max_restarts`` [``3``] in ``max_seconds`` [``5.0``]: restart intensity, as for
  ``Supervisor`` (the strategy is always ``one_for_one``).

``start_child(sup, spec, arg=..., name=...)`` starts a child from a ``ChildSpec``; ``arg`` and
``name`` override the spec's, so one spec can serve as the template of every child (children
then cost only their own state). Restart values and shutdown policies mean what they mean for
``Supervisor``. A local ``start_child`` runs directly in the caller (the kernel is one thread, so
it is as serialised as a message to the supervisor, without the round trip); a remote one is a
call.

On shutdown every child gets the exit signal ``shutdown`` at once (there is no order between
dynamic children); children that trap exits get their ``shutdown`` time, then are killed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from ._errors import ChildNotFoundError, MaxChildrenError, NoProcessError, StartError
from ._messages import From
from ._pid import KILLED, SHUTDOWN, ExitReason, Pid, Target, Via, is_abnormal
from ._process import F_DEAD, F_NORESTART, F_STARTING, Process, linked
from ._runtime import current_runtime
from ._supervisor import ChildInfo, ChildSpec, RestartIntensity, _counts, shutdown_process

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

    def __post_init__(self) -> None:
        if self.max_children is not None and self.max_children < 0:
            raise ValueError("max_children must be >= 0 or None")
        if self.max_restarts < 0 or self.max_seconds <= 0:
            raise ValueError("max_restarts must be >= 0 and max_seconds > 0")


def _name_of(p: Process) -> Any:
    r = p._reg
    if r is None or type(r) is str:
        return r
    return Via(r[0][0], r[0][1]) if r else None


class DynamicSupervisor(Process):
    """Supervises children started on demand. See the module documentation."""

    __slots__ = ("_count", "_dspec", "_intensity")
    hibernate_after = 1.0

    def init(self, arg: Any) -> None:
        spec = arg if arg is not None else DynamicSupervisorSpec()
        if not isinstance(spec, DynamicSupervisorSpec):
            raise TypeError(f"DynamicSupervisor needs a DynamicSupervisorSpec, got {arg!r}")
        self.trap_exit = True
        self._dspec = spec
        self._count = 0
        self._intensity = RestartIntensity(spec.max_restarts, spec.max_seconds)

    # ------------------------------------------------------------ internals

    def _children_procs(self) -> list[Process]:
        return [
            p
            for p in linked(self._links)
            if p._parent is self and not p._flags & (F_DEAD | F_STARTING)
        ]

    async def _start(self, spec: ChildSpec, arg: Any, name: Any) -> Pid | None:
        if self._flags & F_DEAD:
            raise NoProcessError(self.pid)
        mc = self._dspec.max_children
        if mc is not None and self._count >= mc:
            raise MaxChildrenError(self.pid, mc)
        self._count += 1
        try:
            p = await self._rt._start_proc(
                spec.start,
                spec.arg if arg is _UNSET else arg,
                name=spec.name if name is _UNSET else name,
                parent=self,
                spec=spec,
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
        self._count -= 1
        spec: ChildSpec = child._spec
        if child._flags & F_NORESTART or spec.restart == "temporary":
            return None
        if spec.restart == "transient" and not is_abnormal(reason):
            return None
        return self._restart(child, spec)

    async def _restart(self, old: Process, spec: ChildSpec) -> None:
        rt = self._rt
        while True:
            if not self._intensity.add(rt._loop.time()):
                rt.stats.sup_shutdowns += 1
                log.error(
                    "supervisor_max_restart_intensity",
                    supervisor=repr(self.pid),
                    max_restarts=self._intensity.max_restarts,
                    max_seconds=self._intensity.max_seconds,
                )
                self.stop(SHUTDOWN)
                return
            rt.stats.restarts += 1
            try:
                await self._start(spec, old._arg, _name_of(old))
                return
            except StartError as e:
                log.error("child_restart_failed", supervisor=repr(self.pid), error=repr(e.reason))

    async def terminate(self, reason: ExitReason) -> None:
        rt = self._rt
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
        op = request[0]
        if op == "start_child":
            return await self._start(request[1], request[2], request[3])
        if op == "terminate_child":
            return await self._terminate_child(request[1])
        if op == "which_children":
            return self._which()
        if op == "count_children":
            return self._counts()
        raise ValueError(f"unknown dynamic supervisor request {op!r}")

    async def _terminate_child(self, pid: Pid) -> None:
        p = self._rt._resolve(pid)
        if p is None or p._parent is not self:
            raise ChildNotFoundError(self.pid, pid)
        p._flags |= F_NORESTART
        await shutdown_process(self, p, p._spec.shutdown_policy)

    def _which(self) -> list[ChildInfo]:
        return [
            ChildInfo(None, p.pid, p._spec.child_type, p._spec.restart)
            for p in self._children_procs()
        ]

    def _counts(self) -> dict[str, int]:
        return _counts((p._spec, p) for p in self._children_procs())

    # --------------------------------------------------------- client API

    @staticmethod
    def _local(sup: Target, rt: Runtime) -> DynamicSupervisor | None:
        p = rt._resolve(sup)
        if p is None:
            raise NoProcessError(sup)
        return p if isinstance(p, DynamicSupervisor) else None

    @staticmethod
    async def start_child(
        sup: Target,
        spec: ChildSpec,
        *,
        arg: Any = _UNSET,
        name: str | Via | None = _UNSET,
        runtime: Runtime | None = None,
    ) -> Pid | None:
        """Start a child under ``sup``. Returns its pid (``None`` if its init returned
        ``IGNORE``). Raises ``MaxChildrenError``, ``StartError``, ``AlreadyStartedError``
        (``name`` taken), ``NoProcessError``."""
        rt = runtime or current_runtime()
        p = DynamicSupervisor._local(sup, rt)
        if p is not None:
            return await p._start(spec, arg, name)
        return await rt.call(sup, ("start_child", spec, arg, name), timeout=None)  # type: ignore[no-any-return]

    @staticmethod
    async def terminate_child(sup: Target, pid: Pid, *, runtime: Runtime | None = None) -> None:
        """Stop child ``pid`` by its shutdown policy; it is not restarted.
        Raises ``ChildNotFoundError`` when ``pid`` is not a child of ``sup``."""
        rt = runtime or current_runtime()
        p = DynamicSupervisor._local(sup, rt)
        if p is not None:
            await p._terminate_child(pid)
            return
        await rt.call(sup, ("terminate_child", pid), timeout=None)

    @staticmethod
    async def which_children(sup: Target, *, runtime: Runtime | None = None) -> list[ChildInfo]:
        rt = runtime or current_runtime()
        p = DynamicSupervisor._local(sup, rt)
        if p is not None:
            return p._which()
        return await rt.call(sup, ("which_children",))  # type: ignore[no-any-return]

    @staticmethod
    async def count_children(sup: Target, *, runtime: Runtime | None = None) -> dict[str, int]:
        """``{"specs", "active", "workers", "supervisors"}`` as in OTP."""
        rt = runtime or current_runtime()
        p = DynamicSupervisor._local(sup, rt)
        if p is not None:
            return p._counts()
        return await rt.call(sup, ("count_children",))  # type: ignore[no-any-return]
