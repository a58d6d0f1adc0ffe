"""``Sandbox``: run one function call in one isolated, single-use worker process.

Semantics
---------
* ``start()`` picks the isolation: the configured mechanism (``auto``: bubblewrap, then
  unshare) is proved by starting a real worker; the first that comes up ready wins and the
  pool is filled. If none works, the sandbox stays open but every ``run`` raises
  ``IsolationUnavailableError`` with the reasons (deny by default). ``isolation="none"`` is
  honoured only when the operator sets it.
* ``run()`` takes a pre-started worker (or starts one: a cold call), sends the job with a fresh
  random nonce, and waits for the result frame at most ``timeout_s`` (wall clock). Then the
  worker's whole process group is killed and reaped, success or not: a worker is never reused.
* Outcomes map to the typed errors of ``_errors``: the frame's status, else the worker's exit
  (``SIGSYS``: seccomp violation; ``SIGXCPU``/``SIGKILL`` before the wall clock: CPU limit), else
  ``WorkerCrashedError``. A frame whose nonce does not match is a ``SandboxViolationError``.
* ``aclose()`` kills the idle workers; calls in flight finish or are killed by their own limit.
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import signal
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from ._config import SandboxConfig
from ._errors import (
    ExecutionError,
    ExecutionTimeoutError,
    FunctionRaisedError,
    InvalidResultError,
    IsolationUnavailableError,
    MemoryLimitError,
    OutputLimitError,
    SandboxClosedError,
    SandboxViolationError,
    WorkerCrashedError,
)
from ._isolation import Isolation, candidates
from ._observe import log
from ._pool import Worker, WorkerPool, WorkerStartError

__all__ = ["RunResult", "Sandbox"]


@dataclass(frozen=True)
class RunResult:
    """A successful call: the JSON ``value``, captured ``stdout``, host-side duration, the
    isolation used, the worker's pid (host view) and whether the seccomp filter was on."""

    value: Any
    stdout: str
    duration_ms: float
    isolation: str
    worker_pid: int | None
    seccomp: bool


