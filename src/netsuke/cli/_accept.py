"""Balanced accepts for ``netsuke serve --nodes N``: the nodes share one listening socket and
each takes new connections only while it holds no more open connections than the least
loaded live node.

Why: the N nodes inherit the one listening socket and each event loop watches it; the kernel
wakes every loop for a new connection and the first to call ``accept`` gets it. Which one
that is depends on timing, not on load: measured with 16 keep-alive clients opened one after
the other on ``serve --nodes 2``, one node took 15 connections and the other 1. A session is
started on the node its request reached (placement prefers the receiving node), so the busy
node then forwards part of its sessions to the idle one over NATS, and every such turn costs
two nodes' CPU (an HTTP hop, a NATS round trip, a second event loop, store reads to find the
owner). Balancing the connections keeps each session's turns on one node.

How: the supervisor creates an **accept board**, a shared memory block (``memfd``) of one
signed 64-bit slot per node, inherited by every node (``NETSUKE_ACCEPT_BOARD``:
``fd,slot,count``). A node writes its count of open connections (HTTP and WebSocket) into its slot
after each accept, after each HTTP connection closes and every ``REFRESH`` seconds; ``-1``
marks a node that does not accept (not started yet, stopped, or dead: the supervisor writes
it when a node exits unexpectedly). When the listening socket is readable, a node whose count
is above the smallest count of the other accepting nodes **defers** for ``STEP`` seconds
(the other node, woken too, takes the connection); a connection still waiting after
``PATIENCE`` is taken anyway (a peer that is stopped, ``SIGSTOP``, or blocked still has a
count but does not accept), and the board is then ignored for ``STUCK_HOLD`` seconds. So a
board can delay a connection, never refuse one. Each slot is one aligned 8-byte word written
by one process: reads are never torn on the platforms this runs on (a stale count only costs
a less even spread).

The accept loop replaces asyncio's own (``loop.create_server``) for the node's socket: it
accepts one connection at a time with ``sock.accept`` and hands it to uvicorn's protocol with
``loop.connect_accepted_socket``.
"""

from __future__ import annotations

import asyncio
import mmap
import os
import select
import socket
import struct
import tempfile
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter

from ..observability import REGISTRY, get_logger

__all__ = ["BOARD_ENV", "AcceptBoard", "BalancedAcceptor", "counted_protocol"]

log = get_logger("netsuke.cli")

#: The environment variable a node of ``serve --nodes`` finds its board in: ``fd,slot,count``.
BOARD_ENV = "NETSUKE_ACCEPT_BOARD"
STEP = 0.002  # seconds a node defers before looking at the board again
PATIENCE = 0.05  # seconds a connection may wait for a less loaded peer to take it
STUCK_HOLD = 1.0  # seconds the board is ignored after a peer let a connection wait
REFRESH = 0.5  # seconds between writes of this node's count (besides each accept and close)
_SLOT = struct.Struct("=q")

ACCEPTS = Counter(
    "netsuke_serve_accepts",
    "Connections accepted by this node of `serve --nodes`, by how: balanced (it was the least "
    "loaded node, or tied), forced (a less loaded peer did not take it in time).",
    ["how"],
    registry=REGISTRY,
)
DEFERRALS = Counter(
    "netsuke_serve_accept_deferrals",
    "Times this node left a new connection to a less loaded node of `serve --nodes`.",
    registry=REGISTRY,
)


class AcceptBoard:
    """One signed 64-bit slot per node in a shared memory block (see the module doc)."""

    def __init__(self, fd: int, count: int) -> None:
        if count < 1:
            raise ValueError("an accept board has at least one slot")
        self.fd = fd
        self.count = count
        self._map = mmap.mmap(fd, count * _SLOT.size)

    @classmethod
    def create(cls, count: int) -> AcceptBoard:
        """A new board (every slot ``-1``) on an inheritable ``memfd`` (elsewhere than on
        Linux: an unlinked temporary file)."""
        if hasattr(os, "memfd_create"):
            fd = os.memfd_create("netsuke-accept-board", 0)
        else:
            with tempfile.TemporaryFile() as f:
                fd = os.dup(f.fileno())
        try:
            os.ftruncate(fd, count * _SLOT.size)
            board = cls(fd, count)
        except BaseException:
            os.close(fd)
            raise
        for slot in range(count):
            board.set(slot, -1)
        os.set_inheritable(fd, True)
        return board

    @classmethod
    def from_env(cls, value: str) -> tuple[AcceptBoard, int]:
        """The board and this node's slot from ``fd,slot,count`` (``ValueError`` if bad)."""
        fd, slot, count = (int(x) for x in value.split(","))
        if not 0 <= slot < count:
            raise ValueError(f"accept board slot {slot} outside 0..{count - 1}")
        return cls(fd, count), slot

    def env(self, slot: int) -> str:
        return f"{self.fd},{slot},{self.count}"

    def set(self, slot: int, value: int) -> None:
        _SLOT.pack_into(self._map, slot * _SLOT.size, value)

    def get(self, slot: int) -> int:
        value: int = _SLOT.unpack_from(self._map, slot * _SLOT.size)[0]
        return value

    def others_least(self, slot: int) -> int | None:
        """The smallest count among the other accepting nodes (``None``: none accepts)."""
        least: int | None = None
        for i in range(self.count):
            if i != slot:
                v = self.get(i)
                if v >= 0 and (least is None or v < least):
                    least = v
        return least

    def close(self) -> None:
        self._map.close()
        os.close(self.fd)


