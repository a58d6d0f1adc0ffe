"""Worker processes: one per call, pre-started in a small pool, discarded after use.

A ``Worker`` is one isolated OS process started with the worker program; it reports ready
(``R`` on its result pipe) once its start-up is done, takes exactly one job on stdin, writes one
result frame to the result pipe and exits. Whatever happens, the host then kills the worker's
whole process group (its session) and reaps it: a worker is never reused.

``WorkerPool`` keeps ``size`` workers started ahead of demand. ``acquire()`` hands out the
oldest started worker, or starts one on the spot when the pool is empty (a cold call);
``fill()`` (called by the sandbox once a call's result is in, so the start-up of the
replacement does not delay it) starts replacements in the background. ``aclose()`` kills
every idle worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections import deque

from ._isolation import Isolation
from ._observe import METRICS, log

__all__ = ["Worker", "WorkerPool", "WorkerStartError"]

_STDERR_CAP = 16384


class WorkerStartError(Exception):
    def __init__(self, kind: str, detail: str) -> None:
        self.kind = kind
        self.detail = detail
        super().__init__(f"{kind} worker did not start: {detail}")


class Worker:
    """One worker process. Use ``start()``, ``ready()``, ``submit()``, ``result()``, ``kill()``."""

    def __init__(self, isolation: Isolation, max_result_bytes: int) -> None:
        self.isolation = isolation
        self.max_result_bytes = max_result_bytes
        self.proc: asyncio.subprocess.Process | None = None
        self.pid: int | None = None
        self.started_at = time.monotonic()
        self.used = False
        self._buf = bytearray()
        self._overflow = False
        self._ready: asyncio.Future[None] | None = None
        self._done: asyncio.Future[None] | None = None
        self._stderr = bytearray()
        self._stderr_task: asyncio.Task[None] | None = None
        self._rfd = -1

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        rfd, wfd = os.pipe()
        os.set_blocking(rfd, False)
        self._rfd = rfd
        self._ready = loop.create_future()
        self._done = loop.create_future()
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.isolation.argv(wfd),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=(wfd,),
                env={},
                cwd="/",
                start_new_session=True,
            )
        except BaseException:
            os.close(rfd)
            raise
        finally:
            os.close(wfd)
        self.pid = self.proc.pid
        loop.add_reader(rfd, self._on_readable)
        self._stderr_task = asyncio.create_task(self._drain_stderr())
        METRICS.workers_started += 1

    def _on_readable(self) -> None:
        assert self._ready is not None
        assert self._done is not None
        try:
            chunk = os.read(self._rfd, 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not self._ready.done():
            if chunk[:1] != b"R":
                self._fail_ready("no ready mark")
                self._close_reader()
                return
            self._ready.set_result(None)
            chunk = chunk[1:]
            if not chunk:
                return
        if chunk:
            self._buf += chunk
            if len(self._buf) > self.max_result_bytes:
                self._overflow = True
                self._close_reader()
            elif self._complete():
                self._close_reader()
            return
        self._close_reader()

    def _complete(self) -> bool:
        """Whether the buffer holds a whole frame (nonce, length, payload of that length)."""
        parts = self._buf.split(b"\n", 2)
        if len(parts) < 3 or not parts[1].isdigit():
            return False
        return len(parts[2]) >= int(parts[1])

    def _close_reader(self) -> None:
        if self._rfd >= 0:
            asyncio.get_running_loop().remove_reader(self._rfd)
            os.close(self._rfd)
            self._rfd = -1
        assert self._ready is not None
        assert self._done is not None
        if not self._ready.done():
            self._fail_ready(self.stderr_tail())
        if not self._done.done():
            self._done.set_result(None)

    def _fail_ready(self, detail: str) -> None:
        assert self._ready is not None
        self._ready.set_exception(WorkerStartError(self.isolation.kind, detail))
        self._ready.exception()  # retrieved: ``ready()`` reports it if anyone asks

    async def _drain_stderr(self) -> None:
        assert self.proc is not None
        assert self.proc.stderr is not None
        while chunk := await self.proc.stderr.read(65536):
            if len(self._stderr) < _STDERR_CAP:
                self._stderr += chunk[: _STDERR_CAP - len(self._stderr)]

    def stderr_tail(self) -> str:
        return self._stderr.decode(errors="replace")[-2000:]

    async def ready(self, timeout: float) -> None:
        assert self._ready is not None
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), timeout)
        except TimeoutError:
            await self.kill()
            raise WorkerStartError(self.isolation.kind, f"not ready within {timeout}s") from None
        except WorkerStartError:
            await self.kill()
            rc = self.proc.returncode if self.proc else None
            raise WorkerStartError(
                self.isolation.kind, f"exit {rc}: {self.stderr_tail() or 'no output'}"
            ) from None

    def submit(self, job: bytes) -> None:
        """Send the job and close stdin; the worker is then used."""
        assert self.proc is not None
        assert self.proc.stdin is not None
        self.used = True
        self.proc.stdin.write(job)
        self.proc.stdin.close()

    async def result(self) -> tuple[bytes | None, bool]:
        """Wait for the result pipe to close: (frame bytes or None, overflowed)."""
        assert self._done is not None
        await asyncio.shield(self._done)
        return (bytes(self._buf) if self._buf else None), self._overflow

    async def kill(self, grace: float = 0.0) -> int | None:
        """Kill the worker's whole process group and reap it; returns its exit status.
        ``grace``: seconds to let it exit by itself first (to learn how it ended)."""
        if self.proc is None:
            return None
        if grace and self.proc.returncode is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.proc.wait()), grace)
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        rc = await self.proc.wait()
        if self._rfd >= 0:
            self._close_reader()
        if self._stderr_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._stderr_task, 1.0)
        return rc

    def kill_now(self) -> int | None:
        """Send SIGKILL to the worker's process group without waiting (reap with ``kill()``)."""
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        return self.returncode

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode if self.proc else None