class Sandbox:
    """Isolated single-use workers for function calls. ``async with Sandbox() as sb: ...``"""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig.from_env()
        self._pool: WorkerPool | None = None
        self._refusal: str | None = None
        self._started = False
        self._closed = False
        self._lock = asyncio.Lock()
        self._reaping: set[asyncio.Task[int | None]] = set()

    @property
    def isolation(self) -> str | None:
        """The mechanism in use (``bubblewrap``, ``unshare``, ``none``), ``None`` if refused
        or not started."""
        return self._pool.isolation.kind if self._pool else None

    @property
    def refusal(self) -> str | None:
        """Why execution is refused, when no isolation works."""
        return self._refusal

    async def start(self) -> Sandbox:
        async with self._lock:
            if self._started:
                return self
            if self._closed:
                raise SandboxClosedError("the sandbox is closed")
            found, reasons = candidates(self.config)
            for isolation in found:
                try:
                    await self._probe(isolation)
                except (WorkerStartError, OSError) as exc:
                    reasons.append(f"{isolation.kind}: {exc}")
                    continue
                self._pool = WorkerPool(
                    isolation,
                    size=self.config.pool_size,
                    max_result_bytes=self.config.max_result_bytes,
                    startup_timeout_s=self.config.startup_timeout_s,
                )
                self._pool.fill()
                break
            if self._pool is None:
                self._refusal = "; ".join(reasons) or "no mechanism configured"
                log.warning("sandbox.isolation.unavailable", reason=self._refusal)
            else:
                log.info("sandbox.started", isolation=self._pool.isolation.kind)
            self._started = True
            return self

    def _reap(self, worker: Worker) -> None:
        task = asyncio.create_task(worker.kill())
        self._reaping.add(task)
        task.add_done_callback(self._reaping.discard)

    async def _probe(self, isolation: Isolation) -> None:
        worker = Worker(isolation, self.config.max_result_bytes)
        await worker.start()
        try:
            await worker.ready(self.config.startup_timeout_s)
        finally:
            await worker.kill()

    async def aclose(self) -> None:
        self._closed = True
        if self._pool is not None:
            await self._pool.aclose()
        for task in list(self._reaping):
            await task

    async def __aenter__(self) -> Sandbox:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def run(
        self,
        code: str,
        name: str,
        args: Mapping[str, Any],
        *,
        is_async: bool,
        timeout_s: float = 30.0,
        memory_mb: int = 512,
        allowed_imports: Iterable[str] = (),
    ) -> RunResult:
        """Run ``name(**args)`` from ``code`` in a fresh worker. Raises an ``ExecutionError``
        subclass when the call does not succeed, ``IsolationUnavailableError`` when refused."""
        if self._closed:
            raise SandboxClosedError("the sandbox is closed")
        if not self._started:
            await self.start()
        if self._pool is None:
            raise IsolationUnavailableError(self._refusal or "unknown")
        started = time.perf_counter()
        nonce = secrets.token_hex(16)
        job = json.dumps(
            {
                "nonce": nonce,
                "code": code,
                "name": name,
                "args": dict(args),
                "is_async": is_async,
                "allowed_imports": list(allowed_imports),
                "memory_mb": memory_mb,
                "cpu_s": max(1, math.ceil(timeout_s)),
                "max_output": self.config.max_output_chars,
            }
        ).encode()
        try:
            worker = await self._pool.acquire()
        except WorkerStartError as exc:
            raise WorkerCrashedError(None, str(exc)) from None
        timed_out = False
        frame: bytes | None = None
        try:
            worker.submit(job)
            remaining = timeout_s - (time.perf_counter() - started)
            frame, overflow = await asyncio.wait_for(worker.result(), max(remaining, 0.001))
        except TimeoutError:
            timed_out = True
            frame, overflow = None, False
        except (BrokenPipeError, ConnectionResetError):
            frame, overflow = await worker.result()
        finally:
            if frame is not None:
                returncode = worker.kill_now()
                self._reap(worker)
            else:
                returncode = await worker.kill(grace=0.0 if timed_out else 1.0)
            self._pool.fill()
        duration_ms = (time.perf_counter() - started) * 1000.0
        if timed_out:
            raise ExecutionTimeoutError(timeout_s, "wall")
        if overflow:
            raise OutputLimitError(self.config.max_result_bytes, "result frame")
        body = _decode(frame, nonce, returncode, worker, memory_mb, timeout_s)
        return RunResult(
            value=body.get("value"),
            stdout=str(body.get("stdout", "")),
            duration_ms=duration_ms,
            isolation=worker.isolation.kind,
            worker_pid=worker.pid,
            seccomp=bool(body.get("seccomp")),
        )


def _signal_of(returncode: int | None) -> int | None:
    if returncode is None:
        return None
    if returncode < 0:
        return -returncode
    if returncode > 128:
        return returncode - 128
    return None


def _decode(
    frame: bytes | None,
    nonce: str,
    returncode: int | None,
    worker: Worker,
    memory_mb: int,
    timeout_s: float,
) -> dict[str, Any]:
    if frame is None:
        sig = _signal_of(returncode)
        if sig == signal.SIGSYS:
            raise SandboxViolationError("a forbidden system call (seccomp)")
        if sig in (signal.SIGXCPU, signal.SIGKILL):
            raise ExecutionTimeoutError(timeout_s, "cpu")
        tail = worker.stderr_tail()
        if returncode == 3 or "MemoryError" in tail:
            raise MemoryLimitError(memory_mb)
        raise WorkerCrashedError(returncode, tail[-500:])
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
    return _outcome(body, memory_mb)


def _outcome(body: dict[str, Any], memory_mb: int) -> dict[str, Any]:
    status = body.get("status")
    error: ExecutionError
    if status == "ok":
        return body
    if status == "error" and body.get("type") == "InvalidResult":
        error = InvalidResultError(f"not JSON-serialisable: {body.get('message', '')}")
    elif status == "error":
        error = FunctionRaisedError(
            str(body.get("type")), str(body.get("message", "")), str(body.get("traceback", ""))
        )
    elif status == "memory":
        error = MemoryLimitError(memory_mb)
    elif status == "violation":
        error = SandboxViolationError(str(body.get("reason")))
    elif status == "output":
        error = OutputLimitError(int(body.get("limit", 0)), "captured output")
    else:
        error = WorkerCrashedError(None, str(body.get("reason", status)))
    raise error
