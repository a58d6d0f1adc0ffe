"""Turn what came back from a worker into a value or a typed error.

The frame's status decides (``ok``, ``error``, ``memory``, ``violation``, ``output``). With no
frame, the worker's end decides: ``SIGSYS`` is the seccomp filter (a violation), ``SIGXCPU``
or ``SIGKILL`` before the wall clock is the CPU limit, exit 3 or a ``MemoryError`` on stderr is
the memory limit, anything else ``WorkerCrashedError``. A frame whose nonce or length is wrong
was not written by the worker program: ``SandboxViolationError``. The function's exception
message and traceback, a violation's reason, a bad result's message and a crashed worker's
stderr are made ``printable`` (control characters escaped).

A value that comes back must be one the host can store and serve: nested at most
``max_depth`` (``SandboxConfig.max_result_depth``, 100) deep and free of lone surrogates
(``"\ud800"`` encodes in JSON but not in UTF-8); else ``InvalidResultError`` naming where.
"""

from __future__ import annotations

import json
import re
import secrets
import signal
from typing import Any

from ._errors import (
    ExecutionError,
    ExecutionTimeoutError,
    FunctionRaisedError,
    InvalidResultError,
    MemoryLimitError,
    OutputLimitError,
    SandboxViolationError,
    WorkerCrashedError,
)
from ._text import printable

__all__ = ["check_value", "decode_frame"]

_SURROGATE = re.compile("[\ud800-\udfff]")


def _signal_of(returncode: int | None) -> int | None:
    if returncode is None:
        return None
    if returncode < 0:
        return -returncode
    if returncode > 128:
        return returncode - 128
    return None


def decode_frame(
    frame: bytes | None,
    nonce: str,
    returncode: int | None,
    stderr_tail: str,
    memory_mb: int,
    timeout_s: float,
    *,
    max_depth: int = 100,
) -> dict[str, Any]:
    if frame is None:
        sig = _signal_of(returncode)
        if sig == signal.SIGSYS:
            raise SandboxViolationError("a forbidden system call (seccomp)")
        if sig in (signal.SIGXCPU, signal.SIGKILL):
            raise ExecutionTimeoutError(timeout_s, "cpu")
        tail = stderr_tail
        if returncode == 3 or "MemoryError" in tail:
            raise MemoryLimitError(memory_mb)
        raise WorkerCrashedError(returncode, printable(tail[-500:]))
    parts = frame.split(b"\n", 2)
    if len(parts) < 3 or not secrets.compare_digest(parts[0], nonce.encode()):
        raise SandboxViolationError("a result frame with a wrong nonce (forged)")
    if not parts[1].isdigit() or len(parts[2]) != int(parts[1]):
        raise SandboxViolationError("a result frame of the wrong length")
    payload = parts[2]
    try:
        body = json.loads(payload)
    except ValueError:
        raise SandboxViolationError("a malformed result frame") from None
    if not isinstance(body, dict):
        raise SandboxViolationError("a malformed result frame")
    body = _outcome(body, memory_mb)
    check_value(body.get("value"), max_depth)
    return body


def check_value(value: Any, max_depth: int) -> None:
    """``InvalidResultError`` unless ``value`` (decoded JSON) nests at most ``max_depth`` deep
    and holds no lone surrogate (walked iteratively: no depth can crash the walk)."""
    todo: list[tuple[Any, int, str]] = [(value, 0, "$")]
    while todo:
        item, depth, path = todo.pop()
        if isinstance(item, str):
            if not item.isascii() and _SURROGATE.search(item):
                raise InvalidResultError(
                    printable(f"{path}: a lone surrogate is not valid Unicode")
                )
        elif isinstance(item, dict | list):
            if depth >= max_depth:
                raise InvalidResultError(printable(f"{path}: nested deeper than {max_depth}"))
            if isinstance(item, dict):
                for key, sub in item.items():
                    if not key.isascii() and _SURROGATE.search(key):
                        raise InvalidResultError(printable(f"{path}: a key holds a lone surrogate"))
                    todo.append((sub, depth + 1, f"{path}.{key}"[:200]))
            else:
                todo.extend((sub, depth + 1, f"{path}[{i}]"[:200]) for i, sub in enumerate(item))


def _outcome(body: dict[str, Any], memory_mb: int) -> dict[str, Any]:
    status = body.get("status")
    error: ExecutionError
    if status == "ok":
        return body
    if status == "error" and body.get("type") == "InvalidResult":
        error = InvalidResultError(f"not JSON-serialisable: {printable(str(body.get('message')))}")
    elif status == "error":
        error = FunctionRaisedError(
            printable(str(body.get("type"))),
            printable(str(body.get("message", ""))),
            printable(str(body.get("traceback", ""))),
        )
    elif status == "memory":
        error = MemoryLimitError(memory_mb)
    elif status == "violation":
        error = SandboxViolationError(printable(str(body.get("reason"))))
    elif status == "output":
        what = "result" if body.get("what") == "result" else "captured output"
        error = OutputLimitError(int(body.get("limit", 0)), what)
    else:
        error = WorkerCrashedError(None, printable(str(body.get("reason", status))))
    raise error
