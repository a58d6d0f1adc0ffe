"""Conversations and their messages, stored in pydantic-ai's message format.

Each message is kept as the JSON that ``pydantic_ai.messages.ModelMessagesTypeAdapter``
writes for it, so ``history`` returns messages equal to those appended, tool calls and
returns included. Durability:

* ``append_turn`` returns only after the turn (its messages and its execution row) is
  committed. On SQLite, concurrent calls share one transaction (group commit); each caller
  still returns only after the commit that carried its turn, and a turn that fails (unknown
  session, bad execution) fails alone.
* ``open`` and ``delete`` are durable on return; reads see every turn whose call returned.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic_ai.messages import ModelMessage, ModelMessagesTypeAdapter
from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from ._engine import Database
from ._errors import NotFoundError, ValidationError
from ._group_commit import GroupCommitter
from ._models import Base, utcnow
from ._observe import METRICS, operation
from ._records import Conversation, Execution, Page, TurnReceipt
from ._validation import AGENT_NAME, check_limit

__all__ = ["ConversationRepository", "dump_messages", "load_messages"]

_conversations: Table = Base.metadata.tables["conversations"]
_messages: Table = Base.metadata.tables["messages"]
_executions: Table = Base.metadata.tables["executions"]


def dump_messages(messages: Sequence[ModelMessage]) -> list[tuple[str, str]]:
    """``(kind, json)`` for each message, in pydantic-ai's JSON format."""
    out: list[tuple[str, str]] = []
    for message in messages:
        # A one-element list keeps the adapter's settings (base64 bytes); strip its brackets.
        out.append((message.kind, ModelMessagesTypeAdapter.dump_json([message])[1:-1].decode()))
    return out


def load_messages(payloads: Sequence[str]) -> list[ModelMessage]:
    return ModelMessagesTypeAdapter.validate_json("[" + ",".join(payloads) + "]")


@dataclass(slots=True)
class _Turn:
    session_id: str
    payloads: builtins.list[tuple[str, str]]
    execution: dict[str, Any] | None


