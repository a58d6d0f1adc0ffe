"""The result channel of one worker: a pipe only the worker program writes to.

The worker writes ``R`` once it is ready, then exactly one frame: the call's nonce, a newline,
the payload length, a newline, the payload. The channel completes when a whole frame arrived,
when the pipe closes (the worker died) or when more than ``max_bytes`` arrived (overflow).
"""

from __future__ import annotations

import asyncio
import os

__all__ = ["ResultChannel", "WorkerStartError"]


class WorkerStartError(Exception):
    """A worker did not come up (its isolation failed, or it died before it was ready)."""

    def __init__(self, kind: str, detail: str) -> None:
        self.kind = kind
        self.detail = detail
        super().__init__(f"{kind} worker did not start: {detail}")


class ResultChannel:
    def __init__(self, kind: str, max_bytes: int) -> None:
        self.kind = kind
        self.max_bytes = max_bytes
        self.overflow = False
        self._buf = bytearray()
        self._rfd = -1
        loop = asyncio.get_running_loop()
        self._ready: asyncio.Future[None] = loop.create_future()
        self._done: asyncio.Future[None] = loop.create_future()

    @property
    def is_ready(self) -> bool:
        """Whether the worker reported ready."""
        return self._ready.done() and self._ready.exception() is None

    def open(self) -> int:
        """Create the pipe and start reading; returns the write end for the worker (the
        caller closes its copy once the worker holds it)."""
        rfd, wfd = os.pipe()
        os.set_blocking(rfd, False)
        self._rfd = rfd
        asyncio.get_running_loop().add_reader(rfd, self._on_readable)
        return wfd

    def _on_readable(self) -> None:
        try:
            chunk = os.read(self._rfd, 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not self._ready.done():
            if chunk[:1] != b"R":
                self.close("no ready mark" if chunk else "exited before it was ready")
                return
            self._ready.set_result(None)
            chunk = chunk[1:]
            if not chunk:
                return
        if not chunk:
            self.close("exited")
            return
        self._buf += chunk
        if len(self._buf) > self.max_bytes:
            self.overflow = True
            self.close("overflow")
        elif self._complete():
            self.close("complete")

    def _complete(self) -> bool:
        parts = self._buf.split(b"\n", 2)
        if len(parts) < 3 or not parts[1].isdigit():
            return False
        return len(parts[2]) >= int(parts[1])

    def close(self, why: str = "closed") -> None:
        if self._rfd >= 0:
            asyncio.get_running_loop().remove_reader(self._rfd)
            os.close(self._rfd)
            self._rfd = -1
        if not self._ready.done():
            self._ready.set_exception(WorkerStartError(self.kind, why))
            self._ready.exception()  # retrieved; ``ready()`` reports it to whoever asks
        if not self._done.done():
            self._done.set_result(None)

    async def ready(self, timeout: float) -> None:
        """Wait for the ready mark; ``WorkerStartError`` if it does not come in time."""
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), timeout)
        except TimeoutError:
            raise WorkerStartError(self.kind, f"not ready within {timeout}s") from None

    async def result(self) -> tuple[bytes | None, bool]:
        """Wait for the frame (or the end): (frame bytes or None, overflowed)."""
        await asyncio.shield(self._done)
        return (bytes(self._buf) if self._buf else None), self.overflow
