"""A TCP proxy the tests control, to cut one node off NATS and heal it.

``TcpProxy(port)`` listens on a free loopback port and forwards every connection to
``127.0.0.1:port``. Modes:

* ``blackhole()``: nothing passes either way, connections stay open (a firewall that drops
  packets: the client only notices through its own pings). Bytes already read are held and
  delivered on ``heal()``, as TCP retransmission would.
* ``drop()``: every connection is reset and new ones are closed at once (a refused route).
* ``heal()``: forward again.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._open = asyncio.Event()
        self._open.set()
        self._refusing = False
        self._conns: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        sock: socket.socket = self._server.sockets[0]
        self.port = sock.getsockname()[1]
        return self.url

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self._reset_all()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    def blackhole(self) -> None:
        self._refusing = False
        self._open.clear()

    def drop(self) -> None:
        self._refusing = True
        self._open.clear()
        self._reset_all()

    def heal(self) -> None:
        self._refusing = False
        self._open.set()

    def _reset_all(self) -> None:
        for cw, uw in list(self._conns):
            for w in (cw, uw):
                w.transport.abort()
        self._conns.clear()

    async def _accept(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        if self._refusing:
            cw.transport.abort()
            return
        try:
            ur, uw = await asyncio.open_connection(*self.target)
        except OSError:
            cw.transport.abort()
            return
        pair = (cw, uw)
        self._conns.add(pair)
        for r, w in ((cr, uw), (ur, cw)):
            t = asyncio.get_running_loop().create_task(self._pump(r, w, pair))
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)

    async def _pump(
        self,
        r: asyncio.StreamReader,
        w: asyncio.StreamWriter,
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
    ) -> None:
        try:
            while True:
                await self._open.wait()
                data = await r.read(65536)
                if not data:
                    break
                await self._open.wait()  # read before a blackhole: held until healed
                if pair not in self._conns:
                    return
                w.write(data)
                await w.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._conns.discard(pair)
            for x in pair:
                x.transport.abort()