def counted_protocol(base: type[Any], on_lost: Callable[[], None]) -> type[Any]:
    """A subclass of the protocol class ``base`` that calls ``on_lost()`` after a connection
    is lost (uvicorn's HTTP protocols; a connection upgraded to a WebSocket is handed to
    another protocol, and is counted down by the acceptor's periodic refresh instead)."""

    class Counted(base):  # type: ignore[misc]
        def connection_lost(self, exc: Exception | None) -> None:
            super().connection_lost(exc)
            on_lost()

    Counted.__name__ = Counted.__qualname__ = f"Counted{base.__name__}"
    return Counted


class BalancedAcceptor:
    """The accept loop of one node on the shared listening socket (see the module doc).
    ``connections()``: this node's open connections (uvicorn's ``server_state.connections``,
    which holds HTTP and WebSocket connections alike)."""

    def __init__(
        self,
        sock: socket.socket,
        board: AcceptBoard,
        slot: int,
        protocol_factory: Callable[[], asyncio.Protocol],
        connections: Callable[[], int],
    ) -> None:
        self.sock = sock
        self.board = board
        self.slot = slot
        self._connections = connections
        self._factory = protocol_factory
        self._tasks: list[asyncio.Task[None]] = []
        self._ignore_until = 0.0

    @property
    def open(self) -> int:
        """This node's open connections."""
        return self._connections()

    def refresh(self) -> None:
        """Write this node's count into its slot (while accepting: a stopped node's slot
        stays -1)."""
        if self._tasks:
            self.board.set(self.slot, self._connections())

    def start(self) -> None:
        self.sock.setblocking(False)
        self.board.set(self.slot, self._connections())
        self._tasks = [
            asyncio.create_task(self._run(), name="netsuke-accept"),
            asyncio.create_task(self._refresher(), name="netsuke-accept-refresh"),
        ]

    async def close(self) -> None:
        """Stop accepting (the socket stays open: the caller closes it)."""
        tasks, self._tasks = self._tasks, []
        self.board.set(self.slot, -1)
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def _refresher(self) -> None:
        while True:
            await asyncio.sleep(REFRESH)
            self.refresh()

    def _defer(self) -> bool:
        """Whether a less loaded node should take the next connection."""
        if time.monotonic() < self._ignore_until:
            return False
        least = self.board.others_least(self.slot)
        return least is not None and self.open > least

    async def _readable(self, loop: asyncio.AbstractEventLoop) -> None:
        fd = self.sock.fileno()
        ready: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(fd, wake)
        try:
            await ready
        finally:
            loop.remove_reader(fd)

    async def _run(self) -> None:
        """Accept until cancelled; an unexpected error is logged and accepting goes on (a
        node that stopped accepting would only serve the connections it has)."""
        while True:
            try:
                await self._accept_loop()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if self.sock.fileno() < 0:  # closed under us: nothing left to accept on
                    return
                log.warning("serve.accept_loop_failed", error=f"{type(e).__name__}: {e}")
                await asyncio.sleep(0.1)

    def _pending(self) -> bool:
        """Whether a connection waits on the socket now (no waiting)."""
        return bool(select.select([self.sock], [], [], 0)[0])

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._readable(loop)
            # this connection's wait: it ends when a peer takes it, or after PATIENCE
            since: float | None = None
            taken = False
            while self._defer():
                now = time.monotonic()
                if since is None:
                    since = now
                elif now - since >= PATIENCE:
                    break
                DEFERRALS.inc()
                await asyncio.sleep(STEP)
                if not self._pending():  # a less loaded node took it
                    taken = True
                    break
            if taken:
                continue
            forced = since is not None and self._defer() and self._pending()
            try:
                conn, _ = self.sock.accept()
                conn.setblocking(False)
            except (BlockingIOError, InterruptedError):  # another node took it
                continue
            except OSError as e:  # out of file descriptors, say: let some close first
                log.warning("serve.accept_failed", error=e.strerror or str(e))
                await asyncio.sleep(0.1)
                continue
            if forced:
                self._ignore_until = time.monotonic() + STUCK_HOLD
                log.info("serve.accept_forced", slot=self.slot, open=self.open)
            ACCEPTS.labels("forced" if forced else "balanced").inc()
            try:
                await loop.connect_accepted_socket(self._factory, conn)
            except OSError:  # the client went away at once
                conn.close()
            self.refresh()
