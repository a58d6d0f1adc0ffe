"""``Sandbox``: run one function call in one isolated, single-use worker process.

Semantics
---------
* ``start()`` picks the isolation: the configured mechanism (``auto``: bubblewrap, then
  unshare) is proved by starting a real worker; the first that comes up ready wins and the
  pool is filled. Workers are forked by a fork server running inside that isolation
  (``fork_server=True``, the default, when it works here), else started from scratch. If no
  isolation works, the sandbox stays open but every ``run`` raises
  ``IsolationUnavailableError`` with the reasons (deny by default). ``isolation="none"`` is
  honoured only when the operator sets it.
* ``run()`` takes a pre-started worker (or starts one: a cold call), sends the job with a fresh
  random nonce, and waits for the result frame at most ``timeout_s`` (wall clock). Then the
  worker is killed (its whole process group, or through its pidfd) and reaped, success or
  not: a worker is never reused.
* ``run()`` first applies the store-time validator (``check_function``: static policy, imports
  within ``allowed_imports`` and the operator's allow-list, code size, no bidirectional
  controls) and raises ``FunctionValidationError`` before any worker is used;
  ``validate=False`` skips it, explicitly (tests of the deeper layers use that). A passing
  check is remembered for the same code, name and imports.
* Outcomes map to the typed errors of ``_errors`` (see ``_outcome``). Captured output comes
  back ``printable`` (control characters escaped, ``_text``).
* ``aclose()`` kills the idle workers; calls in flight finish or are killed by their own limit.
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from ._channel import WorkerStartError
from ._config import SandboxConfig
from ._errors import (
    ExecutionTimeoutError,
    IsolationUnavailableError,
    OutputLimitError,
    SandboxClosedError,
    WorkerCrashedError,
)
from ._forkserver import ForkServer
from ._isolation import Isolation, candidates
from ._observe import log
from ._outcome import decode_frame
from ._policy import check_function
from ._pool import ExecWorker, Worker, WorkerPool
from ._text import printable

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
        self._server: ForkServer | None = None
        self._validated: set[tuple[str, str, bool, tuple[str, ...]]] = set()
        #: ``"fork"`` (workers forked by an isolated fork server) or ``"exec"`` (each worker
        #: started from scratch); set by ``start()``.
        self.spawn: str | None = None

    @property
    def isolation(self) -> str | None:
        """The mechanism in use (``bubblewrap``, ``unshare``, ``none``), ``None`` if refused
        or not started."""
        return self._pool.kind if self._pool else None

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
                    self._pool = await self._pool_for(isolation, reasons)
                except (WorkerStartError, OSError) as exc:
                    reasons.append(f"{isolation.kind}: {exc}")
                    continue
                self._pool.fill()
                break
            if self._pool is None:
                self._refusal = "; ".join(reasons) or "no mechanism configured"
                log.warning("sandbox.isolation.unavailable", reason=self._refusal)
            else:
                log.info("sandbox.started", isolation=self._pool.kind, spawn=self.spawn)
            self._started = True
            return self

    def _reap(self, worker: Worker) -> None:
        task = asyncio.create_task(worker.kill())
        self._reaping.add(task)
        task.add_done_callback(self._reaping.discard)

    async def _pool_for(self, isolation: Isolation, reasons: list[str]) -> WorkerPool:
        """A pool for ``isolation``, proved by one real worker: forked by a fork server when
        configured and working, else started from scratch per call."""
        config = self.config
        if config.fork_server:
            server = ForkServer(
                isolation,
                max_result_bytes=config.max_result_bytes,
                startup_timeout_s=config.startup_timeout_s,
            )
            try:
                await server.start()
                probe = await server.spawn()
                await probe.ready(config.startup_timeout_s)
                await probe.kill()
            except (WorkerStartError, OSError) as exc:
                await server.aclose()
                reasons.append(f"{isolation.kind} fork server: {exc}")
                log.info("sandbox.forkserver.unavailable", isolation=isolation.kind, error=str(exc))
            else:
                self._server = server
                self.spawn = "fork"
                return WorkerPool(
                    server.spawn,
                    kind=isolation.kind,
                    size=config.pool_size,
                    startup_timeout_s=config.startup_timeout_s,
                )

        async def exec_worker() -> Worker:
            worker = ExecWorker(isolation, config.max_result_bytes)
            await worker.start()
            return worker

        probe_worker = await exec_worker()
        await probe_worker.ready(config.startup_timeout_s)
        await probe_worker.kill()
        self.spawn = "exec"
        return WorkerPool(
            exec_worker,
            kind=isolation.kind,
            size=config.pool_size,
            startup_timeout_s=config.startup_timeout_s,
        )

    async def aclose(self) -> None:
        self._closed = True
        if self._pool is not None:
            await self._pool.aclose()
        for task in list(self._reaping):
            await task
        if self._server is not None:
            await self._server.aclose()

    async def __aenter__(self) -> Sandbox:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _validate(self, code: str, name: str, is_async: bool, imports: tuple[str, ...]) -> None:
        key = (code, name, is_async, imports)
        if key in self._validated:
            return
        check_function(
            name,
            code,
            is_async=is_async,
            allowed_imports=imports,
            operator_imports=self.config.allowed_imports,
            max_code_bytes=self.config.max_code_bytes,
        )
        if len(self._validated) >= 1024:
            self._validated.clear()
        self._validated.add(key)

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
        validate: bool = True,
    ) -> RunResult:
        """Run ``name(**args)`` from ``code`` in a fresh worker. Raises
        ``FunctionValidationError`` when ``validate`` (the default) and the store-time validator
        refuses the code, an ``ExecutionError`` subclass when the call does not succeed,
        ``IsolationUnavailableError`` when refused."""
        if self._closed:
            raise SandboxClosedError("the sandbox is closed")
        imports = tuple(allowed_imports)
        if validate:
            self._validate(code, name, is_async, imports)
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
                "allowed_imports": list(imports),
                "memory_mb": memory_mb,
                "cpu_s": max(1, math.ceil(timeout_s)),
                "max_output": self.config.max_output_chars,
                "max_result": self.config.max_result_bytes,
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
                worker.kill_now()
                returncode = worker.returncode
                self._reap(worker)
            else:
                returncode = await worker.kill(grace=0.0 if timed_out else 1.0)
            self._pool.fill()
        duration_ms = (time.perf_counter() - started) * 1000.0
        if timed_out:
            raise ExecutionTimeoutError(timeout_s, "wall")
        if overflow:
            raise OutputLimitError(self.config.max_result_bytes, "result frame")
        body = decode_frame(
            frame,
            nonce,
            returncode,
            worker.stderr_tail(),
            memory_mb,
            timeout_s,
            max_depth=self.config.max_result_depth,
        )
        return RunResult(
            value=body.get("value"),
            stdout=printable(str(body.get("stdout", ""))),
            duration_ms=duration_ms,
            isolation=worker.kind,
            worker_pid=worker.pid,
            seccomp=bool(body.get("seccomp")),
        )