class WorkerPool:
    """Pre-started workers for one isolation mechanism."""

    def __init__(
        self, isolation: Isolation, *, size: int, max_result_bytes: int, startup_timeout_s: float
    ) -> None:
        self.isolation = isolation
        self.size = size
        self.max_result_bytes = max_result_bytes
        self.startup_timeout_s = startup_timeout_s
        self._idle: deque[Worker] = deque()
        self._starting = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def idle(self) -> int:
        """Workers started and ready (past their start-up), waiting for a call."""
        return len(self._idle)

    @property
    def starting(self) -> int:
        return self._starting

    async def _new(self) -> Worker:
        worker = Worker(self.isolation, self.max_result_bytes)
        await worker.start()
        return worker

    def _refill(self) -> None:
        while not self._closed and len(self._idle) + self._starting < self.size:
            self._starting += 1
            task = asyncio.create_task(self._start_one())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _start_one(self) -> None:
        worker = Worker(self.isolation, self.max_result_bytes)
        try:
            await worker.start()
            await worker.ready(self.startup_timeout_s)
        except Exception as exc:
            log.warning(
                "sandbox.worker.start_failed", isolation=self.isolation.kind, error=str(exc)
            )
            return
        finally:
            self._starting -= 1
        if self._closed:
            await worker.kill()
        else:
            self._idle.append(worker)

    async def acquire(self) -> Worker:
        """A started worker that has never run a call (warm if the pool had one)."""
        worker: Worker | None = None
        while self._idle:
            candidate = self._idle.popleft()
            if candidate.returncode is None:
                worker = candidate
                break
            await candidate.kill()
        if worker is None:
            METRICS.cold_starts += 1
            worker = await self._new()
        await worker.ready(self.startup_timeout_s)
        return worker

    def fill(self) -> None:
        self._refill()

    async def aclose(self) -> None:
        self._closed = True
        for task in list(self._tasks):
            with contextlib.suppress(Exception):
                await task
        while self._idle:
            await self._idle.popleft().kill()
