"""The AgentManager's state tables: the last state of each package agent and its history."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Table, delete, insert, select, update

from ._engine import Database
from ._models import Base, utcnow

__all__ = ["ManagerStateRepository"]

_agents: Table = Base.metadata.tables["manager_agents"]
_events: Table = Base.metadata.tables["manager_agent_events"]


class ManagerStateRepository:
    """Rows of ``manager_agents`` as dicts; ``save`` upserts and appends an event atomically."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def load(self) -> list[dict[str, Any]]:
        async with self._db.read() as conn:
            rows = (await conn.execute(select(_agents))).mappings().all()
        return [dict(r) for r in rows]

    async def save(self, agent: dict[str, Any], event: dict[str, Any]) -> None:
        values = {**agent, "updated_at": _parse(agent.get("updated_at"))}
        async with self._db.write() as conn:
            done = await conn.execute(
                update(_agents).where(_agents.c.agent_id == agent["agent_id"]).values(**values)
            )
            if done.rowcount == 0:
                await conn.execute(insert(_agents).values(**values))
            await conn.execute(
                insert(_events).values(
                    agent_id=agent["agent_id"],
                    status=agent["status"],
                    at=values["updated_at"],
                    details=event,
                )
            )

    async def history(self, agent_id: str, limit: int = 100) -> list[dict[str, Any]]:
        async with self._db.read() as conn:
            rows = (
                await conn.execute(
                    select(_events.c.details)
                    .where(_events.c.agent_id == agent_id)
                    .order_by(_events.c.id.desc())
                    .limit(limit)
                )
            ).all()
        return [dict(r[0]) for r in reversed(rows)]

    async def forget(self, agent_id: str) -> None:
        async with self._db.write() as conn:
            await conn.execute(delete(_agents).where(_agents.c.agent_id == agent_id))


def _parse(value: Any) -> datetime:
    if isinstance(value, str):
        return datetime.fromisoformat(value)
    return utcnow()
