"""Balanced accepts of ``serve --nodes`` (``netsuke.cli._accept``): the nodes' shared accept
board, and acceptors on one listening socket that leave a new connection to the least loaded
node, yet never leave one waiting for a node that does not accept."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from typing import Any

import pytest

from netsuke.cli import _accept
from netsuke.cli._accept import ACCEPTS, AcceptBoard, BalancedAcceptor, counted_protocol

pytestmark = pytest.mark.timeout(60)


class _Proto(asyncio.Protocol):
    """Registers itself while connected, as uvicorn's protocols do."""

    def __init__(self, connections: set[Any]) -> None:
        self.connections = connections

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)


def _listener() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


def _acceptor(sock: socket.socket, board: AcceptBoard, slot: int) -> BalancedAcceptor:
    """A node's acceptor on its own descriptor of the shared socket (as inherited by a node
    process: one event loop watches one descriptor once)."""
    acceptor: BalancedAcceptor
    own = socket.socket(fileno=os.dup(sock.fileno()))
    connections: set[Any] = set()

    def factory() -> asyncio.Protocol:
        proto: asyncio.Protocol = counted(connections)
        return proto

    acceptor = BalancedAcceptor(own, board, slot, factory, lambda: len(connections))
    counted = counted_protocol(_Proto, acceptor.refresh)
    return acceptor


async def _until(cond: Any) -> None:
    while not cond():  # noqa: ASYNC110 (the condition is plain state)
        await asyncio.sleep(0.005)


def test_board_slots_start_absent_and_hold_signed_counts() -> None:
    board = AcceptBoard.create(3)
    try:
        assert [board.get(i) for i in range(3)] == [-1, -1, -1]
        assert board.others_least(0) is None  # nobody else accepts
        board.set(1, 4)
        board.set(2, 2)
        assert board.others_least(0) == 2
        assert board.others_least(2) == 4
        again, slot = AcceptBoard.from_env(board.env(2))
        assert slot == 2 and again.get(1) == 4  # the same memory through the same fd
        again._map.close()
        for bad in ("x", "1,2", f"{board.fd},3,3", f"{board.fd},-1,3"):
            with pytest.raises(ValueError):
                AcceptBoard.from_env(bad)
        with pytest.raises(ValueError):
            AcceptBoard.create(0)
    finally:
        board.close()


def test_a_child_process_writes_the_slot_the_parent_reads() -> None:
    board = AcceptBoard.create(2)
    try:
        code = (
            "import os; from netsuke.cli._accept import AcceptBoard, BOARD_ENV; "
            "b, s = AcceptBoard.from_env(os.environ[BOARD_ENV]); b.set(s, 7)"
        )
        env = {**os.environ, _accept.BOARD_ENV: board.env(1)}
        subprocess.run(
            [sys.executable, "-c", code], env=env, pass_fds=(board.fd,), check=True, timeout=50
        )
        assert board.get(1) == 7 and board.get(0) == -1
    finally:
        board.close()


async def test_two_acceptors_on_one_socket_split_connections_evenly() -> None:
    sock = _listener()
    board = AcceptBoard.create(2)
    nodes = [_acceptor(sock, board, 0), _acceptor(sock, board, 1)]
    writers: list[asyncio.StreamWriter] = []
    try:
        for a in nodes:
            a.start()
        port = sock.getsockname()[1]
        forced = ACCEPTS.labels("forced")._value.get()
        for i in range(10):  # one after the other, as the benchmark's clients
            _, w = await asyncio.open_connection("127.0.0.1", port)
            writers.append(w)
            await _until(lambda i=i: sum(a.open for a in nodes) == i + 1)
            assert abs(nodes[0].open - nodes[1].open) <= 1, [a.open for a in nodes]
            if i % 3 == 0:  # a pause longer than the patience: each connection waits anew
                await asyncio.sleep(_accept.PATIENCE * 2)
        assert [a.open for a in nodes] == [5, 5]
        # one event loop runs both: the node left a connection always takes it in time
        assert ACCEPTS.labels("forced")._value.get() == forced
        assert [board.get(0), board.get(1)] == [5, 5]
        for w in writers[:4]:  # closed connections count down
            w.close()
            await w.wait_closed()
        await _until(lambda: sum(a.open for a in nodes) == 6)
        assert sum(board.get(i) for i in range(2)) == 6
    finally:
        for w in writers:
            w.close()
        for a in nodes:
            await a.close()
            a.sock.close()
        assert [board.get(0), board.get(1)] == [-1, -1]  # a stopped node accepts no more
        sock.close()
        board.close()


async def test_a_peer_that_does_not_accept_delays_a_connection_never_refuses_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_accept, "PATIENCE", 0.02)
    monkeypatch.setattr(_accept, "STUCK_HOLD", 600.0)  # however slow this machine is
    sock = _listener()
    board = AcceptBoard.create(2)
    board.set(1, 0)  # a peer with fewer connections that does not accept (SIGSTOP, say)
    node = _acceptor(sock, board, 0)
    writers: list[asyncio.StreamWriter] = []
    forced = ACCEPTS.labels("forced")._value.get()
    try:
        node.start()
        port = sock.getsockname()[1]
        for i in range(3):
            _, w = await asyncio.open_connection("127.0.0.1", port)
            writers.append(w)
            await _until(lambda i=i: node.open == i + 1)
        # the first connection went to the less loaded node (this one, tied); the second was
        # taken once the peer had let it wait; the board is then ignored for a while, so the
        # third is not delayed again
        assert ACCEPTS.labels("forced")._value.get() == forced + 1
        board.set(1, -1)  # the supervisor saw the peer exit: nobody to defer to
        assert not node._defer()
    finally:
        for w in writers:
            w.close()
        await node.close()
        node.sock.close()
        sock.close()
        board.close()


async def test_the_slot_follows_connections_closed_behind_the_protocol(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a connection upgraded to a WebSocket leaves the counted HTTP protocol: the periodic
    # refresh writes the count uvicorn keeps (here: a plain number) all the same
    monkeypatch.setattr(_accept, "REFRESH", 0.01)
    sock = _listener()
    board = AcceptBoard.create(2)
    held = [3]
    node = BalancedAcceptor(sock, board, 0, asyncio.Protocol, lambda: held[0])
    try:
        node.start()
        assert board.get(0) == 3
        held[0] = 1
        await _until(lambda: board.get(0) == 1)
        await node.close()
        assert board.get(0) == -1  # stopped: absent, and no refresh writes it back
        await asyncio.sleep(0.05)
        assert board.get(0) == -1
    finally:
        await node.close()
        sock.close()
        board.close()


def test_without_memfd_the_board_is_an_unlinked_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "memfd_create")  # as on macOS
    board = AcceptBoard.create(2)
    try:
        board.set(1, 3)
        again, slot = AcceptBoard.from_env(board.env(1))
        assert slot == 1 and again.get(1) == 3 and again.get(0) == -1
        again._map.close()
    finally:
        board.close()
