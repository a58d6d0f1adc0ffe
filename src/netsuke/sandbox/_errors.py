"""The sandbox's exceptions: one tree, each carrying fields a caller can act on.

```
SandboxError                             anything the sandbox refuses or fails to do
├── FunctionValidationError(field, reason, line, column)
│                                        code refused at store time; nothing was written
├── InvalidArgumentsError(function, reason, path)
│                                        arguments do not fit the input schema; nothing ran
├── IsolationUnavailableError(reason)    no isolation mechanism here: execution refused
├── ExecutionBusyError(scope, limit, retry_after_s)
│                                        too many calls at once (node or caller); nothing ran
├── SandboxClosedError                   the sandbox was closed
└── ExecutionError(function, version, execution_id)
    │                                    the call ran in a worker and did not succeed
    ├── ExecutionTimeoutError(limit_s, kind)     wall clock ("wall") or CPU ("cpu")
    ├── MemoryLimitError(limit_mb)               the address-space limit was hit
    ├── OutputLimitError(limit, what)            "captured output" or "result" over its cap
    ├── SandboxViolationError(reason)            a guard or the seccomp filter stopped it
    ├── FunctionRaisedError(exc_type, message, traceback)
    │                                            the function's own exception (user frames only)
    ├── InvalidResultError(reason)               not JSON, or not valid for the output schema
    └── WorkerCrashedError(returncode, detail)   the worker died without a result frame
```

Usage mistakes (``FunctionValidationError``, ``InvalidArgumentsError``) are apart from run
failures (``ExecutionError``), so an API maps them to 422 and the others to a failed call. A
missing function is the store's ``NotFoundError``. Messages never carry host environment values.
"""

from __future__ import annotations

__all__ = [
    "ExecutionBusyError",
    "ExecutionError",
    "ExecutionTimeoutError",
    "FunctionRaisedError",
    "FunctionValidationError",
    "InvalidArgumentsError",
    "InvalidResultError",
    "IsolationUnavailableError",
    "MemoryLimitError",
    "OutputLimitError",
    "SandboxClosedError",
    "SandboxError",
    "SandboxViolationError",
    "WorkerCrashedError",
]


class SandboxError(Exception):
    """Base of every error the sandbox raises on purpose."""


class FunctionValidationError(SandboxError):
    """Code or definition refused before storing. ``line``/``column`` (1-based) locate the
    offending code when the reason is in it, else ``None``."""

    def __init__(
        self, field: str, reason: str, *, line: int | None = None, column: int | None = None
    ) -> None:
        self.field = field
        self.reason = reason
        self.line = line
        self.column = column
        where = f" (line {line}, column {column})" if line is not None else ""
        super().__init__(f"{field}: {reason}{where}")


class InvalidArgumentsError(SandboxError):
    """The arguments do not fit the function's input schema; ``path`` is the JSON path."""

    def __init__(self, function: str, reason: str, path: str = "$") -> None:
        self.function = function
        self.reason = reason
        self.path = path
        super().__init__(f"{function}: invalid arguments at {path}: {reason}")


class IsolationUnavailableError(SandboxError):
    """No isolation mechanism works here, and the operator did not set isolation to none."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"execution refused: no isolation available ({reason})")


class ExecutionBusyError(SandboxError):
    """Too many calls at once: the caller's own (``scope="caller"``) or the node's
    (``scope="node"``, its queue full or the wait over). Nothing ran and nothing was recorded;
    retry after ``retry_after_s`` seconds."""

    status = "busy"

    def __init__(self, scope: str, limit: int, retry_after_s: int = 1) -> None:
        self.scope = scope
        self.limit = limit
        self.retry_after_s = retry_after_s
        who = "this caller" if scope == "caller" else "this node"
        super().__init__(f"too many function calls at once for {who} (limit {limit})")


class SandboxClosedError(SandboxError):
    """The sandbox was closed; nothing more runs."""


class ExecutionError(SandboxError):
    """A call ran in a worker and did not succeed. ``function``/``version``/``execution_id``
    are filled in by ``FunctionStore`` (``None`` for a bare ``Sandbox.run``)."""

    function: str | None = None
    version: int | None = None
    execution_id: str | None = None
    status = "failed"


class ExecutionTimeoutError(ExecutionError):
    """The wall-clock (``kind="wall"``) or CPU (``kind="cpu"``) limit ended the call."""

    status = "timeout"

    def __init__(self, limit_s: float, kind: str = "wall") -> None:
        self.limit_s = limit_s
        self.kind = kind
        super().__init__(f"{kind} time limit of {limit_s:g}s exceeded")


class MemoryLimitError(ExecutionError):
    """The function hit its address-space limit."""

    status = "memory"

    def __init__(self, limit_mb: int) -> None:
        self.limit_mb = limit_mb
        super().__init__(f"memory limit of {limit_mb} MB exceeded")


class OutputLimitError(ExecutionError):
    """Captured output or the result frame went over ``limit`` (characters or bytes)."""

    status = "output_limit"

    def __init__(self, limit: int, what: str = "output") -> None:
        self.limit = limit
        self.what = what
        super().__init__(f"{what} over its cap of {limit}")


class SandboxViolationError(ExecutionError):
    """A guard inside the worker or the seccomp filter stopped the function."""

    status = "violation"

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"sandbox violation: {reason}")


class FunctionRaisedError(ExecutionError):
    """The function raised. ``traceback`` holds the user's frames only."""

    status = "error"

    def __init__(self, exc_type: str, message: str, traceback: str = "") -> None:
        self.exc_type = exc_type
        self.message = message
        self.traceback = traceback
        super().__init__(f"{exc_type}: {message}")


class InvalidResultError(ExecutionError):
    """The result is not JSON or does not fit the output schema."""

    status = "invalid_result"

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"invalid result: {reason}")


class WorkerCrashedError(ExecutionError):
    """The worker exited without a result frame (``returncode`` < 0 is a signal)."""

    status = "crashed"

    def __init__(self, returncode: int | None, detail: str = "") -> None:
        self.returncode = returncode
        self.detail = detail
        super().__init__(f"worker exited ({returncode}) without a result: {detail}".rstrip(": "))
