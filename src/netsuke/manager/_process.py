"""Launching one agent package as an OS process.

Each agent runs ``sys.executable <entry_point>`` in its package folder, in its own session and
process group (``start_new_session``), with the seed's environment variables, the manifest's
resource limits (``setrlimit``) and ``PR_SET_PDEATHSIG=SIGKILL`` so the kernel kills it when
the manager dies, even by SIGKILL. A normal stop signals the whole group: SIGTERM, wait
``stop_timeout``, SIGKILL. stdout and stderr are copied line by line into a rotating log file.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import resource
import signal
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from ._logs import AgentLog
from ._manifest import PackageManifest

PR_SET_PDEATHSIG = 1

_libc: ctypes.CDLL | None
try:
    _libc = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover - non-glibc platforms
    _libc = None


def _child_setup(parent_pid: int, limits: Mapping[int, int]) -> Callable[[], None]:
    """The function run in the child between fork and exec (async-signal-safe enough)."""

    def setup() -> None:
        if _libc is not None and sys.platform.startswith("linux"):
            _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent_pid:  # the manager died before prctl took effect
                os._exit(1)
        for which, value in limits.items():
            resource.setrlimit(which, (value, value))

    return setup


def agent_environment(
    manifest: PackageManifest, *, nats_url: str, heartbeat_interval: float, extra: Mapping[str, str]
) -> dict[str, str]:
    """The seed's variables (AGENT_ID, NATS_URL, AGENT_TYPE, AGENT_NAME, AGENT_VERSION)."""
    env = os.environ.copy()
    env.update(manifest.environment)
    env.update(extra)
    env.update(
        {
            "AGENT_ID": manifest.agent_id,
            "NATS_URL": nats_url,
            "AGENT_TYPE": manifest.agent_type,
            "AGENT_NAME": manifest.name,
            "AGENT_VERSION": manifest.version,
            "AGENT_HEARTBEAT_INTERVAL": str(heartbeat_interval),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def _limits(manifest: PackageManifest) -> dict[int, int]:
    out: dict[int, int] = {}
    lim = manifest.limits
    if lim.memory_mb is not None:
        out[resource.RLIMIT_AS] = lim.memory_mb * 1024 * 1024
    if lim.cpu_seconds is not None:
        out[resource.RLIMIT_CPU] = lim.cpu_seconds
    if lim.open_files is not None:
        out[resource.RLIMIT_NOFILE] = lim.open_files
    return out


class AgentProcess:
    """One running OS process of a package, with its log pumps."""

    def __init__(self, proc: asyncio.subprocess.Process, log: AgentLog) -> None:
        self.proc = proc
        self.pid = proc.pid
        self._log = log
        assert proc.stdout is not None
        assert proc.stderr is not None
        self._pumps = [
            asyncio.create_task(self._pump(proc.stdout, "stdout")),
            asyncio.create_task(self._pump(proc.stderr, "stderr")),
        ]

    @classmethod
    async def launch(
        cls, manifest: PackageManifest, env: Mapping[str, str], log: AgentLog
    ) -> AgentProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(manifest.script.resolve()),
            cwd=str(manifest.folder),
            env=dict(env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            preexec_fn=_child_setup(os.getpid(), _limits(manifest)),
        )
        return cls(proc, log)

    async def _pump(self, stream: asyncio.StreamReader, name: str) -> None:
        while True:
            try:
                line = await stream.readline()
            except (ValueError, asyncio.LimitOverrunError):  # an over-long line: take a chunk
                line = await stream.read(65536)
            if not line:
                return
            self._log.write(name, line)

    async def wait(self) -> int:
        code = await self.proc.wait()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.gather(*self._pumps, return_exceptions=True), 2.0)
        return code

    def signal_group(self, sig: int) -> None:
        """Send ``sig`` to the whole process group (the agent and anything it spawned)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    async def stop(self, timeout: float) -> int:
        """SIGTERM the group, wait ``timeout`` seconds, then SIGKILL it; return the exit code."""
        if self.proc.returncode is None:
            self.signal_group(signal.SIGCONT)  # a stopped process cannot handle SIGTERM
            self.signal_group(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(self.proc.wait()), timeout)
            except TimeoutError:
                self.signal_group(signal.SIGKILL)
        code = await self.wait()
        self.signal_group(signal.SIGKILL)  # leftovers in the group
        return code

    def usage(self) -> dict[str, float]:
        """CPU seconds and resident memory of the process, from /proc (Linux)."""
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
            statm = Path(f"/proc/{self.pid}/statm").read_text().split()
        except (OSError, IndexError):
            return {}
        tick = os.sysconf("SC_CLK_TCK")
        page = os.sysconf("SC_PAGE_SIZE")
        return {
            "cpu_seconds": (int(stat[11]) + int(stat[12])) / tick,
            "rss_bytes": float(int(statm[1]) * page),
        }


def exit_reason(code: int) -> tuple[int | None, str | None]:
    """Split an asyncio return code into (exit_code, signal name)."""
    if code < 0:
        try:
            return None, signal.Signals(-code).name
        except ValueError:
            return None, f"SIG{-code}"
    return code, None
