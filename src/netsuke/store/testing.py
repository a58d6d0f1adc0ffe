"""A throwaway PostgreSQL server for tests and benchmarks, from Debian's binaries.

``TemporaryPostgres.start()`` runs ``initdb`` into a temporary directory and starts
``postgres`` on a free port of 127.0.0.1 (socket in the same directory), as the ``postgres``
user through ``runuser`` when running as root. ``stop()`` ends that server by its PID (read
from ``postmaster.pid``) and removes the directory. ``create_database()`` returns the URL of a
new, empty database.

``find_bindir()`` looks in ``$NETSUKE_PG_BINDIR``, then ``/usr/lib/postgresql/*/bin`` (newest
major version first); ``None`` when PostgreSQL is not installed (``make install`` installs it
when it can).
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["PostgresUnavailableError", "TemporaryPostgres", "find_bindir"]


class PostgresUnavailableError(RuntimeError):
    """PostgreSQL binaries are missing or the server did not start."""


def find_bindir() -> Path | None:
    configured = os.environ.get("NETSUKE_PG_BINDIR")
    if configured:
        path = Path(configured)
        return path if (path / "initdb").exists() else None
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")

    def major(path: str) -> float:
        try:
            return float(Path(path).parent.parent.name)
        except ValueError:
            return 0.0

    found.sort(key=major, reverse=True)
    return Path(found[0]).parent if found else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TemporaryPostgres:
    """One throwaway PostgreSQL cluster. ``durable=False`` (the default, for tests) turns off
    fsync; benchmarks pass ``durable=True`` to measure real commits."""

    def __init__(self, bindir: Path | None = None, *, durable: bool = False) -> None:
        found = bindir or find_bindir()
        if found is None:
            raise PostgresUnavailableError(
                "PostgreSQL binaries not found under /usr/lib/postgresql/*/bin "
                "(apt-get install postgresql, or set NETSUKE_PG_BINDIR)"
            )
        self.bindir = found
        self.durable = durable
        self.port = 0
        self.base: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._counter = itertools.count(1)
        self._as_root = os.geteuid() == 0

    @property
    def data_dir(self) -> Path:
        assert self.base is not None
        return self.base / "data"

    def _prefix(self) -> list[str]:
        return ["runuser", "-u", "postgres", "--"] if self._as_root else []

    def start(self, *, timeout: float = 60.0) -> TemporaryPostgres:
        self.base = Path(tempfile.mkdtemp(prefix="netsuke-pg-"))
        (self.base / "sock").mkdir()
        if self._as_root:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailableError("running as root but no 'postgres' user") from None
            for path in (self.base, self.base / "sock"):
                os.chown(path, user.pw_uid, user.pw_gid)
        log = self.base / "initdb.log"
        with log.open("wb") as out:
            result = subprocess.run(
                [
                    *self._prefix(),
                    str(self.bindir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if result.returncode != 0:
            raise PostgresUnavailableError(f"initdb failed: {log.read_text()[-2000:]}")
        self.port = _free_port()
        settings = ["-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200"]
        if not self.durable:
            settings += ["-c", "fsync=off", "-c", "full_page_writes=off"]
        server_log = open(self.base / "server.log", "wb")  # noqa: SIM115 - closed in stop()
        self._log = server_log
        self._process = subprocess.Popen(
            [
                *self._prefix(),
                str(self.bindir / "postgres"),
                "-D",
                str(self.data_dir),
                "-p",
                str(self.port),
                "-k",
                str(self.base / "sock"),
                *settings,
            ],
            stdout=server_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self.stop()
                raise PostgresUnavailableError("postgres exited at start; see its log")
            ready = subprocess.run(
                [
                    str(self.bindir / "pg_isready"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-U",
                    "postgres",
                    "-q",
                ],
                check=False,
            )
            if ready.returncode == 0:
                return self
            time.sleep(0.1)
        self.stop()
        raise PostgresUnavailableError(f"postgres did not accept connections in {timeout}s")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def dsn(self, database: str = "postgres") -> str:
        """A libpq/asyncpg DSN (no SQLAlchemy driver name)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database and return its SQLAlchemy URL."""
        name = name or f"netsuke_{os.getpid()}_{next(self._counter)}"
        subprocess.run(
            [
                str(self.bindir / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                name,
            ],
            check=True,
            capture_output=True,
        )
        return self.url(name)

    def stop(self) -> None:
        """Fast shutdown by the server's PID, then remove the directory. Idempotent."""
        process, self._process = self._process, None
        if process is not None:
            pid = self._postmaster_pid(process)
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                if pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                process.wait(timeout=10)
            self._log.close()
        if self.base is not None:
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None

    def _postmaster_pid(self, process: subprocess.Popen[bytes]) -> int | None:
        try:
            first = (self.data_dir / "postmaster.pid").read_text().splitlines()[0]
            return int(first)
        except (OSError, ValueError, IndexError):
            return None if self._as_root else process.pid

    def __enter__(self) -> TemporaryPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
