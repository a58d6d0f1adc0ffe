"""The manager's state in the Netsuke store: ``manager_agents``, ``manager_agent_events``."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from ..store import ManagerStateRepository, Store
from ._state import StoredAgent


class SqlStateStore:
    """A :class:`StateStore` on a :class:`~netsuke.store.Store` (SQLite or PostgreSQL)."""

    def __init__(self, store: Store, *, owns_store: bool = False) -> None:
        self._store = store
        self._repo = ManagerStateRepository(store.database)
        self._owns = owns_store

    @classmethod
    async def open(cls, url: str | None) -> SqlStateStore:
        store = await Store.open(url, migrate=True)
        return cls(store, owns_store=True)

    async def load(self) -> dict[str, StoredAgent]:
        out: dict[str, StoredAgent] = {}
        for row in await self._repo.load():
            row["updated_at"] = row["updated_at"].isoformat()
            out[row["agent_id"]] = StoredAgent(**row)
        return out

    async def save(self, agent: StoredAgent, event: dict[str, Any]) -> None:
        await self._repo.save(asdict(agent), event)

    async def history(self, agent_id: str, limit: int = 100) -> list[dict[str, Any]]:
        return await self._repo.history(agent_id, limit)

    async def forget(self, agent_id: str) -> None:
        await self._repo.forget(agent_id)

    async def close(self) -> None:
        if self._owns:
            await self._store.close()
