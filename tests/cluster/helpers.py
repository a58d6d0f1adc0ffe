"""Processes and helpers shared by the cluster tests."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Callable
from typing import Any

from netsuke.kernel import NOREPLY, From, Process

FAST = {"heartbeat_interval": 0.2, "down_after": 2.0}
_prefixes = itertools.count()


def prefix() -> str:
    """A subject prefix of its own for each test (one NATS server serves the session)."""
    return f"t{next(_prefixes)}x{uuid.uuid4().hex[:12]}"


class Echo(Process):
    """Answers calls; records casts and sends; crashes or exits on request."""

    def init(self, arg: Any) -> None:
        self.seen: list[Any] = []

    def handle_call(self, request: Any, from_: From) -> Any:
        if request == "seen":
            return self.seen
        if request == "crash":
            raise RuntimeError("asked to crash")
        if request == "refuse":
            self.reply_error(from_, KeyError("nope"))
            return NOREPLY
        if request == "unsendable":
            return object()
        return ("echo", request)

    def handle_cast(self, request: Any) -> None:
        if request == "crash":
            raise RuntimeError("cast crash")
        self.seen.append(("cast", request))

    def handle_info(self, message: Any) -> None:
        self.seen.append(("info", message))


async def eventually(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Poll ``check`` until it returns a truthy value (the machine is loaded: be generous)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        v = check()
        if v:
            return v
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.05)


class Recorder(Process):
    """Traps exits and records, as wire-safe tuples, every signal it gets; links, monitors and
    watches nodes on request, and calls other processes for the test (from its own node)."""

    def init(self, arg: Any) -> None:
        self.trap_exit = True
        self.seen: list[tuple[Any, ...]] = []

    async def handle_call(self, request: Any, from_: From) -> Any:
        op = request[0] if type(request) is tuple else request
        if op == "seen":
            return self.seen
        if op == "spawn":  # a fresh recorder on this node, with no links or monitors yet
            return await self.runtime.start(Recorder)
        if op == "take":
            out, self.seen = self.seen, []
            return out
        if op == "link":
            self.link(request[1])
            return "ok"
        if op == "monitor":
            return self.monitor(request[1])
        if op == "monitor_node":
            self.runtime.transport.monitor_node(self.pid, request[1])  # type: ignore[attr-defined]
            return "ok"
        if op == "call":  # errors come back as values: this process must not crash
            try:
                return await self.runtime.call(request[1], request[2], timeout=request[3])
            except Exception as e:
                return ("error", type(e).__name__)
        return ("echo", request)

    def handle_info(self, message: Any) -> None:
        from netsuke.cluster import NodeDown
        from netsuke.kernel import Down, Exit

        if type(message) is Exit:
            self.seen.append(("exit", message.pid, message.reason))
        elif type(message) is Down:
            self.seen.append(("down", message.pid, message.reason))
        elif type(message) is NodeDown:
            self.seen.append(("nodedown", message.node))
        else:
            self.seen.append(("info", message))