class ConversationRepository:
    """Conversations (session id, agent, owning user) and their message history."""

    def __init__(self, db: Database, *, group_commit: bool, max_batch: int = 256) -> None:
        self._db = db
        self._committer: GroupCommitter[_Turn, TurnReceipt] | None = (
            GroupCommitter(self._commit_turns, max_batch=max_batch) if group_commit else None
        )

    @property
    def group_commit(self) -> bool:
        return self._committer is not None

    async def close(self) -> None:
        if self._committer is not None:
            await self._committer.close()

    async def open(
        self, session_id: str, *, agent_name: str, user_id: str | None = None
    ) -> Conversation:
        """Get the conversation, creating it if new. A session belongs to one agent: opening
        it for another raises ``ValidationError(field="agent_name")``. Durable on return."""
        _check_session(session_id)
        if not AGENT_NAME.match(agent_name):
            raise ValidationError("agent_name", f"{agent_name!r} is not a valid agent name")
        if user_id is not None and not 0 < len(user_id) <= 200:
            raise ValidationError("user_id", "must be 1..200 characters")
        with operation("conversations", "open", session_id=session_id):
            for _ in range(2):
                try:
                    async with self._db.write() as conn:
                        row = await _find(conn, session_id)
                        if row is None:
                            now = utcnow()
                            values = {
                                "session_id": session_id,
                                "agent_name": agent_name,
                                "user_id": user_id,
                                "message_count": 0,
                                "created_at": now,
                                "updated_at": now,
                            }
                            await conn.execute(insert(_conversations).values(**values))
                            return Conversation.model_validate(values)
                except IntegrityError:  # created concurrently: read it on the second pass
                    continue
                if row["agent_name"] != agent_name:
                    raise ValidationError(
                        "agent_name", f"session {session_id!r} belongs to {row['agent_name']!r}"
                    )
                return _conversation(row)
            raise NotFoundError("conversation", session_id)  # pragma: no cover - deleted meanwhile

    async def get(self, session_id: str) -> Conversation:
        async with self._db.read() as conn:
            row = await _find(conn, session_id)
        if row is None:
            raise NotFoundError("conversation", session_id)
        return _conversation(row)

    async def list(
        self,
        *,
        agent_name: str | None = None,
        user_id: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[Conversation]:
        """Conversations newest first, filtered by agent and/or owning user."""
        limit = check_limit(limit)
        stmt = select(_conversations).order_by(_conversations.c.id.desc()).limit(limit + 1)
        if agent_name is not None:
            stmt = stmt.where(_conversations.c.agent_name == agent_name)
        if user_id is not None:
            stmt = stmt.where(_conversations.c.user_id == user_id)
        if cursor is not None:
            if not cursor.isdigit():
                raise ValidationError("cursor", "not a cursor returned by this listing")
            stmt = stmt.where(_conversations.c.id < int(cursor))
        with operation("conversations", "list"):
            async with self._db.read() as conn:
                rows = (await conn.execute(stmt)).mappings().all()
        items = [_conversation(r) for r in rows[:limit]]
        next_cursor = str(rows[limit - 1]["id"]) if len(rows) > limit else None
        return Page(items=items, next_cursor=next_cursor)

    async def delete(self, session_id: str) -> None:
        """Delete the conversation and its messages (executions are kept). Durable on return."""
        with operation("conversations", "delete", session_id=session_id):
            async with self._db.write() as conn:
                row = await _find(conn, session_id)
                if row is None:
                    raise NotFoundError("conversation", session_id)
                await conn.execute(
                    delete(_messages).where(_messages.c.conversation_id == row["id"])
                )
                await conn.execute(delete(_conversations).where(_conversations.c.id == row["id"]))

    async def append_turn(
        self,
        session_id: str,
        messages: Sequence[ModelMessage],
        execution: Execution | None = None,
    ) -> TurnReceipt:
        """Append a turn's new messages (and its execution row) to the conversation.

        Returns only after the turn is committed. The messages get consecutive positions after
        the conversation's last; the execution gets ``session_id`` if it has none. Raises
        ``NotFoundError`` for an unknown session (``open`` it first) and ``ValidationError``
        for an execution the database refuses (duplicate id, unknown parent)."""
        row = None
        if execution is not None:
            row = execution.model_dump()
            if row["session_id"] is None:
                row["session_id"] = session_id
        turn = _Turn(session_id, dump_messages(messages), row)
        with operation("conversations", "append_turn"):
            if self._committer is not None:
                return await self._committer.submit(turn)
            result = (await self._commit_turns([turn]))[0]
            if isinstance(result, BaseException):
                raise result
            return result

    async def history(
        self, session_id: str, *, limit: int | None = None
    ) -> builtins.list[ModelMessage]:
        """The conversation's messages in order; with ``limit``, only the last ``limit``."""
        stmt = (
            select(_messages.c.payload)
            .join(_conversations, _conversations.c.id == _messages.c.conversation_id)
            .where(_conversations.c.session_id == session_id)
        )
        if limit is not None:
            stmt = stmt.order_by(_messages.c.seq.desc()).limit(check_limit(limit))
        else:
            stmt = stmt.order_by(_messages.c.seq)
        with operation("conversations", "history"):
            async with self._db.read() as conn:
                payloads = list((await conn.execute(stmt)).scalars())
                if not payloads and await _find(conn, session_id) is None:
                    raise NotFoundError("conversation", session_id)
        if limit is not None:
            payloads.reverse()
        return load_messages(payloads)

    # -- the commit path ---------------------------------------------------------------------

    async def _commit_turns(
        self, turns: Sequence[_Turn]
    ) -> builtins.list[TurnReceipt | BaseException]:
        try:
            results = await self._commit_in_one(turns)
        except IntegrityError as exc:
            if len(turns) == 1:
                return [ValidationError("execution", f"refused by the database: {exc.orig}")]
            # One bad turn must not fail its neighbours: commit each on its own.
            results = []
            for turn in turns:
                results.extend(await self._commit_turns([turn]))
            return results
        except Exception as exc:
            return [exc] * len(turns)
        committed = sum(1 for r in results if isinstance(r, TurnReceipt))
        METRICS.turns_committed += committed
        METRICS.commit_batches += 1
        return results

    async def _commit_in_one(
        self, turns: Sequence[_Turn]
    ) -> builtins.list[TurnReceipt | BaseException]:
        results: builtins.list[TurnReceipt | BaseException] = []
        execution_rows: builtins.list[dict[str, Any]] = []
        message_rows: builtins.list[dict[str, Any]] = []
        now = utcnow()
        async with self._db.write() as conn:
            for turn in turns:
                count = len(turn.payloads)
                found = (
                    await conn.execute(
                        update(_conversations)
                        .where(_conversations.c.session_id == turn.session_id)
                        .values(
                            message_count=_conversations.c.message_count + count, updated_at=now
                        )
                        .returning(_conversations.c.id, _conversations.c.message_count)
                    )
                ).first()
                if found is None:
                    results.append(NotFoundError("conversation", turn.session_id))
                    continue
                conversation_id, total = found
                execution_id = None
                if turn.execution is not None:
                    execution_rows.append(turn.execution)
                    execution_id = turn.execution["id"]
                first = total - count
                for i, (kind, payload) in enumerate(turn.payloads):
                    message_rows.append(
                        {
                            "conversation_id": conversation_id,
                            "seq": first + i,
                            "kind": kind,
                            "payload": payload,
                            "execution_id": execution_id,
                            "created_at": now,
                        }
                    )
                results.append(
                    TurnReceipt(
                        session_id=turn.session_id,
                        first_seq=first,
                        last_seq=total - 1,
                        execution_id=execution_id,
                    )
                )
            if execution_rows:
                await conn.execute(insert(_executions), execution_rows)
            if message_rows:
                await conn.execute(insert(_messages), message_rows)
        return results


async def _find(conn: AsyncConnection, session_id: str) -> RowMapping | None:
    stmt = select(_conversations).where(_conversations.c.session_id == session_id)
    return (await conn.execute(stmt)).mappings().first()


def _conversation(row: Mapping[Any, Any]) -> Conversation:
    return Conversation.model_validate(dict(row))


def _check_session(session_id: str) -> None:
    if not 0 < len(session_id) <= 200 or not session_id.isprintable():
        raise ValidationError("session_id", "must be 1..200 printable characters")
