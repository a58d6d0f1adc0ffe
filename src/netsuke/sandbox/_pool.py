"""Worker processes: one per call, pre-started in a small pool, discarded after use.

A worker is one isolated OS process running the worker program. It reports ready on its
result channel once its start-up is done, takes exactly one job on stdin, writes one result
frame and exits. Whatever happens, the host then kills it and reaps it: a worker is never
reused. Two kinds share the ``Worker`` interface:

* ``ExecWorker``: a fresh process tree per call (``bwrap``/``unshare``/python started anew);
  killing it kills its whole process group (its session).
* ``ForkedWorker`` (``_forkserver``): forked by an isolated fork server; see there.

``WorkerPool`` keeps ``size`` ready workers ahead of demand. ``acquire()`` hands out the
oldest ready worker, or starts one on the spot when the pool is empty (a cold call);
``fill()`` (called by the sandbox once a call's result is in, so the start-up of the
replacement does not delay it) starts replacements in the background. ``aclose()`` kills
every idle worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable

from ._channel import ResultChannel, WorkerStartError
from ._isolation import Isolation
from ._observe import METRICS, log

__all__ = ["ExecWorker", "Worker", "WorkerPool", "WorkerStartError"]

_STDERR_CAP = 16384


class Worker(ABC):
    """One single-use worker process."""

    kind: str
    pid: int | None = None
    channel: ResultChannel

    async def ready(self, timeout: float) -> None:
        """Wait until the worker is ready; on failure kill it and raise ``WorkerStartError``."""
        try:
            await self.channel.ready(timeout)
        except WorkerStartError as exc:
            rc = await self.kill(grace=0.5)
            detail = self.stderr_tail() or exc.detail
            raise WorkerStartError(self.kind, f"exit {rc}: {detail}") from None

    @abstractmethod
    def submit(self, job: bytes) -> None:
        """Send the job (then end of input)."""

    async def result(self) -> tuple[bytes | None, bool]:
        return await self.channel.result()

    @abstractmethod
    def kill_now(self) -> None:
        """Send SIGKILL without waiting."""

    @abstractmethod
    async def kill(self, grace: float = 0.0) -> int | None:
        """Kill and reap; ``grace`` seconds to exit by itself first. Returns the exit status
        (negative: the signal that ended it)."""

    @property
    @abstractmethod
    def returncode(self) -> int | None: ...

    def stderr_tail(self) -> str:
        return ""


class ExecWorker(Worker):
    """A worker started from scratch under the isolation's command line."""

    def __init__(self, isolation: Isolation, max_result_bytes: int) -> None:
        self.isolation = isolation
        self.kind = isolation.kind
        self.channel = ResultChannel(isolation.kind, max_result_bytes)
        self.proc: asyncio.subprocess.Process | None = None
        self._stderr = bytearray()
        self._stderr_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        wfd = self.channel.open()
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.isolation.argv(result_fd=wfd),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=(wfd,),
                env={},
                cwd="/",
                start_new_session=True,
            )
        except BaseException:
            self.channel.close("could not start")
            raise
        finally:
            os.close(wfd)
        self.pid = self.proc.pid
        self._stderr_task = asyncio.create_task(self._drain_stderr())
        METRICS.workers_started += 1

    async def _drain_stderr(self) -> None:
        assert self.proc is not None
        assert self.proc.stderr is not None
        while chunk := await self.proc.stderr.read(65536):
            if len(self._stderr) < _STDERR_CAP:
                self._stderr += chunk[: _STDERR_CAP - len(self._stderr)]

    def stderr_tail(self) -> str:
        return self._stderr.decode(errors="replace")[-2000:]

    def submit(self, job: bytes) -> None:
        assert self.proc is not None
        assert self.proc.stdin is not None
        self.proc.stdin.write(job)
        self.proc.stdin.close()

    def kill_now(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    async def kill(self, grace: float = 0.0) -> int | None:
        if self.proc is None:
            return None
        if grace and self.proc.returncode is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.proc.wait()), grace)
        self.kill_now()
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        rc = await self.proc.wait()
        self.channel.close("killed")
        if self._stderr_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._stderr_task, 1.0)
        return rc

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode if self.proc else None


WorkerFactory = Callable[[], Awaitable[Worker]]


class WorkerPool:
    """Ready workers from ``factory`` (which starts one and returns it, not yet ready)."""

    def __init__(
        self, factory: WorkerFactory, *, kind: str, size: int, startup_timeout_s: float
    ) -> None:
        self.factory = factory
        self.kind = kind
        self.size = size
        self.startup_timeout_s = startup_timeout_s
        self._idle: deque[Worker] = deque()
        self._starting = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def idle(self) -> int:
        """Workers started and ready (past their start-up), waiting for a call."""
        return len(self._idle)

    def fill(self) -> None:
        """Start workers in the background until ``size`` are ready or starting."""
        while not self._closed and len(self._idle) + self._starting < self.size:
            self._starting += 1
            task = asyncio.create_task(self._start_one())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _start_one(self) -> None:
        try:
            worker = await self.factory()
            await worker.ready(self.startup_timeout_s)
        except Exception as exc:
            log.warning("sandbox.worker.start_failed", isolation=self.kind, error=str(exc))
            return
        finally:
            self._starting -= 1
        if self._closed:
            await worker.kill()
        else:
            self._idle.append(worker)

    async def acquire(self) -> Worker:
        """A ready worker that has never run a call (warm if the pool had one)."""
        while self._idle:
            worker = self._idle.popleft()
            if worker.returncode is None:
                return worker
            await worker.kill()
        METRICS.cold_starts += 1
        worker = await self.factory()
        try:
            await worker.ready(self.startup_timeout_s)
        except asyncio.CancelledError:
            await asyncio.shield(worker.kill())  # never leave a started worker behind
            raise
        return worker

    async def aclose(self) -> None:
        self._closed = True
        for task in list(self._tasks):
            with contextlib.suppress(Exception):
                await task
        while self._idle:
            await self._idle.popleft().kill()
