"""Netsuke's function store and sandbox: versioned user functions run in isolated workers.

::

    async with Store.open() as store, Sandbox() as sandbox:
        functions = FunctionStore(store, sandbox)
        await functions.store_function(name="add", code=CODE, input_schema=SCHEMA)
        value = await functions.execute_function("add", {"a": 1, "b": 2})
        tool = await functions.as_tool("add")      # a pydantic_ai.Tool

Each call runs in its own single-use OS process inside Linux namespaces (bubblewrap, else
unshare), with rlimits, a seccomp filter, a cleared environment, an unprivileged user, a
wall-clock kill of the whole process group and restricted builtins; with no isolation available
execution is refused unless the operator sets ``isolation="none"``. See ``docs/sandbox.md``.
Errors form one tree under ``SandboxError`` (``_errors``).
"""

from ._config import DEFAULT_ALLOWED_IMPORTS, IsolationMode, SandboxConfig
from ._errors import (
    ExecutionBusyError,
    ExecutionError,
    ExecutionTimeoutError,
    FunctionRaisedError,
    FunctionValidationError,
    InvalidArgumentsError,
    InvalidResultError,
    IsolationUnavailableError,
    MemoryLimitError,
    OutputLimitError,
    SandboxClosedError,
    SandboxError,
    SandboxViolationError,
    WorkerCrashedError,
)
from ._functions import ExecutionResult, FunctionStore
from ._gate import ExecutionGate
from ._policy import CheckedFunction, check_function, derived_metadata
from ._sandbox import RunResult, Sandbox
from ._tool import function_tool

__all__ = [
    "DEFAULT_ALLOWED_IMPORTS",
    "CheckedFunction",
    "ExecutionBusyError",
    "ExecutionError",
    "ExecutionGate",
    "ExecutionResult",
    "ExecutionTimeoutError",
    "FunctionRaisedError",
    "FunctionStore",
    "FunctionValidationError",
    "InvalidArgumentsError",
    "InvalidResultError",
    "IsolationMode",
    "IsolationUnavailableError",
    "MemoryLimitError",
    "OutputLimitError",
    "RunResult",
    "Sandbox",
    "SandboxClosedError",
    "SandboxConfig",
    "SandboxError",
    "SandboxViolationError",
    "WorkerCrashedError",
    "check_function",
    "derived_metadata",
    "function_tool",
]
