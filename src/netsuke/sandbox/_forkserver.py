"""The fork server: one isolated, unprivileged process that forks a fresh worker per call.

Starting a Python interpreter inside new namespaces costs tens of milliseconds of CPU; forking
one that is already started and isolated costs about one. The server is started once under the
sandbox's isolation (bubblewrap or unshare namespaces, cleared environment, dropped to nobody)
and never runs user code. For each worker the host sends it a job pipe and a result pipe over
a ``SOCK_SEQPACKET`` socket; the server forks a child that takes a user and mount namespace of
its own with a private ``/tmp``, drops every capability and becomes non-dumpable (see
``_entry.py``), and answers with a pidfd of the child. The host kills a worker through that
pidfd (it works across PID namespaces) and learns its exit status from the server.

Each call still gets its own OS process, used once and killed; the namespaces for network,
IPC, PIDs and the read-only filesystem view are shared with the other workers of the same
server (none of which can signal, trace or read another: seccomp, non-dumpable, separate user
namespaces). If the server dies, its children die with it and the next spawn starts a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import socket

from ._channel import ResultChannel, WorkerStartError
from ._isolation import Isolation
from ._observe import METRICS, log
from ._pool import Worker

__all__ = ["ForkServer", "ForkedWorker"]

_STDERR_CAP = 16384


class ForkedWorker(Worker):
    """A worker forked by the fork server; killed through its pidfd."""

    def __init__(self, server: ForkServer, ident: int) -> None:
        self.server = server
        self.ident = ident
        self.kind = server.isolation.kind
        self.channel = ResultChannel(self.kind, server.max_result_bytes)
        self.pidfd = -1
        self.job_fd = -1
        self.exit: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def submit(self, job: bytes) -> None:
        fd, self.job_fd = self.job_fd, -1
        loop = asyncio.get_running_loop()
        view = memoryview(job)
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            pass
        except OSError:
            os.close(fd)
            return
        if not view:
            os.close(fd)
            return

        def more() -> None:
            nonlocal view
            try:
                view = view[os.write(fd, view) :]
            except BlockingIOError:
                return
            except OSError:
                view = memoryview(b"")
            if not view:
                loop.remove_writer(fd)
                os.close(fd)

        loop.add_writer(fd, more)

    def kill_now(self) -> None:
        if self.pidfd >= 0 and not self.exit.done():
            with contextlib.suppress(ProcessLookupError, OSError):
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)

    async def kill(self, grace: float = 0.0) -> int | None:
        if grace and not self.exit.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.exit), grace)
        self.kill_now()
        try:
            status: int | None = await asyncio.wait_for(asyncio.shield(self.exit), 5.0)
        except TimeoutError:
            status = None
        self.close()
        return status

    def close(self) -> None:
        self.channel.close("killed")
        for name in ("pidfd", "job_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                setattr(self, name, -1)
                with contextlib.suppress(OSError):
                    os.close(fd)

    @property
    def returncode(self) -> int | None:
        return self.exit.result() if self.exit.done() else None

    def stderr_tail(self) -> str:
        """The server's stderr (which forked workers share) explains a failed start; once a
        worker is ready it may hold other workers' output, so it is not used."""
        return "" if self.channel.is_ready else self.server.stderr_tail()


