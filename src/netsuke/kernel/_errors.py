"""The exceptions of the kernel.

Usage mistakes, runtime failures and control-flow signals live in separate branches, and every
exception carries the fields a caller can act on::

    NetsukeError
    ├── UsageError                  a programming mistake; fix the code
    │   ├── BadTargetError          a target that is not a Pid, a name or a Via
    │   ├── CallSelfError           a process called (or stopped) itself (it would deadlock)
    │   ├── ArgumentError           a bad argument: a timeout, a spec, a registry, a pattern
    │   │   └── InvalidChildSpecError  a child spec a supervisor cannot use (OTP's reason)
    │   └── NotInProcessError       a process-only operation outside any process
    ├── KernelError                 a failure at run time; handle it
    │   ├── NoProcessError          the target does not exist (never existed, or already exited)
    │   ├── ProcessExitedError      the target exited while handling the request
    │   ├── CallTimeoutError        no reply within the timeout
    │   ├── AlreadyStartedError     a name is taken; carries the winner's pid
    │   ├── StartError              init failed; carries the reason
    │   ├── MaxChildrenError        a DynamicSupervisor is full
    │   ├── ChildNotFoundError      no child with that id
    │   ├── ChildStateError         a child is running, restarting or already present
    │   ├── TaskFailedError         a supervised task crashed or was killed
    │   ├── UnhandledMessageError   a message reached a default handler
    │   └── RuntimeClosedError      the node is shutting down or closed
    └── Exited                      control flow: the process running this code was exited
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AlreadyStartedError",
    "ArgumentError",
    "BadTargetError",
    "CallSelfError",
    "CallTimeoutError",
    "ChildNotFoundError",
    "ChildStateError",
    "Exited",
    "InvalidChildSpecError",
    "KernelError",
    "MaxChildrenError",
    "NetsukeError",
    "NoProcessError",
    "NotInProcessError",
    "ProcessExitedError",
    "RuntimeClosedError",
    "StartError",
    "TaskFailedError",
    "UnhandledMessageError",
    "UsageError",
]


class NetsukeError(Exception):
    """Base of every exception Netsuke raises on purpose."""


class UsageError(NetsukeError):
    """A programming mistake: the call can never succeed as written."""


class BadTargetError(UsageError, TypeError):
    """A target is neither a ``Pid``, a registered name (``str``) nor a ``Via``."""

    def __init__(self, target: object) -> None:
        super().__init__(f"not a process target: {target!r} (expected Pid, str name or Via)")
        self.target = target


class CallSelfError(UsageError):
    """A process called itself; the call could never be answered."""

    def __init__(self, target: object) -> None:
        super().__init__(f"process {target!r} called itself; this would deadlock")
        self.target = target


class ArgumentError(UsageError, ValueError):
    """A bad argument (Erlang's ``badarg``): a negative timeout, a ``Via`` over something that is
    not a ``Registry``, a malformed ``select`` spec. Raised before anything is done."""


class NotInProcessError(UsageError):
    """An operation that needs a current process ran outside of one."""


class InvalidChildSpecError(ArgumentError, TypeError):
    """A child spec (or a list of them) that a supervisor cannot use. ``reason`` names the fault
    as OTP does: ``invalid_child_spec`` (not a ``ChildSpec``), ``invalid_start``,
    ``invalid_restart_type``, ``invalid_shutdown``, ``invalid_child_type``, ``invalid_name``,
    ``invalid_significant``, ``bad_combination`` (a permanent significant child, or a significant
    child under ``auto_shutdown="never"``), ``duplicate_child_name``; ``value`` is the offender."""

    def __init__(self, reason: str, value: Any) -> None:
        super().__init__(f"{reason}: {value!r}")
        self.reason = reason
        self.value = value


class KernelError(NetsukeError):
    """A failure at run time that a caller can handle."""


class NoProcessError(KernelError):
    """The target does not exist: never started, not registered, or already exited."""

    def __init__(self, target: object) -> None:
        super().__init__(f"no process: {target!r}")
        self.target = target


class ProcessExitedError(KernelError):
    """The target exited before replying. ``reason`` is its exit reason."""

    def __init__(self, target: object, reason: Any) -> None:
        super().__init__(f"process {target!r} exited before replying: {reason!r}")
        self.target = target
        self.reason = reason


class CallTimeoutError(KernelError, TimeoutError):
    """No reply arrived within ``timeout`` seconds. The request may still be handled."""

    def __init__(self, target: object, timeout: float) -> None:
        super().__init__(f"call to {target!r} timed out after {timeout}s")
        self.target = target
        self.timeout = timeout


class AlreadyStartedError(KernelError):
    """A name is already registered. ``pid`` is the process that holds it."""

    def __init__(self, name: object, pid: Any) -> None:
        super().__init__(f"name {name!r} is already registered by {pid!r}")
        self.name = name
        self.pid = pid


class StartError(KernelError):
    """A process failed to start: its ``init`` raised or the process was killed meanwhile."""

    def __init__(self, process: str, reason: Any) -> None:
        super().__init__(f"{process} failed to start: {reason!r}")
        self.process = process
        self.reason = reason


class MaxChildrenError(KernelError):
    """A DynamicSupervisor already runs ``max_children`` children."""

    def __init__(self, supervisor: object, max_children: int) -> None:
        super().__init__(f"supervisor {supervisor!r} is full ({max_children} children)")
        self.supervisor = supervisor
        self.max_children = max_children


class ChildNotFoundError(KernelError):
    """A supervisor has no child with that id or pid."""

    def __init__(self, supervisor: object, child: object) -> None:
        super().__init__(f"supervisor {supervisor!r} has no child {child!r}")
        self.supervisor = supervisor
        self.child = child


class ChildStateError(KernelError, ValueError):
    """A supervisor refused a request because of the state of the child: ``reason`` is
    ``"running"`` (``restart_child``/``delete_child`` of a running child), ``"restarting"`` (the
    same while its restart is being retried) or ``"already_present"`` (``start_child`` with the
    id of a child that is not running)."""

    def __init__(self, supervisor: object, child: object, reason: str) -> None:
        super().__init__(
            f"supervisor {supervisor!r}: child {child!r} is {reason.replace('_', ' ')}"
        )
        self.supervisor = supervisor
        self.child = child
        self.reason = reason


class TaskFailedError(KernelError):
    """A supervised task did not return a value. ``reason`` is why (an exception or ``killed``)."""

    def __init__(self, task: object, reason: Any) -> None:
        super().__init__(f"task {task!r} failed: {reason!r}")
        self.task = task
        self.reason = reason


class UnhandledMessageError(KernelError):
    """A call or cast reached a process that does not override the matching handler."""

    def __init__(self, process: object, kind: str, message: object) -> None:
        super().__init__(f"{process!r} has no {kind} handler for {message!r}")
        self.process = process
        self.kind = kind
        self.message = message


class RuntimeClosedError(KernelError):
    """The node is shutting down or has shut down."""


class Exited(NetsukeError):
    """Raised in a :meth:`Runtime.scope` body when the scope's process was exited.

    ``reason`` is the exit reason, for example the reason of a linked process that crashed.
    """

    def __init__(self, pid: object, reason: Any) -> None:
        super().__init__(f"process {pid!r} exited: {reason!r}")
        self.pid = pid
        self.reason = reason
