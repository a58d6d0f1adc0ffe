"""A throwaway Debian ``redis-server`` for the benchmarks (loopback, a free port, a temp dir),
stopped by its PID. ``None`` with a reason when the server or redis-py is missing."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def missing() -> str | None:
    """Why the Redis figures cannot run here, or ``None``."""
    if shutil.which("redis-server") is None:
        return "redis-server not found (make install as root installs Debian's)"
    try:
        import redis  # noqa: F401
    except ImportError:
        return "redis-py not installed (pip install 'netsuke[redis]')"
    return None


@contextmanager
def redis_server(workdir: Path, *options: str) -> Iterator[str]:
    """Start ``redis-server`` with ``options`` in ``workdir``; yield its URL."""
    exe = shutil.which("redis-server")
    assert exe is not None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir), "--save", "",
         "--daemonize", "no", *options],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as c:
                    c.sendall(b"PING\r\n")
                    if c.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start (exit {proc.poll()})")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
