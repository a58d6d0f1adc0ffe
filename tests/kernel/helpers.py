"""Processes shared by the kernel tests."""

from __future__ import annotations

import asyncio
from typing import Any

from netsuke import NOREPLY, From, Process


class Echo(Process):
    """Replies with what it gets; records info messages and terminate reasons."""

    def init(self, arg: Any) -> None:
        self.infos: list[Any] = []
        self.log: list[Any] | None = arg
        self.pending: list[From] = []
        if self.log is not None:
            self.log.append(("init", arg is not None))

    async def handle_call(self, request: Any, from_: From) -> Any:
        match request:
            case ("sleep", seconds):
                await asyncio.sleep(seconds)
                return "slept"
            case "crash":
                raise ValueError("boom")
            case "defer":
                self.pending.append(from_)
                return NOREPLY
            case ("release", value):
                for f in self.pending:
                    self.reply(f, value)
                self.pending.clear()
                return "released"
            case ("stop", reason):
                self.stop(reason)
                return "stopping"
            case "infos":
                return list(self.infos)
            case ("trap", flag):
                self.trap_exit = flag
                return flag
            case ("link", pid):
                self.link(pid)
                return "linked"
            case ("monitor", pid):
                return self.monitor(pid)
            case _:
                return request

    def handle_cast(self, request: Any) -> None:
        if request == "crash":
            raise RuntimeError("cast crash")
        self.infos.append(("cast", request))

    def handle_info(self, message: Any) -> None:
        self.infos.append(message)

    def terminate(self, reason: Any) -> None:
        if self.log is not None:
            self.log.append(("terminate", reason))


class Named(Process):
    """Appends ("start", id) / ("stop", id) to a shared log; traps exits so terminate runs."""

    def init(self, arg: Any) -> None:
        self.ident, self.events = arg
        self.trap_exit = True
        self.events.append(("start", self.ident))

    def handle_call(self, request: Any, from_: From) -> Any:
        if request == "crash":
            raise ValueError(f"{self.ident} crashed")
        return self.ident

    def handle_cast(self, request: Any) -> None:
        if request == "crash":
            raise ValueError(f"{self.ident} crashed")

    def terminate(self, reason: Any) -> None:
        self.events.append(("stop", self.ident))


async def settle(n: int = 10) -> None:
    """Let the loop run a few iterations."""
    for _ in range(n):
        await asyncio.sleep(0)
