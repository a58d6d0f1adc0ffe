"""Conversations and their messages, stored in pydantic-ai's message format.

Each message is kept as the JSON that ``pydantic_ai.messages.ModelMessagesTypeAdapter``
writes for it, so ``history`` returns messages equal to those appended, tool calls and
returns included. Durability:

* ``append_turn`` returns only after the turn (its messages and its execution row) is
  committed. With group commit (the default) concurrent calls share one transaction; each
  caller still returns only after the commit that carried its turn, and a turn that fails
  (unknown session, bad execution) fails alone.
* ``open`` and ``delete`` are durable on return; reads see every turn whose call returned.

Fencing: ``open(..., claim=True)`` makes the caller the session's new *incarnation* (the
conversation row's ``incarnation`` goes up by one, atomically, and is returned on the
``Conversation``). A turn appended with ``incarnation=n`` commits only while the row still
holds ``n``; a turn of a superseded incarnation fails with ``FencedError`` and writes nothing.
The agents layer claims the session whenever a server process starts hosting it, before it
loads the history, so a turn still running in a killed predecessor can never land behind its
successor's back.

Ownership across nodes: a claim records the claiming node and its incarnation with the epoch,
and is refused (``SessionOwnedError``) while another node that the liveness policy deems live
holds the session (see ``_ownership``). The repository's node and policy default to this
process (``local_node()``) and ``OnlySelfLive``; ``set_ownership`` replaces them.

Owner links (migration 0014): each claim also records the claiming process's *owner*
(``owner_pid``: the pid of the process the session is linked to, a browser's socket or a
request, in the cluster codec's encoding), in the claim's own statement, so it costs no
extra write; ``set_owner_pid`` records an owner attached later and ``set_host_state(...,
clear_owner=True)`` clears it with the owner's exit. A survivor that takes the session over
reads it and monitors that pid again. Fenced like the host state: written only at the epoch
of the writer's claim.

Request ids: a turn appended with ``request=(key, body hash, reply)`` stores that reply in its
own transaction; ``find_request`` reads it back, and a second turn with the same key fails
with ``DuplicateRequestError``. Rows live as long as the conversation (``delete`` removes
them) unless ``forget_requests`` drops older ones.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from datetime import datetime
from types import EllipsisType
from typing import Any

from pydantic import ConfigDict, TypeAdapter
from pydantic_ai.messages import ModelMessage, ModelMessagesTypeAdapter
from sqlalchemy import Table, delete, func, insert, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from ._engine import Database
from ._errors import NotFoundError, SessionOwnedError, StoreClosedError, ValidationError
from ._models import Base, utcnow
from ._observe import METRICS, log, operation
from ._ownership import LivenessPolicy, NodeIdentity, OnlySelfLive, local_node
from ._records import Conversation, Execution, Page, TurnReceipt, TurnRequest
from ._turn_writers import (
    EXEC_COLUMNS,
    AuditValues,
    RequestValues,
    Turn,
    TurnWriter,
    make_turn_writer,
)
from ._validation import AGENT_NAME, check_limit

__all__ = [
    "REQUEST_KEY_MAX",
    "ConversationRepository",
    "check_request_key",
    "dump_messages",
    "load_messages",
]

_conversations: Table = Base.metadata.tables["conversations"]
_messages: Table = Base.metadata.tables["messages"]
_requests: Table = Base.metadata.tables["turn_requests"]
RESTART_TYPES = ("permanent", "transient", "temporary")
HOST_STATES = ("active", "evicted", "stopped")
OWNER_PID_MAX = 300
_CLAIM_TRIES = 50  # compare-and-set rounds lost to other claimants of this node before giving up
_EXEC_KEYS = frozenset(EXEC_COLUMNS)


# One message with the settings of ``ModelMessagesTypeAdapter`` (bytes as base64), so each
# stored message is exactly one element of what that adapter writes for a history.
_MessageAdapter: TypeAdapter[ModelMessage] = TypeAdapter(
    ModelMessage, config=ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")
)


_to_json = _MessageAdapter.serializer.to_json


def dump_messages(messages: Sequence[ModelMessage]) -> list[tuple[str, str]]:
    """``(kind, json)`` for each message, in pydantic-ai's JSON format."""
    return [(message.kind, _to_json(message).decode()) for message in messages]