class ForkServer:
    """One fork server for one isolation; ``spawn()`` returns a new (not yet ready) worker."""

    def __init__(self, isolation: Isolation, *, max_result_bytes: int, startup_timeout_s: float):
        self.isolation = isolation
        self.max_result_bytes = max_result_bytes
        self.startup_timeout_s = startup_timeout_s
        self._proc: asyncio.subprocess.Process | None = None
        self._sock: socket.socket | None = None
        self._ready: asyncio.Future[None] | None = None
        self._spawned: dict[int, asyncio.Future[tuple[int, int]]] = {}
        self._workers: dict[int, ForkedWorker] = {}
        self._ids = itertools.count(1)
        self._lock = asyncio.Lock()
        self._stderr = bytearray()
        self._stderr_task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def alive(self) -> bool:
        return self._sock is not None and self._proc is not None and self._proc.returncode is None

    async def start(self) -> None:
        """Start the server and wait for it to report ready (``WorkerStartError`` if not)."""
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self.isolation.argv(control_fd=theirs.fileno()),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=(theirs.fileno(),),
                env={},
                cwd="/",
                start_new_session=True,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        self._sock = ours
        self._ready = loop.create_future()
        self._stderr = bytearray()
        self._stderr_task = asyncio.create_task(self._drain_stderr(self._proc))
        loop.add_reader(ours.fileno(), self._on_message)
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), self.startup_timeout_s)
        except (TimeoutError, WorkerStartError) as exc:
            await self._stop()
            detail = self.stderr_tail() or str(exc) or "not ready in time"
            raise WorkerStartError(self.isolation.kind, f"fork server: {detail}") from None
        log.info("sandbox.forkserver.started", isolation=self.isolation.kind, pid=self._proc.pid)

    async def _drain_stderr(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        while chunk := await proc.stderr.read(65536):
            if len(self._stderr) < _STDERR_CAP:
                self._stderr += chunk[: _STDERR_CAP - len(self._stderr)]

    def stderr_tail(self) -> str:
        return self._stderr.decode(errors="replace")[-2000:]

    def _on_message(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(self._sock, 256, 2)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data, fds = b"", []
            if not data:
                self._lost()
                return
            self._dispatch(data.split(), fds)

    def _dispatch(self, words: list[bytes], fds: list[int]) -> None:
        if words[0] == b"ready" and self._ready is not None and not self._ready.done():
            self._ready.set_result(None)
        elif words[0] == b"pid" and len(fds) == 1:
            waiter = self._spawned.pop(int(words[1]), None)
            if waiter is None or waiter.done():
                os.close(fds[0])
            else:
                waiter.set_result((int(words[2]), fds[0]))
        elif words[0] == b"exit":
            worker = self._workers.pop(int(words[1]), None)
            if worker is not None and not worker.exit.done():
                worker.exit.set_result(int(words[2]))
        else:
            for fd in fds:
                os.close(fd)

    def _lost(self) -> None:
        """The server is gone: fail what waits on it; its children died with it."""
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        failure = WorkerStartError(self.isolation.kind, f"fork server exited: {self.stderr_tail()}")
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(failure)
            self._ready.exception()
        for waiter in self._spawned.values():
            if not waiter.done():
                waiter.set_exception(failure)
                waiter.exception()
        self._spawned.clear()
        for worker in self._workers.values():
            if not worker.exit.done():
                worker.exit.set_result(-signal.SIGKILL)
        self._workers.clear()
        if not self._closed:
            log.warning("sandbox.forkserver.lost", isolation=self.isolation.kind)

    async def spawn(self) -> ForkedWorker:
        """Fork a new worker (restarting the server first if it died)."""
        if self._closed:
            raise WorkerStartError(self.isolation.kind, "fork server closed")
        if not self.alive:
            async with self._lock:
                if not self.alive:
                    await self._stop()
                    await self.start()
        assert self._sock is not None
        loop = asyncio.get_running_loop()
        ident = next(self._ids)
        worker = ForkedWorker(self, ident)
        waiter: asyncio.Future[tuple[int, int]] = loop.create_future()
        self._spawned[ident] = waiter
        self._workers[ident] = worker
        job_r, job_w = os.pipe()
        result_w = worker.channel.open()
        try:
            socket.send_fds(self._sock, [b"spawn %d" % ident], [job_r, result_w])
        except OSError as exc:
            worker.channel.close("could not spawn")
            os.close(job_w)
            self._spawned.pop(ident, None)
            self._workers.pop(ident, None)
            raise WorkerStartError(self.isolation.kind, f"fork server: {exc}") from None
        finally:
            os.close(job_r)
            os.close(result_w)
        os.set_blocking(job_w, False)
        worker.job_fd = job_w
        try:
            pid, pidfd = await asyncio.wait_for(waiter, self.startup_timeout_s)
        except BaseException:
            worker.close()
            self._workers.pop(ident, None)
            self._spawned.pop(ident, None)
            raise
        worker.pidfd = pidfd
        worker.pid = _host_pid(pidfd) or pid
        METRICS.workers_started += 1
        return worker

    async def _stop(self) -> None:
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        if self._proc is not None:
            if self._proc.returncode is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self._proc.pid, signal.SIGKILL)
            await self._proc.wait()
            if self._stderr_task is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._stderr_task, 1.0)
        self._lost()

    async def aclose(self) -> None:
        self._closed = True
        await self._stop()


def _host_pid(pidfd: int) -> int | None:
    """The worker's pid as the host sees it (from the pidfd's fdinfo)."""
    try:
        with open(f"/proc/self/fdinfo/{pidfd}") as info:
            for line in info:
                if line.startswith("Pid:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None
