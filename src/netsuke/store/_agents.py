"""Agent definitions, every change kept as a new version.

Rules:

* ``create`` makes version 1; a taken name raises ``AlreadyExistsError``.
* ``update`` names the version it read (``expected_version``); a stale one raises
  ``ConflictError`` carrying the current version, and nothing is written. Content equal to the
  current version's makes no new version (the current one is returned).
* ``rollback(name, v)`` writes a new version whose content is version ``v``'s; history is never
  rewritten.
* Delegates must name existing agents (or the agent itself), checked in the writing
  transaction.
* Every change is audited in its own transaction and is durable when the call returns.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Table, func, insert, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from ._audit import write_audit
from ._definitions import AGENT_CONTENT_FIELDS, AgentDefinition, AgentDraft
from ._engine import Database
from ._errors import (
    AlreadyExistsError,
    ConflictError,
    DefinitionFileError,
    NotFoundError,
    ValidationError,
)
from ._models import Base, utcnow
from ._observe import log, operation
from ._records import Page
from ._validation import check_limit, is_secret_config_key, parse_model, validate_agent
from ._versioned import Versioned

__all__ = ["AgentRepository", "SyncResult"]

_agents: Table = Base.metadata.tables["agents"]
_versions: Table = Base.metadata.tables["agent_versions"]
_VERSIONED = Versioned(_agents, _versions, "agent_id", "agent")


class SyncResult(dict[str, builtins.list[str]]):
    """Names by outcome: ``created``, ``updated``, ``unchanged``."""

    def __init__(self) -> None:
        super().__init__(created=[], updated=[], unchanged=[])


class AgentRepository:
    """Versioned agent definitions. Returns ``AgentDefinition`` models, never ORM rows."""

    def __init__(self, db: Database) -> None:
        self._db = db

    # -- writes -----------------------------------------------------------------------------

    async def create(
        self, draft: AgentDraft | Mapping[str, Any], *, actor: str | None = None, comment: str = ""
    ) -> AgentDefinition:
        """Store a new agent as version 1. Durable on return."""
        with operation("agents", "create") as span:
            draft = validate_agent(parse_model(AgentDraft, draft))
            span.set_attribute("netsuke.store.name", draft.name)
            try:
                async with self._db.write() as conn:
                    current = await _head(conn, draft.name)
                    if current is not None:
                        raise AlreadyExistsError(draft.name, current["current_version"])
                    result = await _save(conn, None, draft, actor=actor, comment=comment)
            except IntegrityError:
                taken = await self._head_version(draft.name)
                raise AlreadyExistsError(draft.name, taken or 0) from None
        log.info("store.agent.created", name=draft.name, version=result.version, actor=actor)
        return result

    async def update(
        self,
        draft: AgentDraft | Mapping[str, Any],
        *,
        expected_version: int,
        actor: str | None = None,
        comment: str = "",
    ) -> AgentDefinition:
        """Store ``draft`` as the next version of the agent it names, if ``expected_version``
        is still current (else ``ConflictError``). Unchanged content: no new version."""
        with operation("agents", "update") as span:
            draft = validate_agent(parse_model(AgentDraft, draft))
            span.set_attribute("netsuke.store.name", draft.name)
            async with self._db.write() as conn:
                current = await _head(conn, draft.name)
                if current is None:
                    raise NotFoundError("agent", draft.name)
                if current["current_version"] != expected_version:
                    raise ConflictError(draft.name, expected_version, current["current_version"])
                result = await _save(conn, current, draft, actor=actor, comment=comment)
        return result

    async def rollback(
        self,
        name: str,
        to_version: int,
        *,
        expected_version: int | None = None,
        actor: str | None = None,
    ) -> AgentDefinition:
        """Write a new version with the content of ``to_version``. ``expected_version``, when
        given, must be current (else ``ConflictError``). Durable on return."""
        with operation("agents", "rollback", name=name, version=to_version):
            async with self._db.write() as conn:
                current = await _head(conn, name)
                if current is None:
                    raise NotFoundError("agent", name)
                if expected_version is not None and current["current_version"] != expected_version:
                    raise ConflictError(name, expected_version, current["current_version"])
                old = await _version_row(conn, current["id"], to_version)
                if old is None:
                    raise NotFoundError("agent version", f"{name}@{to_version}")
                draft = _definition(name, old).draft()
                result = await _save(
                    conn,
                    current,
                    draft,
                    actor=actor,
                    comment=f"rollback to version {to_version}",
                    action="agent.rollback",
                )
        return result

    async def delete(self, name: str, *, expected_version: int, actor: str | None = None) -> None:
        """Delete an agent and all its versions. Refused while another agent delegates to it
        (``ValidationError(field="name")``) or if ``expected_version`` is stale."""
        with operation("agents", "delete", name=name):
            async with self._db.write() as conn:
                current = await _head(conn, name)
                if current is None:
                    raise NotFoundError("agent", name)
                if current["current_version"] != expected_version:
                    raise ConflictError(name, expected_version, current["current_version"])
                users = await _delegating_to(conn, name)
                if users:
                    raise ValidationError("name", f"delegated to by {', '.join(users)}")
                await conn.execute(_versions.delete().where(_versions.c.agent_id == current["id"]))
                await conn.execute(_agents.delete().where(_agents.c.id == current["id"]))
                await write_audit(
                    conn,
                    actor=actor,
                    action="agent.delete",
                    target=f"agent:{name}",
                    details={"version": expected_version},
                )

    async def sync(
        self,
        drafts: Sequence[AgentDraft | Mapping[str, Any]],
        *,
        actor: str | None = None,
        comment: str = "sync",
        sources: Sequence[str] | None = None,
    ) -> SyncResult:
        """Make the stored agents match ``drafts`` in one transaction (all or nothing).

        Each draft creates its agent or, if its content differs, adds a version; equal content
        adds nothing, so a repeated sync is a no-op. Delegates may name agents of the same
        batch. Agents absent from ``drafts`` are left alone. With ``sources`` (one label per
        draft, e.g. its file), an error is a ``DefinitionFileError`` naming the source."""
        with operation("agents", "sync", count=len(drafts)):
            checked = [validate_agent(parse_model(AgentDraft, d)) for d in drafts]
            names = [d.name for d in checked]
            for i, name in enumerate(names):
                if name in names[:i]:
                    raise ValidationError("name", f"{name!r} is defined twice")
            result = SyncResult()
            async with self._db.write() as conn:
                for i, draft in enumerate(checked):
                    current = await _head(conn, draft.name)
                    before = current["current_version"] if current else None
                    try:
                        saved = await _save(
                            conn, current, draft, actor=actor, comment=comment, batch=set(names)
                        )
                    except ValidationError as exc:
                        if sources is None:
                            raise
                        raise DefinitionFileError(sources[i], exc.field, exc.reason) from None
                    outcome = (
                        "created"
                        if before is None
                        else "unchanged"
                        if saved.version == before
                        else "updated"
                    )
                    result[outcome].append(draft.name)
        return result

    # -- reads ------------------------------------------------------------------------------

    async def get(self, name: str, version: int | None = None) -> AgentDefinition:
        """The current version, or ``version``. ``NotFoundError`` if either is missing."""
        with operation("agents", "get", name=name):
            row = await _VERSIONED.read(self._db, name, version)
        return _definition(name, row)

    async def versions(self, name: str) -> builtins.list[AgentDefinition]:
        """Every version, oldest first."""
        with operation("agents", "versions", name=name):
            rows = await _VERSIONED.read_all(self._db, name)
        return [_definition(name, r) for r in rows]

    async def exists(self, name: str) -> bool:
        async with self._db.read() as conn:
            return await _head(conn, name) is not None

    async def list(
        self,
        *,
        limit: int = 50,
        cursor: str | None = None,
        capability: str | None = None,
        model: str | None = None,
        name_prefix: str | None = None,
    ) -> Page[AgentDefinition]:
        """Current versions ordered by name. Filters: an exact ``capability``; ``model`` exact
        or, ending in ``:``, a provider prefix; ``name_prefix``."""
        limit = check_limit(limit)
        stmt = (
            select(_agents.c.name, _versions)
            .join(
                _versions,
                (_versions.c.agent_id == _agents.c.id)
                & (_versions.c.version == _agents.c.current_version),
            )
            .order_by(_agents.c.name)
            .limit(limit + 1)
        )
        if cursor is not None:
            stmt = stmt.where(_agents.c.name > cursor)
        if capability is not None:
            stmt = stmt.where(
                _agents.c.capabilities_index.contains(f" {capability} ", autoescape=True)
            )
        if model is not None:
            stmt = stmt.where(
                _agents.c.model.startswith(model, autoescape=True)
                if model.endswith(":")
                else _agents.c.model == model
            )
        if name_prefix is not None:
            stmt = stmt.where(_agents.c.name.startswith(name_prefix, autoescape=True))
        with operation("agents", "list"):
            async with self._db.read() as conn:
                rows = (await conn.execute(stmt)).mappings().all()
        items = [_definition(r["name"], r) for r in rows[:limit]]
        return Page(items=items, next_cursor=items[-1].name if len(rows) > limit else None)

    async def count(self) -> int:
        async with self._db.read() as conn:
            return int((await conn.execute(select(func.count()).select_from(_agents))).scalar_one())

    async def _head_version(self, name: str) -> int | None:
        async with self._db.read() as conn:
            head = await _head(conn, name)
        return None if head is None else int(head["current_version"])


# -- helpers (inside a transaction) -----------------------------------------------------------


async def _head(conn: AsyncConnection, name: str) -> RowMapping | None:
    return await _VERSIONED.head(conn, name)


async def _version_row(conn: AsyncConnection, agent_id: int, version: int) -> RowMapping | None:
    return await _VERSIONED.version_row(conn, agent_id, version)


async def _delegating_to(conn: AsyncConnection, name: str) -> builtins.list[str]:
    rows = await conn.execute(
        select(_agents.c.name, _versions.c.delegates).join(
            _versions,
            (_versions.c.agent_id == _agents.c.id)
            & (_versions.c.version == _agents.c.current_version),
        )
    )
    return sorted(n for n, delegates in rows if name in delegates and n != name)


async def _check_delegates(conn: AsyncConnection, draft: AgentDraft, batch: Iterable[str]) -> None:
    wanted = set(draft.delegates) - {draft.name} - set(batch)
    if not wanted:
        return
    found = set(
        (await conn.execute(select(_agents.c.name).where(_agents.c.name.in_(wanted)))).scalars()
    )
    for i, delegate in enumerate(draft.delegates):
        if delegate in wanted and delegate not in found:
            raise ValidationError(f"delegates[{i}]", f"no agent named {delegate!r}")


async def _save(
    conn: AsyncConnection,
    current: RowMapping | None,
    draft: AgentDraft,
    *,
    actor: str | None,
    comment: str,
    batch: Iterable[str] = (),
    action: str | None = None,
) -> AgentDefinition:
    """Write ``draft`` as the next version (or version 1) unless its content is current."""
    await _check_delegates(conn, draft, batch)
    fingerprint = draft.fingerprint()
    now = utcnow()
    capabilities_index = " " + "".join(f"{c} " for c in draft.capabilities)
    if current is None:
        version = 1
        agent_id = (
            await conn.execute(
                insert(_agents)
                .values(
                    name=draft.name,
                    current_version=1,
                    model=draft.model,
                    capabilities_index=capabilities_index,
                    created_at=now,
                    updated_at=now,
                )
                .returning(_agents.c.id)
            )
        ).scalar_one()
    else:
        agent_id = current["id"]
        head = await _version_row(conn, agent_id, current["current_version"])
        if head is not None and head["content_hash"] == fingerprint:
            return _definition(draft.name, head)
        version = current["current_version"] + 1
        changed = await conn.execute(
            update(_agents)
            .where(
                (_agents.c.id == agent_id)
                & (_agents.c.current_version == current["current_version"])
            )
            .values(
                current_version=version,
                model=draft.model,
                capabilities_index=capabilities_index,
                updated_at=now,
            )
        )
        if changed.rowcount != 1:  # a concurrent writer got there between our read and write
            latest = await _head(conn, draft.name)
            raise ConflictError(
                draft.name,
                current["current_version"],
                latest["current_version"] if latest else 0,
            )
    row = {
        "agent_id": agent_id,
        "version": version,
        **draft.content(),
        "content_hash": fingerprint,
        "comment": comment,
        "created_by": actor,
        "created_at": now,
    }
    await conn.execute(insert(_versions).values(**row))
    await write_audit(
        conn,
        actor=actor,
        action=action or ("agent.create" if version == 1 else "agent.update"),
        target=f"agent:{draft.name}",
        details={"version": version, "comment": comment} if comment else {"version": version},
    )
    return _definition(draft.name, row)


def _definition(name: str, row: Mapping[Any, Any]) -> AgentDefinition:
    data = {field: row[field] for field in AGENT_CONTENT_FIELDS}
    config = data.get("config")
    if isinstance(config, dict) and any(is_secret_config_key(str(k)) for k in config):
        # Written before secrets were refused: never served, never used (see _validation).
        data["config"] = {k: v for k, v in config.items() if not is_secret_config_key(str(k))}
    return AgentDefinition.model_validate(
        {
            "name": name,
            **data,
            "version": row["version"],
            "content_hash": row["content_hash"],
            "comment": row["comment"],
            "created_by": row["created_by"],
            "created_at": row["created_at"],
        }
    )