def load_messages(payloads: Sequence[str]) -> list[ModelMessage]:
    return ModelMessagesTypeAdapter.validate_json("[" + ",".join(payloads) + "]")


class ConversationRepository:
    """Conversations (session id, agent, owning user) and their message history."""

    def __init__(
        self,
        db: Database,
        *,
        group_commit: bool,
        max_batch: int = 256,
        inline_commit_ms: float = 2.0,
    ) -> None:
        self._db = db
        self._group_commit = group_commit
        self._writer = make_turn_writer(
            db, max_batch=max_batch if group_commit else 1, inline_commit_ms=inline_commit_ms
        )
        self._closed = False
        self._node = local_node()
        self._liveness: LivenessPolicy = OnlySelfLive(self._node)

    @property
    def node(self) -> NodeIdentity:
        """The node this repository claims sessions for."""
        return self._node

    @property
    def liveness(self) -> LivenessPolicy:
        return self._liveness

    def set_ownership(
        self, node: NodeIdentity | None = None, liveness: LivenessPolicy | None = None
    ) -> None:
        """Claim sessions as ``node`` (default: unchanged), judging other owners with
        ``liveness`` (default: ``OnlySelfLive`` of the node)."""
        if node is not None:
            self._node = node
        self._liveness = liveness if liveness is not None else OnlySelfLive(self._node)

    @property
    def group_commit(self) -> bool:
        return self._group_commit

    @property
    def writer(self) -> TurnWriter:
        """The turn writer (the audit log commits its records through it too)."""
        return self._writer

    async def close(self) -> None:
        """Commit the turns already queued, then release the turn writer."""
        self._closed = True
        await self._writer.close()

    async def open(
        self,
        session_id: str,
        *,
        agent_name: str,
        user_id: str | None = None,
        claim: bool = False,
        node: NodeIdentity | None = None,
        restart: str | None = None,
        owner_pid: str | EllipsisType | None = ...,
    ) -> Conversation:
        """Get the conversation, creating it if new. A session belongs to one agent: opening
        it for another raises ``ValidationError(field="agent_name")``. Durable on return.

        ``claim``: make the caller the session's owner at the next epoch (see the module
        documentation and ``_ownership``); the returned ``incarnation`` is the epoch to append
        turns with. ``SessionOwnedError`` when a live other node holds it. ``node``: claim as
        this node instead of the repository's (tests and tools). A claim also records
        ``restart`` (the agent's OTP restart type, ``None``: ``transient``) and marks the
        session ``active`` (hosted), in the same statement (migration 0013), and, when given,
        ``owner_pid``: the claiming process's owner (``None``: none; omitted: the stored one
        is kept; migration 0014). A plain open (no claim) writes neither."""
        if restart is not None and restart not in RESTART_TYPES:
            raise ValidationError("restart", f"one of {', '.join(RESTART_TYPES)}")
        if owner_pid is not ...:
            _check_owner_pid(owner_pid)
        _check_session(session_id)
        if not AGENT_NAME.match(agent_name):
            raise ValidationError("agent_name", f"{agent_name!r} is not a valid agent name")
        if user_id is not None and not 0 < len(user_id) <= 200:
            raise ValidationError("user_id", "must be 1..200 characters")
        me = node if node is not None else self._node
        with operation("conversations", "open", session_id=session_id):
            for _ in range(_CLAIM_TRIES):
                try:
                    # The common cases (a new session, a plain open, no owner or this node
                    # owning it) take one write transaction, as before ownership existed.
                    async with self._db.write() as conn:
                        row = await _find(conn, session_id)
                        if row is None:
                            return await self._create(
                                conn,
                                session_id,
                                agent_name,
                                user_id,
                                claim,
                                me,
                                restart,
                                owner_pid if owner_pid is not ... else None,
                            )
                        if row["agent_name"] != agent_name:
                            raise ValidationError(
                                "agent_name",
                                f"session {session_id!r} belongs to {row['agent_name']!r}",
                            )
                        if not claim:
                            return _conversation(row)
                        owner, owner_inc = row["owner_node"], row["owner_incarnation"]
                        if owner is None or (owner == me.name and owner_inc == me.incarnation):
                            claimed = await _claim(conn, row, me, restart, owner_pid)
                            if claimed is None:
                                continue  # another claim moved the epoch first: judge it
                            METRICS.claims["new" if owner is None else "same_node"] += 1
                            return _conversation(claimed)
                except IntegrityError:  # created concurrently: read it on the next pass
                    continue
                # Another node owns it: ask the policy with no transaction open (it may do I/O),
                # then compare-and-set; a decision gone stale meanwhile loses the CAS.
                if await self._liveness.is_live(owner, owner_inc):
                    METRICS.claims["refused"] += 1
                    raise SessionOwnedError(session_id, owner, owner_inc, row["incarnation"])
                async with self._db.write() as conn:
                    claimed = await _claim(conn, row, me, restart, owner_pid)
                if claimed is None:
                    continue
                METRICS.claims["takeover"] += 1
                log.info(
                    "store_session_taken_over",
                    session_id=session_id,
                    previous_owner=f"{owner}#{owner_inc}",
                    owner=str(me),
                    epoch=claimed["incarnation"],
                )
                return _conversation(claimed)
            raise SessionOwnedError(  # pragma: no cover - only under endless contention
                session_id, me.name, me.incarnation, -1
            )

    async def _create(
        self,
        conn: AsyncConnection,
        session_id: str,
        agent_name: str,
        user_id: str | None,
        claim: bool,
        me: NodeIdentity,
        restart: str | None = None,
        owner_pid: str | None = None,
    ) -> Conversation:
        now = utcnow()
        values = {
            "session_id": session_id,
            "agent_name": agent_name,
            "user_id": user_id,
            "message_count": 0,
            "created_at": now,
            "updated_at": now,
            "incarnation": 1 if claim else 0,
            "owner_node": me.name if claim else None,
            "owner_incarnation": me.incarnation if claim else None,
            "restart": restart if claim else None,
            "host_state": "active" if claim else None,
            "owner_pid": owner_pid if claim else None,
        }
        await conn.execute(insert(_conversations).values(**values))
        if claim:
            METRICS.claims["new"] += 1
        return Conversation.model_validate(values)

    async def set_host_state(
        self, session_id: str, state: str, *, incarnation: int, clear_owner: bool = False
    ) -> bool:
        """Record that the session's process left memory (``evicted``), was stopped for good
        (``stopped``) or hosts it again (``active``), only while the session is still at the
        epoch ``incarnation`` (a successor's claim wins); whether the row changed.
        ``clear_owner``: its owner is gone too (``owner_pid`` cleared, same statement)."""
        if state not in HOST_STATES:
            raise ValidationError("host_state", f"one of {', '.join(HOST_STATES)}")
        c = _conversations.c
        values: dict[str, Any] = {"host_state": state}
        if clear_owner:
            values["owner_pid"] = None
        stmt = (
            update(_conversations)
            .where(c.session_id == session_id, c.incarnation == incarnation)
            .values(**values)
        )
        with operation("conversations", "set_host_state", session_id=session_id):
            async with self._db.write() as conn:
                done = await conn.execute(stmt)
        return bool(done.rowcount)

    async def set_owner_pid(
        self, session_id: str, owner_pid: str | None, *, incarnation: int | None
    ) -> bool:
        """Record the session's owner process (``None``: it has none any more), only while the
        session is still at the epoch ``incarnation`` (a successor's claim wins; it records
        its own owner), or, with ``incarnation=None`` (a process that has not claimed yet),
        while this repository's node holds it; whether the row changed. ``attach_owner``
        and an owner's exit write it: rare, never on a turn's path."""
        if owner_pid is not None:
            _check_owner_pid(owner_pid)
        c = _conversations.c
        me = self._node
        held = (
            c.incarnation == incarnation
            if incarnation is not None
            else (c.owner_node == me.name) & (c.owner_incarnation == me.incarnation)
        )
        stmt = (
            update(_conversations)
            .where(c.session_id == session_id, held)
            .values(owner_pid=owner_pid)
        )
        with operation("conversations", "set_owner_pid", session_id=session_id):
            async with self._db.write() as conn:
                done = await conn.execute(stmt)
        return bool(done.rowcount)

    async def owned_by(
        self, node: str, incarnation: int, *, limit: int = 10_000
    ) -> builtins.list[Conversation]:
        """The conversations whose owner is incarnation ``incarnation`` of ``node`` (what
        failover restarts elsewhere when that node is gone), by id."""
        c = _conversations.c
        stmt = (
            select(_conversations)
            .where(c.owner_node == node, c.owner_incarnation == incarnation)
            .order_by(c.id)
            .limit(limit)
        )
        with operation("conversations", "owned_by"):
            async with self._db.read() as conn:
                rows = (await conn.execute(stmt)).mappings().all()
        return [_conversation(r) for r in rows]

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

    async def owner_counts(self) -> dict[tuple[str, int] | None, int]:
        """How many conversations each owner ``(owner_node, owner_incarnation)`` holds;
        ``None`` counts those never claimed (the cluster page's load per node)."""
        c = _conversations.c
        stmt = select(c.owner_node, c.owner_incarnation, func.count()).group_by(
            c.owner_node, c.owner_incarnation
        )
        with operation("conversations", "owner_counts"):
            async with self._db.read() as conn:
                rows = (await conn.execute(stmt)).all()
        out: dict[tuple[str, int] | None, int] = {}
        for node, incarnation, count in rows:
            key = (
                (str(node), int(incarnation))
                if node is not None and incarnation is not None
                else None
            )
            out[key] = out.get(key, 0) + int(count)
        return out

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
                await conn.execute(delete(_requests).where(_requests.c.session_id == session_id))
                await conn.execute(delete(_conversations).where(_conversations.c.id == row["id"]))

    async def append_turn(
        self,
        session_id: str,
        messages: Sequence[ModelMessage],
        execution: Execution | None = None,
        *,
        incarnation: int | None = None,
    ) -> TurnReceipt:
        """Append a turn's new messages (and its execution row) to the conversation.

        Returns only after the turn is committed. The messages get consecutive positions after
        the conversation's last; the execution gets ``session_id`` if it has none. Raises
        ``NotFoundError`` for an unknown session (``open`` it first), ``ValidationError``
        for an execution the database refuses (duplicate id, unknown parent), and
        ``FencedError`` when ``incarnation`` is given and the session was claimed since."""
        row = None
        if execution is not None:
            row = execution.model_dump()
            if row["session_id"] is None:
                row["session_id"] = session_id
        return await self.append_turn_row(session_id, messages, row, incarnation=incarnation)

    async def append_turn_row(
        self,
        session_id: str,
        messages: Sequence[ModelMessage],
        execution_row: dict[str, Any] | None = None,
        *,
        lone: bool = False,
        incarnation: int | None = None,
        audit: Sequence[AuditValues] = (),
        request: RequestValues | None = None,
    ) -> TurnReceipt:
        """``append_turn`` for a hot path that already holds the execution as a plain row: a
        dict with every column of ``executions`` (``id, kind, status, agent_name,
        function_name, session_id, parent_id, started_at, ended_at, duration_ms, tokens_in,
        tokens_out, error, details``; times as aware ``datetime``). The row is not validated
        in Python (the agents layer builds it); the database still refuses a duplicate id or
        an unknown parent (``ValidationError``). ``ValidationError(field="execution")`` for a
        row that lacks a column.

        ``lone``: the caller knows nothing else is running that a commit could overlap with
        (the agents layer passes it when this is the only turn in flight). On SQLite a lone
        turn is then committed on the event loop when commits are fast, which saves the hop to
        the writer thread and back; the guarantee is the same (see ``docs/store.md``).

        ``incarnation``: the fence (see the module documentation). ``audit``: audit rows
        (``audit_values``) committed in the turn's transaction: they exist exactly when the
        turn does. ``request``: ``(request id, body hash, reply JSON)`` stored with the turn
        (``find_request``); ``DuplicateRequestError`` when that request id was already
        committed for the session."""
        if self._closed:
            raise StoreClosedError("the store is closed")
        if execution_row is not None and not _EXEC_KEYS.issubset(execution_row):
            missing = sorted(_EXEC_KEYS.difference(execution_row))
            raise ValidationError("execution", f"the row lacks {', '.join(missing)}")
        if request is not None:
            check_request_key(request[0])
        turn = Turn(session_id, dump_messages(messages), execution_row, incarnation, audit, request)
        with operation("conversations", "append_turn"):
            return await self._writer.append(turn, inline=lone)

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

    async def find_request(self, session_id: str, request_key: str) -> TurnRequest | None:
        """The turn committed for ``session_id`` with request id ``request_key``, or ``None``."""
        check_request_key(request_key)
        stmt = select(_requests).where(
            _requests.c.session_id == session_id, _requests.c.request_key == request_key
        )
        with operation("conversations", "find_request"):
            async with self._db.read() as conn:
                row = (await conn.execute(stmt)).mappings().first()
        return None if row is None else TurnRequest.model_validate(dict(row))

    async def requests(self, session_id: str) -> builtins.list[TurnRequest]:
        """Every stored request of ``session_id``, in commit order (oldest first)."""
        stmt = (
            select(_requests)
            .where(_requests.c.session_id == session_id)
            .order_by(_requests.c.first_seq)
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        return [TurnRequest.model_validate(dict(r)) for r in rows]

    async def forget_requests(self, before: datetime) -> int:
        """Drop stored request ids committed before ``before`` (a retry carrying one then runs
        a new turn); returns how many."""
        with operation("conversations", "forget_requests"):
            async with self._db.write() as conn:
                result = await conn.execute(
                    delete(_requests).where(_requests.c.created_at < before)
                )
        return int(result.rowcount or 0)


REQUEST_KEY_MAX = 200


def check_request_key(key: str) -> None:
    """A request id is 1..200 visible ASCII characters (``ValidationError(field=
    "request_id")`` otherwise)."""
    if not 0 < len(key) <= REQUEST_KEY_MAX or not all(33 <= ord(c) <= 126 for c in key):
        raise ValidationError("request_id", "must be 1..200 visible ASCII characters")


async def _claim(
    conn: AsyncConnection,
    row: RowMapping,
    me: NodeIdentity,
    restart: str | None = None,
    owner_pid: str | EllipsisType | None = ...,
) -> RowMapping | None:
    """The compare-and-set of a claim: ``me`` owns the session at the next epoch if the row is
    still at the epoch read (``row``); the updated row, or ``None`` when another claim won.
    ``owner_pid``: the claiming process's owner (omitted: the stored one is kept)."""
    c = _conversations.c
    stmt = (
        update(_conversations)
        .where(
            _conversations.c.id == row["id"],
            _conversations.c.incarnation == row["incarnation"],
        )
        .values(
            incarnation=_conversations.c.incarnation + 1,
            owner_node=me.name,
            owner_incarnation=me.incarnation,
            restart=restart if restart is not None else _conversations.c.restart,
            host_state="active",
            owner_pid=owner_pid if owner_pid is not ... else c.owner_pid,
        )
        .returning(_conversations)
    )
    claimed: RowMapping | None = (await conn.execute(stmt)).mappings().first()
    return claimed


async def _find(conn: AsyncConnection, session_id: str) -> RowMapping | None:
    stmt = select(_conversations).where(_conversations.c.session_id == session_id)
    return (await conn.execute(stmt)).mappings().first()


def _conversation(row: Mapping[Any, Any]) -> Conversation:
    return Conversation.model_validate(dict(row))


def _check_owner_pid(owner_pid: str | None) -> None:
    if owner_pid is not None and (
        type(owner_pid) is not str or not 0 < len(owner_pid) <= OWNER_PID_MAX
    ):
        raise ValidationError("owner_pid", f"must be 1..{OWNER_PID_MAX} characters")


def _check_session(session_id: str) -> None:
    if not 0 < len(session_id) <= 200 or not session_id.isprintable():
        raise ValidationError("session_id", "must be 1..200 printable characters")
