"""Operator settings for the sandbox, with their defaults.

``SandboxConfig.from_env()`` reads ``NETSUKE_SANDBOX_ISOLATION`` (``auto``, ``bubblewrap``,
``unshare`` or ``none``) and ``NETSUKE_SANDBOX_POOL_SIZE``, and fails loudly on bad values.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal, get_args

__all__ = ["DEFAULT_ALLOWED_IMPORTS", "IsolationMode", "SandboxConfig"]

IsolationMode = Literal["auto", "bubblewrap", "unshare", "none"]

#: The operator allow-list when none is given: pure computation, no I/O.
DEFAULT_ALLOWED_IMPORTS: frozenset[str] = frozenset(
    {
        "asyncio",
        "bisect",
        "collections",
        "dataclasses",
        "datetime",
        "decimal",
        "enum",
        "fractions",
        "functools",
        "heapq",
        "itertools",
        "json",
        "math",
        "random",
        "re",
        "statistics",
        "string",
        "textwrap",
        "time",
        "typing",
    }
)

#: Imported by every worker before it is handed out (cheap, and common in functions).
DEFAULT_PRELOAD = ("json", "math", "re", "collections", "itertools", "functools", "datetime")


@dataclass(frozen=True)
class SandboxConfig:
    """Settings for a ``Sandbox``.

    * ``isolation`` [``"auto"``]: ``auto`` tries bubblewrap, then unshare; if neither works,
      execution is refused (``IsolationUnavailableError``). ``"none"`` runs workers as plain
      processes (cleared environment, rlimits, seccomp, guards, still one process per call) and
      must be chosen explicitly.
    * ``pool_size`` [2]: pre-started workers kept ready; each serves one call.
    * ``allowed_imports``: the operator allow-list; a function's own list must be within it.
    * ``preload``: modules every worker imports before it is handed out.
    * ``max_code_bytes`` [65536], ``max_output_chars`` [65536] (captured print output),
      ``max_result_bytes`` [1 MiB] (the result frame), ``max_result_depth`` [100] (nesting of
      the value returned), ``tmp_mb`` [16] (private /tmp),
      ``file_bytes`` [8 MiB] (largest file a call may write), ``uid`` [65534] (nobody),
      ``seccomp`` [True], ``startup_timeout_s`` [10].
    * ``fork_server`` [True]: fork workers from one isolated, unprivileged server process (about
      a millisecond each) rather than start each from scratch (tens of milliseconds of CPU); each
      forked worker still serves one call, in its own user and mount namespace with a private
      ``/tmp``. Falls back to starting from scratch when the server cannot run here.
    """

    isolation: IsolationMode = "auto"
    pool_size: int = 2
    allowed_imports: frozenset[str] = DEFAULT_ALLOWED_IMPORTS
    preload: tuple[str, ...] = DEFAULT_PRELOAD
    max_code_bytes: int = 65536
    max_output_chars: int = 65536
    max_result_bytes: int = 1 << 20
    max_result_depth: int = 100
    tmp_mb: int = 16
    file_bytes: int = 8 << 20
    uid: int = 65534
    seccomp: bool = True
    startup_timeout_s: float = 10.0
    fork_server: bool = True

    def __post_init__(self) -> None:
        if self.isolation not in get_args(IsolationMode):
            raise ValueError(f"isolation must be one of {get_args(IsolationMode)}")
        if not 0 <= self.pool_size <= 64:
            raise ValueError("pool_size must be within 0..64")
        for name in (
            "max_code_bytes",
            "max_output_chars",
            "max_result_bytes",
            "max_result_depth",
            "tmp_mb",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")

    @classmethod
    def from_env(cls, **overrides: object) -> SandboxConfig:
        """Settings from ``NETSUKE_SANDBOX_*`` variables; ``overrides`` win."""
        values: dict[str, object] = {}
        if "NETSUKE_SANDBOX_ISOLATION" in os.environ:
            values["isolation"] = os.environ["NETSUKE_SANDBOX_ISOLATION"]
        if "NETSUKE_SANDBOX_POOL_SIZE" in os.environ:
            raw = os.environ["NETSUKE_SANDBOX_POOL_SIZE"]
            try:
                values["pool_size"] = int(raw)
            except ValueError:
                raise ValueError(f"NETSUKE_SANDBOX_POOL_SIZE={raw!r} is not an integer") from None
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]
