"""Seed 000, in Netsuke: an agent supervisor, named agents, per-user sessions.

Each agent is a supervised process; its turns run as supervised tasks; each user's session has
its own memory, committed to the store before each reply. The offline model answers (no
network, no key) and shows that each session remembers only its own conversation.

    python examples/sessions.py
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from pydantic_ai.messages import ModelRequest, UserPromptPart

from netsuke import Runtime
from netsuke.agents import AgentConfig, Agents, PromptContext
from netsuke.store import Store


def custom_system_prompt(ctx: PromptContext) -> str:
    return f"You help {ctx.user or 'everyone'}. It is {ctx.now:%H:%M} UTC."


initial_memory = [ModelRequest(parts=[UserPromptPart("Hi, I like salmon.")])]


async def main() -> None:
    db = Path(tempfile.mkdtemp()) / "netsuke.db"
    # Start the registry and the supervisor (the node and the agent system)
    async with Runtime() as rt, Store.open(f"sqlite+aiosqlite:///{db}") as store:
        supervisor = await Agents.start(rt, store)

        # Create agent configuration
        config = AgentConfig(
            name="assistant", initial_memory=initial_memory, system_prompt=custom_system_prompt
        )

        # Creating a single agent
        pid = await supervisor.start_agent("sushi-bot", config)
        response = await supervisor.run("sushi-bot", "How do I make nigiri?")
        print(f"Agent response: {response}")

        # Managing user sessions
        session_id, _pid = await supervisor.start_session("travel-assistant", "user-123", config)
        response = await supervisor.run(session_id, "I want to plan a trip to Japan")
        print(f"Travel: {response}")

        # Concurrent user sessions, isolated state
        session_1, _ = await supervisor.start_session("support", "user-1", config)
        session_2, _ = await supervisor.start_session("support", "user-2", config)
        response_1, response_2 = await asyncio.gather(
            supervisor.run(session_1, "Help with order #1234"),
            supervisor.run(session_2, "Question about shipping"),
        )
        print(f"user-1: {response_1}")
        print(f"user-2: {response_2}")
        again = await supervisor.run(session_1, "Any news?")
        assert "#1234" in again
        assert "shipping" not in again
        print(f"user-1 again: {again}")

        # Fault tolerance: the supervisor restarts a crashed session with its memory
        rt.exit(supervisor.whereis(session_1), RuntimeError("crash"))  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
        print(f"after a crash: {await supervisor.run(session_1, 'Still there?')}")
        print("sessions:", [name for name, _ in supervisor.list_agents()], "sushi-bot pid:", pid)


if __name__ == "__main__":
    asyncio.run(main())
