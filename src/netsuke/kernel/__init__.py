"""The Netsuke kernel: OTP-style processes, supervisors, registry and tasks on asyncio.

Everything is re-exported here one name at a time; the modules behind it are private.

Semantics follow Erlang/OTP and are documented where they live:

* processes and callbacks: ``Process`` (``netsuke.kernel._process``);
* exit signals, links, monitors, the node and its shutdown order: ``Runtime``;
* supervisors, child specs, restart values, strategies, intensity: ``Supervisor``;
* ``DynamicSupervisor``, ``Registry``, supervised tasks (``TaskSupervisor``);
* the virtual clock for tests: ``VirtualClockLoop``.
"""

from typing import Any

from ._clock import VirtualClockLoop, run_virtual, virtual_time
from ._dynamic import DynamicSupervisor, DynamicSupervisorSpec
from ._errors import (
    AlreadyStartedError,
    ArgumentError,
    BadTargetError,
    CallSelfError,
    CallTimeoutError,
    ChildNotFoundError,
    ChildStateError,
    Exited,
    InvalidChildSpecError,
    KernelError,
    MaxChildrenError,
    NetsukeError,
    NoProcessError,
    NotInProcessError,
    ProcessExitedError,
    RuntimeClosedError,
    StartError,
    TaskFailedError,
    UnhandledMessageError,
    UsageError,
)
from ._messages import Down, Exit, From
from ._pid import (
    KILL,
    KILLED,
    NOPROC,
    NORMAL,
    SHUTDOWN,
    ExitReason,
    Pid,
    Ref,
    Shutdown,
    Target,
    Via,
    is_abnormal,
    is_normal_or_shutdown,
)
from ._process import IGNORE, NOREPLY, TIMEOUT, ExitNow, Process
from ._registry import Registered, Registry, RegistryEntry, Unregistered
from ._runtime import NameFallback, Runtime, current_runtime
from ._startinfo import StartInfo, StartResult
from ._supervisor import (
    RESTARTING,
    AutoShutdown,
    ChildInfo,
    ChildSpec,
    Restart,
    Strategy,
    Supervisor,
    SupervisorSpec,
    check_childspecs,
)
from ._tasks import TaskHandle, TaskOutcome, TaskSupervisor
from ._transport import LocalTransport, Transport


async def call(target: Target, request: Any, timeout: float | None = 5.0) -> Any:
    """``current_runtime().call(target, request, timeout)``."""
    return await current_runtime().call(target, request, timeout)


def cast(target: Target, request: Any) -> bool:
    """``current_runtime().cast(target, request)``."""
    return current_runtime().cast(target, request)


def send(target: Target, message: Any) -> bool:
    """``current_runtime().send(target, message)``."""
    return current_runtime().send(target, message)


def whereis(target: Target) -> Pid | None:
    """``current_runtime().whereis(target)``."""
    return current_runtime().whereis(target)


__all__ = [
    "IGNORE",
    "KILL",
    "KILLED",
    "NOPROC",
    "NOREPLY",
    "NORMAL",
    "RESTARTING",
    "SHUTDOWN",
    "TIMEOUT",
    "AlreadyStartedError",
    "ArgumentError",
    "AutoShutdown",
    "BadTargetError",
    "CallSelfError",
    "CallTimeoutError",
    "ChildInfo",
    "ChildNotFoundError",
    "ChildSpec",
    "ChildStateError",
    "Down",
    "DynamicSupervisor",
    "DynamicSupervisorSpec",
    "Exit",
    "ExitNow",
    "ExitReason",
    "Exited",
    "From",
    "InvalidChildSpecError",
    "KernelError",
    "LocalTransport",
    "MaxChildrenError",
    "NameFallback",
    "NetsukeError",
    "NoProcessError",
    "NotInProcessError",
    "Pid",
    "Process",
    "ProcessExitedError",
    "Ref",
    "Registered",
    "Registry",
    "RegistryEntry",
    "Restart",
    "Runtime",
    "RuntimeClosedError",
    "Shutdown",
    "StartError",
    "StartInfo",
    "StartResult",
    "Strategy",
    "Supervisor",
    "SupervisorSpec",
    "Target",
    "TaskFailedError",
    "TaskHandle",
    "TaskOutcome",
    "TaskSupervisor",
    "Transport",
    "UnhandledMessageError",
    "Unregistered",
    "UsageError",
    "Via",
    "VirtualClockLoop",
    "call",
    "cast",
    "check_childspecs",
    "current_runtime",
    "is_abnormal",
    "is_normal_or_shutdown",
    "run_virtual",
    "send",
    "virtual_time",
    "whereis",
]
