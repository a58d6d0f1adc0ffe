"""Where the manager keeps agent states and history (the seed's "Agent State DB").

:class:`StateStore` is the interface; :class:`MemoryStateStore` the embedded one (lost with the
process); :class:`SqlStateStore` (``_sql_state.py``) writes the store's ``manager_agents`` and
``manager_agent_events`` tables, so a restarted manager knows what was running.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class StoredAgent:
    agent_id: str
    status: str
    desired: str
    pid: int | None
    restarts: int
    exit_code: int | None
    exit_signal: str | None
    updated_at: str


class StateStore(Protocol):
    async def load(self) -> dict[str, StoredAgent]: ...

    async def save(self, agent: StoredAgent, event: dict[str, Any]) -> None: ...

    async def history(self, agent_id: str, limit: int = 100) -> list[dict[str, Any]]: ...

    async def forget(self, agent_id: str) -> None: ...

    async def close(self) -> None: ...


class MemoryStateStore:
    def __init__(self) -> None:
        self.agents: dict[str, StoredAgent] = {}
        self.events: list[tuple[str, dict[str, Any]]] = []

    async def load(self) -> dict[str, StoredAgent]:
        return dict(self.agents)

    async def save(self, agent: StoredAgent, event: dict[str, Any]) -> None:
        self.agents[agent.agent_id] = agent
        self.events.append((agent.agent_id, event))

    async def history(self, agent_id: str, limit: int = 100) -> list[dict[str, Any]]:
        return [e for a, e in self.events if a == agent_id][-limit:]

    async def forget(self, agent_id: str) -> None:
        self.agents.pop(agent_id, None)

    async def close(self) -> None:
        pass
