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
