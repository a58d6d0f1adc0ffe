"""A real ``netsuke serve`` subprocess on a free port, shared by a module's CLI tests."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from netsuke.cli import app

EXE = str(Path(sys.executable).parent / "netsuke")


@dataclass
class Server:
    url: str
    key: str
    proc: subprocess.Popen[str]

    def run(self, *args: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run the CLI in this process (the server is a real subprocess)."""
        env = {"NETSUKE_URL": self.url, "NETSUKE_API_KEY": key or self.key}
        result = CliRunner().invoke(app, list(args), env=env)
        return subprocess.CompletedProcess(
            list(args), result.exit_code, result.stdout, result.stderr
        )

    def run_process(self, *args: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run the installed ``netsuke`` executable as a subprocess."""
        environ = {**os.environ, "NETSUKE_URL": self.url, "NETSUKE_API_KEY": key or self.key}
        return subprocess.run(
            [EXE, *args], capture_output=True, text=True, timeout=60, check=False, env=environ
        )


def start_server(tmp: Path, *extra: str) -> Server:
    proc = subprocess.Popen(
        [EXE, "serve", "--port", "0", "--database-url", f"sqlite:///{tmp / 'cli.db'}", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=tmp,
    )
    assert proc.stdout is not None
    url = key = None
    deadline = time.monotonic() + 60  # bounds the wait only: a loaded machine starts slowly
    while time.monotonic() < deadline and (url is None or key is None):
        line = proc.stdout.readline()
        if not line:
            break
        if m := re.search(r"running at (http://\S+)", line):
            url = m.group(1)
        if m := re.search(r"(nsk_\S+)", line):
            key = m.group(1)
    if url is None or key is None:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        pytest.fail("netsuke serve did not print its URL and admin key")
    return Server(url, key, proc)


def stop_server(server: Server) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()
    if server.proc.stdout is not None:
        server.proc.stdout.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("serve")
    running = start_server(tmp)
    try:
        yield running
    finally:
        stop_server(running)
