"""Captured stdout/stderr of one agent: a size-rotated file plus live followers."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import deque
from pathlib import Path
from typing import IO


class AgentLog:
    """Appends lines to ``<dir>/<agent_id>.log``; at ``max_bytes`` rotates to ``.1`` .. ``.N``."""

    def __init__(self, path: Path, *, max_bytes: int, backups: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._file: IO[bytes] | None = None
        self._size = 0
        self._followers: set[asyncio.Queue[str]] = set()
        self.count = 0
        """Lines written since this log object was made: a cursor for followers."""

    def _open(self) -> IO[bytes]:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("ab")
            self._size = self._file.tell()
        return self._file

    def _rotate(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
            return
        for i in range(self.backups - 1, 0, -1):
            src = self.path.with_name(f"{self.path.name}.{i}")
            if src.exists():
                os.replace(src, self.path.with_name(f"{self.path.name}.{i + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))

    def write(self, stream: str, line: bytes) -> None:
        f = self._open()
        if self._size and self._size + len(line) > self.max_bytes:
            self._rotate()
            f = self._open()
        if not line.endswith(b"\n"):
            line += b"\n"
        f.write(line)
        f.flush()
        self._size += len(line)
        self.count += 1
        if self._followers:
            text = f"[{stream}] " + line.decode("utf-8", "replace").rstrip("\n")
            for q in self._followers:
                with contextlib.suppress(asyncio.QueueFull):
                    q.put_nowait(text)

    def tail(self, lines: int = 100) -> list[str]:
        """The last ``lines`` lines of the current file (and the previous one if needed)."""
        out: deque[str] = deque(maxlen=lines)
        for path in (self.path.with_name(f"{self.path.name}.1"), self.path):
            with contextlib.suppress(OSError):
                for raw in path.read_bytes().splitlines():
                    out.append(raw.decode("utf-8", "replace"))
        return list(out)

    def follow(self) -> asyncio.Queue[str]:
        q: asyncio.Queue[str] = asyncio.Queue(maxsize=1000)
        self._followers.add(q)
        return q

    def unfollow(self, q: asyncio.Queue[str]) -> None:
        self._followers.discard(q)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
