"""Reads shared by the versioned repositories (agents, functions).

A versioned entity is a head row (``name``, ``current_version``) in ``heads`` and one row per
version in ``versions``, linked by ``fk``. Both repositories read them the same way; only the
tables, the link column and the kind named in ``NotFoundError`` differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Table, select
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from ._engine import Database
from ._errors import NotFoundError

__all__ = ["Versioned"]


@dataclass(frozen=True, slots=True)
class Versioned:
    heads: Table
    versions: Table
    fk: str
    kind: str

    async def head(self, conn: AsyncConnection, name: str) -> RowMapping | None:
        stmt = select(self.heads).where(self.heads.c.name == name)
        return (await conn.execute(stmt)).mappings().first()

    async def version_row(
        self, conn: AsyncConnection, head_id: int, version: int
    ) -> RowMapping | None:
        v = self.versions
        stmt = select(v).where((v.c[self.fk] == head_id) & (v.c.version == version))
        return (await conn.execute(stmt)).mappings().first()

    async def read(self, db: Database, name: str, version: int | None) -> RowMapping:
        """The current version's row, or ``version``'s. ``NotFoundError`` if either is missing."""
        async with db.read() as conn:
            head = await self.head(conn, name)
            if head is None:
                raise NotFoundError(self.kind, name)
            row = await self.version_row(conn, head["id"], version or head["current_version"])
        if row is None:
            raise NotFoundError(f"{self.kind} version", f"{name}@{version}")
        return row

    async def read_all(self, db: Database, name: str) -> Sequence[RowMapping]:
        """Every version's row, oldest first. ``NotFoundError`` if ``name`` is missing."""
        async with db.read() as conn:
            head = await self.head(conn, name)
            if head is None:
                raise NotFoundError(self.kind, name)
            v = self.versions
            stmt = select(v).where(v.c[self.fk] == head["id"]).order_by(v.c.version)
            return (await conn.execute(stmt)).mappings().all()
