"""Seed 001, in Netsuke: a named agent linked to its owner dies with it.

A web socket handler (here: a scope) owns a chat agent; when the handler fails, the agent is
gone too, and its name is free again.

    python examples/owner_link.py
"""

from __future__ import annotations

import asyncio
from typing import Any

from netsuke import From, Process, Runtime


class ChatAgent(Process):
    def init(self, arg: dict[str, Any]) -> None:
        self.instructions = arg["instructions"]

    def handle_call(self, request: Any, from_: From) -> Any:
        return f"({self.instructions}) echo: {request}"


async def main() -> None:
    async with Runtime() as rt:
        try:
            async with rt.scope() as liveview:
                pid = await rt.start(
                    ChatAgent,
                    {"instructions": "You are helpful"},
                    name="chat:user:42",
                    link=liveview.pid,
                )
                print(await rt.call("chat:user:42", "Hello!"))
                assert rt.whereis("chat:user:42") == pid
                raise ConnectionError("the browser tab closed")
        except ConnectionError:
            pass
        assert rt.whereis("chat:user:42") is None
        print("agent stopped with its owner:", not rt.alive(pid))


if __name__ == "__main__":
    asyncio.run(main())
