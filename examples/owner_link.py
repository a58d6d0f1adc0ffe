"""Seed 001, in Netsuke: named agents, linked to an owner, found through the registry.

A web socket handler (here: a scope) owns a chat agent; when the handler ends, the agent is
gone too and its name is free again. A session agent with ``owner_policy="hibernate"`` instead
survives its owner with its memory, and a new owner reconnects to it.

    python examples/owner_link.py
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from netsuke import Runtime
from netsuke.agents import AgentConfig, Agents
from netsuke.store import Store


async def main() -> None:
    db = Path(tempfile.mkdtemp()) / "netsuke.db"
    async with Runtime() as rt, Store.open(f"sqlite+aiosqlite:///{db}") as store:
        agents = await Agents.start(rt, store)

        # Pattern 1: a simple named agent
        pid = await agents.start_agent("my-chat-agent", AgentConfig(name="chat", model="offline"))
        result = await agents.run("my-chat-agent", "Hello!")
        print(result)
        assert agents.whereis("my-chat-agent") == pid
        await agents.stop_agent("my-chat-agent")

        # Pattern 2: an agent linked to its owner (a LiveView, a web socket handler)
        user_id = 42
        try:
            async with rt.scope() as liveview:
                agent_name = f"chat:user:{user_id}"
                agent_pid = await agents.start_agent(
                    agent_name,
                    AgentConfig(name="chat", system_prompt=f"You help user {user_id}"),
                    owner=liveview.pid,  # <- linked to the owner
                )
                print(await agents.run(agent_name, "Hello!"))
                raise ConnectionError("the browser tab closed")
        except ConnectionError:
            pass
        await rt.wait_exit(agent_pid, timeout=5)
        print("agent stopped with its owner:", agents.whereis(agent_name) is None)

        # Pattern 3: session-based agents; reconnect to an existing one
        config = AgentConfig(name="chat", owner_policy="hibernate")
        async with rt.scope() as first_tab:
            sid, agent_pid = await agents.start_session(
                "chat", "session-7", config, owner=first_tab.pid
            )
            await agents.run(sid, "My name is Ada")
        async with rt.scope() as second_tab:
            sid, same_pid = await agents.start_session(
                "chat", "session-7", config, owner=second_tab.pid
            )
            print("reconnected:", same_pid == agent_pid, "-", await agents.run(sid, "Who am I?"))

        # Registry operations
        for u in (1, 2, 123):
            await agents.start_agent(f"chat:user:{u}", AgentConfig(name="chat"))
        print("list:", agents.list_agents())
        print("count:", agents.count_agents())
        print("find:", agents.find_agents("user:123"))
        print("stopped:", await agents.stop_agents_matching("user:123"))


if __name__ == "__main__":
    asyncio.run(main())
