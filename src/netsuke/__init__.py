"""Netsuke: a runtime for supervised, named, stateful AI agents.

The public API, re-exported one name at a time. ``netsuke.kernel`` holds the OTP-style kernel
(processes, supervisors, registry, tasks); see its documentation for the semantics.

The names are resolved on first use (PEP 562): ``import netsuke`` alone, or importing a light
subpackage such as ``netsuke.manager.sdk`` from an agent package's program, does not load the
kernel, structlog, Prometheus or OpenTelemetry. ``from netsuke import Supervisor`` loads the
kernel then, once; type checkers see the names through the ``TYPE_CHECKING`` import below.
"""

import importlib
import typing

if typing.TYPE_CHECKING:
    from .kernel import (
        IGNORE,
        KILL,
        KILLED,
        NOPROC,
        NOREPLY,
        NORMAL,
        RESTARTING,
        SHUTDOWN,
        TIMEOUT,
        AlreadyStartedError,
        ArgumentError,
        AutoShutdown,
        BadTargetError,
        CallSelfError,
        CallTimeoutError,
        ChildInfo,
        ChildNotFoundError,
        ChildSpec,
        ChildStateError,
        Down,
        DynamicSupervisor,
        DynamicSupervisorSpec,
        Exit,
        Exited,
        ExitNow,
        ExitReason,
        From,
        InvalidChildSpecError,
        KernelError,
        LocalTransport,
        MaxChildrenError,
        NetsukeError,
        NoProcessError,
        NotInProcessError,
        Pid,
        Process,
        ProcessExitedError,
        Ref,
        Registered,
        Registry,
        RegistryEntry,
        Restart,
        Runtime,
        RuntimeClosedError,
        Shutdown,
        StartError,
        StartInfo,
        StartResult,
        Strategy,
        Supervisor,
        SupervisorSpec,
        Target,
        TaskFailedError,
        TaskHandle,
        TaskOutcome,
        TaskSupervisor,
        Transport,
        UnhandledMessageError,
        Unregistered,
        UsageError,
        Via,
        VirtualClockLoop,
        call,
        cast,
        check_childspecs,
        current_runtime,
        is_abnormal,
        is_normal_or_shutdown,
        run_virtual,
        send,
        virtual_time,
        whereis,
    )

__version__ = "0.1.0"

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

# Every public name lives in ``netsuke.kernel``; the mapping keeps room for other homes.
_LAZY: dict[str, str] = dict.fromkeys(__all__, ".kernel")


def __getattr__(name: str) -> typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
