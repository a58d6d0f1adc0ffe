"""Seed 000, in Netsuke: an agent supervisor, named agents, per-user sessions.

The model call is a stand-in (the agents layer brings real models); what this shows is the
kernel: a DynamicSupervisor of named session processes, each with isolated state, restarted
with its name after a crash, and found by name from anywhere.

    python examples/sessions.py
"""

from __future__ import annotations

import asyncio
from typing import Any

from netsuke import ChildSpec, DynamicSupervisor, DynamicSupervisorSpec, From, Process, Runtime


class AgentServer(Process):
    """A session: keeps its own conversation, answers ``("run", message)``."""

    def init(self, arg: tuple[str, dict[str, Any]]) -> None:
        self.session_id, self.config = arg
        self.memory: list[tuple[str, str]] = []

    async def handle_call(self, request: Any, from_: From) -> Any:
        match request:
            case ("run", message):
                # The model call runs in a supervised task so the server never blocks.
                task = await self.runtime.tasks.start(lambda: self.reply_to(message))
                reply = await task.join(timeout=30)
                self.memory.append((message, reply))
                return reply
            case "history":
                return list(self.memory)
        raise ValueError(f"unknown request {request!r}")

    async def reply_to(self, message: str) -> str:
        await asyncio.sleep(0)
        return f"[{self.session_id}] you said {message!r} ({len(self.memory) + 1} turns)"


SESSION = ChildSpec(AgentServer, id="agent")


async def start_agent_session(agent_name: str, user_id: str) -> str:
    session_id = f"{agent_name}-{user_id}"
    await DynamicSupervisor.start_child(
        "agent_supervisor", SESSION, arg=(session_id, {}), name=session_id
    )
    return session_id


async def main() -> None:
    async with Runtime() as rt:
        await rt.start_child(
            ChildSpec(DynamicSupervisor, DynamicSupervisorSpec(), name="agent_supervisor")
        )
        s1 = await start_agent_session("support", "user-1")
        s2 = await start_agent_session("support", "user-2")
        print(await rt.call(s1, ("run", "Help with order #1234")))
        print(await rt.call(s2, ("run", "Question about shipping")))
        print(await rt.call(s1, ("run", "Thanks!")))
        assert len(await rt.call(s1, "history")) == 2
        assert len(await rt.call(s2, "history")) == 1
        print("sessions:", [e.key for e in rt.registry.match("support-*")])


if __name__ == "__main__":
    asyncio.run(main())
