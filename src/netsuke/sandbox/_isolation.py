"""Isolation mechanisms: how a worker's command line and start-up settings are built.

* ``bubblewrap``: new network, IPC, PID, UTS (and cgroup) namespaces; a root made of
  read-only binds of ``/usr`` (and the Python prefix at ``/opt/python`` when it lives
  elsewhere), a fresh ``/proc`` and ``/dev``, a bounded tmpfs on ``/tmp``; nothing else of the
  host (no ``/etc``, ``/home``, ``/root``, working trees). As root, bwrap keeps only
  CAP_SETUID/CAP_SETGID so the worker can drop to ``uid`` (nobody) itself; as another user, a
  user namespace maps it to ``uid``.
* ``unshare``: util-linux ``unshare`` with new network, IPC, UTS, PID and mount namespaces and
  a fresh ``/proc``; the worker remounts everything read-only, mounts a bounded ``/tmp`` and
  drops to ``uid``. The host's directories readable by nobody stay visible (read-only).
* ``none``: a plain process (explicit operator choice only).

Every mechanism: cleared environment, a new session (so the wall clock kills the whole
group), the worker's own rlimits, seccomp filter and guards.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._config import SandboxConfig

__all__ = ["WORKER_SOURCE", "Isolation", "candidates"]

_HERE = Path(__file__).parent
#: The worker program: lockdown, worker and entry parts, one ``from __future__`` at the top.
WORKER_SOURCE = "from __future__ import annotations\n" + "\n".join(
    (_HERE / part).read_text().replace("from __future__ import annotations\n", "")
    for part in ("_lockdown.py", "_worker.py", "_entry.py")
)
_SANDBOX_PREFIX = "/opt/python"


@dataclass(frozen=True)
class Isolation:
    """One mechanism, ready to build worker command lines."""

    kind: str
    argv_prefix: tuple[str, ...]
    python: str
    settings: tuple[tuple[str, Any], ...]

    def argv(self, *, result_fd: int | None = None, control_fd: int | None = None) -> list[str]:
        """The command line of a one-call worker (``result_fd``) or a fork server
        (``control_fd``)."""
        config = dict(self.settings, result_fd=result_fd, control_fd=control_fd)
        return [
            *self.argv_prefix,
            self.python,
            "-I",
            "-S",
            "-c",
            WORKER_SOURCE,
            json.dumps(config),
        ]


def _host_python() -> tuple[str, str]:
    """(real interpreter path, its installation prefix)."""
    return os.path.realpath(sys.executable), os.path.realpath(sys.base_prefix)


def bubblewrap(config: SandboxConfig) -> Isolation | str:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "bubblewrap (bwrap) is not installed"
    python, prefix = _host_python()
    argv = [
        bwrap,
        "--unshare-net",
        "--unshare-ipc",
        "--unshare-pid",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--die-with-parent",
        "--new-session",
        "--ro-bind",
        "/usr",
        "/usr",
    ]
    for top in ("/lib", "/lib64", "/lib32", "/bin", "/sbin"):
        if os.path.islink(top):
            argv += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            argv += ["--ro-bind", top, top]
    inner_python = python
    if not prefix.startswith("/usr/"):
        argv += ["--perms", "0755", "--dir", "/opt", "--ro-bind", prefix, _SANDBOX_PREFIX]
        inner_python = _SANDBOX_PREFIX + python.removeprefix(prefix)
    argv += [
        "--perms",
        "1777",
        "--size",
        str(config.tmp_mb << 20),
        "--tmpfs",
        "/tmp",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--clearenv",
        "--chdir",
        "/tmp",
    ]
    root = os.getuid() == 0
    if root:
        argv += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        argv += ["--unshare-user", "--uid", str(config.uid), "--gid", str(config.uid)]
    argv.append("--")
    settings = _settings(config, drop=root, mount_view=False, preload_all=False)
    return Isolation("bubblewrap", tuple(argv), inner_python, settings)


def unshare(config: SandboxConfig) -> Isolation | str:
    tool = shutil.which("unshare")
    if tool is None:
        return "unshare (util-linux) is not installed"
    python, _ = _host_python()
    root = os.getuid() == 0
    argv = [tool]
    if not root:
        argv += ["--user", "--map-root-user"]
    argv += ["--net", "--ipc", "--uts", "--pid", "--mount", "--mount-proc", "--fork"]
    argv += ["--kill-child", "--"]
    settings = _settings(config, drop=root, mount_view=True, preload_all=True)
    return Isolation("unshare", tuple(argv), python, settings)


def no_isolation(config: SandboxConfig) -> Isolation:
    python, _ = _host_python()
    settings = _settings(config, drop=os.getuid() == 0, mount_view=False, preload_all=True)
    return Isolation("none", (), python, settings)


def _settings(
    config: SandboxConfig, *, drop: bool, mount_view: bool, preload_all: bool
) -> tuple[tuple[str, Any], ...]:
    preload = sorted(config.allowed_imports) if preload_all else list(config.preload)
    return (
        ("drop_to", config.uid if drop else None),
        ("mount_view", mount_view),
        ("tmp_mb", config.tmp_mb),
        ("file_bytes", config.file_bytes),
        ("preload", preload),
        ("seccomp", config.seccomp),
    )


def candidates(config: SandboxConfig) -> tuple[list[Isolation], list[str]]:
    """Mechanisms to try, in order, and the reasons others were skipped."""
    if config.isolation == "none":
        return [no_isolation(config)], []
    builders = {"bubblewrap": [bubblewrap], "unshare": [unshare], "auto": [bubblewrap, unshare]}
    found: list[Isolation] = []
    reasons: list[str] = []
    if not sys.platform.startswith("linux"):
        return [], [f"namespaces need Linux, this is {sys.platform}"]
    for build in builders[config.isolation]:
        result = build(config)
        if isinstance(result, str):
            reasons.append(result)
        else:
            found.append(result)
    return found, reasons
