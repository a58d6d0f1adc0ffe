"""Function definitions for the sandbox, versioned and hashed.

``put`` is idempotent: the same content (code, schemas, limits, imports, description) as the
current version makes no new version; anything different makes the next one. ``sha256`` is
the hash of the code alone, so callers can find which versions ran a given code. Every version
is kept; each write is audited and durable on return. ``rollback`` makes a new version with an
old version's content (history only grows); ``delete`` removes a function and its versions.
"""

from __future__ import annotations

import builtins
import hashlib
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Table, insert, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from ._audit import write_audit
from ._definitions import FunctionDefinition, FunctionDraft, content_hash
from ._engine import Database
from ._errors import ConflictError, NotFoundError
from ._models import Base, utcnow
from ._observe import log, operation
from ._records import Page
from ._validation import check_limit, parse_model, validate_function
from ._versioned import Versioned

__all__ = ["FunctionRepository"]

_functions: Table = Base.metadata.tables["functions"]
_versions: Table = Base.metadata.tables["function_versions"]
_VERSIONED = Versioned(_functions, _versions, "function_id", "function")


class FunctionRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def put(
        self,
        draft: FunctionDraft | Mapping[str, Any],
        *,
        expected_version: int | None = None,
        actor: str | None = None,
    ) -> FunctionDefinition:
        """Create the function or add a version; unchanged content returns the current version.

        ``expected_version`` (optional) guards against a concurrent writer: if given and stale,
        ``ConflictError``; ``0`` means "must not exist yet"."""
        with operation("functions", "put") as span:
            draft = validate_function(parse_model(FunctionDraft, draft))
            return await self._save(draft, expected_version, actor, "function.put", span)

    async def rollback(
        self,
        name: str,
        to_version: int,
        *,
        expected_version: int | None = None,
        actor: str | None = None,
    ) -> FunctionDefinition:
        """Make a new current version with the content of ``to_version`` (``NotFoundError`` if
        it does not exist). Rolling back to content equal to the current version returns the
        current version unchanged. Audited as ``function.rollback``."""
        with operation("functions", "rollback", name=name) as span:
            old = await self.get(name, to_version)
            draft = FunctionDraft.model_validate(
                old.model_dump(include=set(FunctionDraft.model_fields))
            )
            return await self._save(draft, expected_version, actor, "function.rollback", span)

    async def delete(
        self, name: str, *, expected_version: int | None = None, actor: str | None = None
    ) -> None:
        """Delete a function and all its versions (``NotFoundError`` if absent;
        ``ConflictError`` if ``expected_version`` is given and stale). Executions that ran it
        keep their records. Audited as ``function.delete``."""
        with operation("functions", "delete", name=name):
            async with self._db.write() as conn:
                head = await _head(conn, name)
                if head is None:
                    raise NotFoundError("function", name)
                if expected_version is not None and head["current_version"] != expected_version:
                    raise ConflictError(name, expected_version, head["current_version"])
                await conn.execute(_versions.delete().where(_versions.c.function_id == head["id"]))
                await conn.execute(_functions.delete().where(_functions.c.id == head["id"]))
                await write_audit(
                    conn,
                    actor=actor,
                    action="function.delete",
                    target=f"function:{name}",
                    details={"version": head["current_version"]},
                )
        log.info("store.function.deleted", name=name)

    async def _save(
        self,
        draft: FunctionDraft,
        expected_version: int | None,
        actor: str | None,
        action: str,
        span: Any,
    ) -> FunctionDefinition:
        sha = hashlib.sha256(draft.code.encode()).hexdigest()
        content = draft.model_dump(mode="json", exclude={"name"})
        fingerprint = content_hash(content)
        span.set_attribute("netsuke.store.name", draft.name)
        try:
            async with self._db.write() as conn:
                head = await _head(conn, draft.name)
                current_version = head["current_version"] if head else 0
                if expected_version is not None and expected_version != current_version:
                    raise ConflictError(draft.name, expected_version, current_version)
                now = utcnow()
                if head is None:
                    function_id = (
                        await conn.execute(
                            insert(_functions)
                            .values(
                                name=draft.name,
                                current_version=1,
                                created_at=now,
                                updated_at=now,
                            )
                            .returning(_functions.c.id)
                        )
                    ).scalar_one()
                    version = 1
                else:
                    function_id = head["id"]
                    row = await _version_row(conn, function_id, current_version)
                    if row is not None and row["content_hash"] == fingerprint:
                        return _definition(draft.name, row)
                    version = current_version + 1
                    changed = await conn.execute(
                        update(_functions)
                        .where(
                            (_functions.c.id == function_id)
                            & (_functions.c.current_version == current_version)
                        )
                        .values(current_version=version, updated_at=now)
                    )
                    if changed.rowcount != 1:
                        raise ConflictError(draft.name, current_version, current_version + 1)
                new_row = {
                    "function_id": function_id,
                    "version": version,
                    **content,
                    "sha256": sha,
                    "content_hash": fingerprint,
                    "created_by": actor,
                    "created_at": now,
                }
                await conn.execute(insert(_versions).values(**new_row))
                await write_audit(
                    conn,
                    actor=actor,
                    action=action,
                    target=f"function:{draft.name}",
                    details={"version": version, "sha256": sha},
                )
        except IntegrityError:  # a concurrent create of the same name won
            raise ConflictError(draft.name, expected_version, 1) from None
        log.info("store.function.saved", name=draft.name, version=version, sha256=sha)
        return _definition(draft.name, new_row)

    async def get(self, name: str, version: int | None = None) -> FunctionDefinition:
        with operation("functions", "get", name=name):
            row = await _VERSIONED.read(self._db, name, version)
        return _definition(name, row)

    async def versions(self, name: str) -> builtins.list[FunctionDefinition]:
        """Every version, oldest first."""
        with operation("functions", "versions", name=name):
            rows = await _VERSIONED.read_all(self._db, name)
        return [_definition(name, r) for r in rows]

    async def find_by_sha256(self, sha256: str) -> builtins.list[FunctionDefinition]:
        """Every stored version whose code hashes to ``sha256``."""
        stmt = (
            select(_functions.c.name, _versions)
            .join(_versions, _versions.c.function_id == _functions.c.id)
            .where(_versions.c.sha256 == sha256)
            .order_by(_functions.c.name, _versions.c.version)
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        return [_definition(r["name"], r) for r in rows]

    async def list(
        self, *, limit: int = 50, cursor: str | None = None, name_prefix: str | None = None
    ) -> Page[FunctionDefinition]:
        """Current versions ordered by name."""
        limit = check_limit(limit)
        stmt = (
            select(_functions.c.name, _versions)
            .join(
                _versions,
                (_versions.c.function_id == _functions.c.id)
                & (_versions.c.version == _functions.c.current_version),
            )
            .order_by(_functions.c.name)
            .limit(limit + 1)
        )
        if cursor is not None:
            stmt = stmt.where(_functions.c.name > cursor)
        if name_prefix is not None:
            stmt = stmt.where(_functions.c.name.startswith(name_prefix, autoescape=True))
        with operation("functions", "list"):
            async with self._db.read() as conn:
                rows = (await conn.execute(stmt)).mappings().all()
        items = [_definition(r["name"], r) for r in rows[:limit]]
        return Page(items=items, next_cursor=items[-1].name if len(rows) > limit else None)


async def _head(conn: AsyncConnection, name: str) -> RowMapping | None:
    return await _VERSIONED.head(conn, name)


async def _version_row(conn: AsyncConnection, function_id: int, version: int) -> RowMapping | None:
    return await _VERSIONED.version_row(conn, function_id, version)


def _definition(name: str, row: Mapping[Any, Any]) -> FunctionDefinition:
    fields = FunctionDefinition.model_fields.keys() - {"name"}
    return FunctionDefinition.model_validate({"name": name, **{f: row[f] for f in fields}})
