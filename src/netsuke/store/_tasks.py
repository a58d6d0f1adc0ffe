"""Tasks of the durable queue: the SQL half of ``netsuke.routing``'s embedded queue backend.

Every method takes ``now`` from the caller (the queue's clock), so tests on a virtual clock see
exact times. Each write is one transaction, committed before the method returns.

Lease rules: ``take`` leases ready tasks (``queued`` with ``run_at <= now``, or ``leased`` with an
expired lease: redelivery) to one owner until ``now + lease``; only that owner, while its lease
stands, can ``settle`` (ack, retry, dead-letter) or ``extend`` them. A settle by an owner that
lost its lease changes nothing and reports ``False``.
"""

from __future__ import annotations

import builtins
import functools
import itertools
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, and_, bindparam, delete, func, insert, or_, select, update

from ._engine import Database
from ._errors import NotFoundError, ValidationError
from ._ids import new_id
from ._models import Base
from ._observe import operation
from ._records import Page
from ._records_tasks import TaskDraft, TaskRecord, TaskStatus, trusted_task
from ._tasks_sqlite import SqliteTaskWriter, new_tasks
from ._validation import check_limit

__all__ = ["CAPABLE_ONLY", "TaskDraft", "TaskRecord", "TaskRepository", "TaskStatus"]

_tasks: Table = Base.metadata.tables["tasks"]
_audit_log: Table = Base.metadata.tables["audit_log"]


def _built(values: dict[str, Any]) -> TaskRecord:
    """The record of a row built here from a validated draft (no second validation)."""
    data = dict(values)
    del data["route"]
    return trusted_task(data)


def _record(row: Any) -> TaskRecord:
    data = dict(row)
    data.pop("route", None)
    return TaskRecord.model_validate(data)


_SUBSET_LIMIT = 6
_SETTABLE = frozenset(_tasks.c.keys()) - {"id", "route"}


CAPABLE_ONLY = " capable-only"
"""Put in a worker's offered capabilities: it takes only tasks asking for at least one
capability (the agents' task workers; a capability name never holds a space)."""


@functools.lru_cache(maxsize=256)
def _routes_within(offered: frozenset[str]) -> list[str]:
    """Every route a worker offering ``offered`` can serve: the sorted subsets, joined (the
    empty one, a task asking for nothing, unless ``offered`` holds ``CAPABLE_ONLY``)."""
    caps = sorted(offered - {CAPABLE_ONLY})
    out: list[str] = []
    for size in range(1 if CAPABLE_ONLY in offered else 0, len(caps) + 1):
        out.extend(" ".join(c) for c in itertools.combinations(caps, size))
    return out


def _route_filter(
    capabilities: frozenset[str] | None,
) -> tuple[builtins.list[str] | None, frozenset[str] | None]:
    """``(routes, scan)`` for the SQLite writer: the routes a worker offering ``capabilities``
    serves, or (too many capabilities to list the subsets) the set to scan ready routes with."""
    if capabilities is None:
        return None, None
    if len(capabilities) <= _SUBSET_LIMIT:
        return _routes_within(capabilities), None
    return None, capabilities


def _delivery_order(t: TaskRecord) -> tuple[int, datetime, datetime]:
    return (-t.priority, t.run_at, t.created_at)


def _subsets(route: str, offered: frozenset[str]) -> bool:
    if not route:
        return CAPABLE_ONLY not in offered
    return all(cap in offered for cap in route.split(" "))


class TaskRepository:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._upsert = _insert_ignoring_duplicates(db.dialect)
        self._sqlite = SqliteTaskWriter(db) if db.is_sqlite else None

    async def close(self) -> None:
        """Release the SQLite hot path's connection and thread (the store calls it)."""
        if self._sqlite is not None:
            await self._sqlite.close()

    async def insert(
        self, drafts: Sequence[TaskDraft], *, now: datetime
    ) -> builtins.list[tuple[TaskRecord, bool]]:
        """Insert tasks in one transaction; per draft ``(task, created)``. A draft whose
        ``idempotency_key`` is taken is not inserted: the task holding the key comes back with
        ``created=False``. The audit rows of a created task's draft (``with_audit``) are
        committed in the same transaction."""
        out: list[tuple[TaskRecord, bool]] = []
        if self._sqlite is not None and all(d.idempotency_key is None for d in drafts):
            records, rows = new_tasks(drafts, now, new_id)
            audit = [
                row
                for d, r in zip(drafts, records, strict=True)
                if (rows_for := d.audit) is not None
                for row in rows_for(r.id)
            ]
            with operation("tasks", "insert", count=len(drafts)):
                await self._sqlite.insert_rows(rows, audit)
            return [(r, True) for r in records]
        with operation("tasks", "insert", count=len(drafts)):
            async with self._db.write() as conn:
                plain: list[dict[str, Any]] = []
                audit = []
                for d in drafts:
                    values = _values(d, now)
                    if d.idempotency_key is None:
                        plain.append(values)
                        out.append((_built(values), True))
                        if (rows_for := d.audit) is not None:
                            audit.extend(rows_for(values["id"]))
                        continue
                    res = await conn.execute(self._upsert.values(**values))
                    if res.rowcount == 1:
                        out.append((_built(values), True))
                        if (rows_for := d.audit) is not None:
                            audit.extend(rows_for(values["id"]))
                    else:
                        row = (
                            (
                                await conn.execute(
                                    select(_tasks).where(
                                        _tasks.c.idempotency_key == d.idempotency_key
                                    )
                                )
                            )
                            .mappings()
                            .one()
                        )
                        out.append((_record(row), False))
                if plain:
                    await conn.execute(insert(_tasks), plain)
                for at, actor, action, target, outcome, details in audit:
                    await conn.execute(
                        insert(_audit_log).values(
                            at=at,
                            actor=actor,
                            action=action,
                            target=target,
                            outcome=outcome,
                            details=details,
                        )
                    )
        return out

    async def take(
        self,
        owner: str,
        *,
        capabilities: frozenset[str] | None,
        limit: int,
        lease: float,
        now: datetime,
        kinds: Sequence[str] | None = None,
    ) -> builtins.list[TaskRecord]:
        """Lease up to ``limit`` ready tasks to ``owner`` for ``lease`` seconds, highest
        ``priority`` first, then earliest ``run_at``. ``capabilities=None`` takes any task;
        otherwise only tasks whose capabilities the set holds. Each taken task's ``attempts``
        grows by one."""
        ready = or_(
            and_(_tasks.c.status == "queued", _tasks.c.run_at <= now),
            and_(_tasks.c.status == "leased", _tasks.c.lease_expires_at <= now),
        )
        if self._sqlite is not None:
            routes, scan = _route_filter(capabilities)
            with operation("tasks", "take", owner=owner):
                got = await self._sqlite.take(
                    owner,
                    routes=routes,
                    all_routes=scan,
                    kinds=kinds,
                    limit=limit,
                    expires=now + timedelta(seconds=lease),
                    now=now,
                )
            got.sort(key=_delivery_order)
            return got
        with operation("tasks", "take", owner=owner):
            async with self._db.write() as conn:
                pick = select(_tasks.c.id).where(ready)
                if kinds is not None:
                    pick = pick.where(_tasks.c.kind.in_(list(kinds)))
                if capabilities is not None:
                    if len(capabilities) <= _SUBSET_LIMIT:
                        fit = _routes_within(capabilities)
                    else:
                        found = (
                            await conn.execute(select(_tasks.c.route).where(ready).distinct())
                        ).scalars()
                        fit = [r for r in found if _subsets(r, capabilities)]
                        if not fit:
                            return []
                    pick = pick.where(_tasks.c.route.in_(fit))
                pick = (
                    pick.order_by(_tasks.c.priority.desc(), _tasks.c.run_at, _tasks.c.created_at)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
                stmt = (
                    update(_tasks)
                    .where(_tasks.c.id.in_(pick.scalar_subquery()))
                    .values(
                        status="leased",
                        lease_owner=owner,
                        lease_expires_at=now + timedelta(seconds=lease),
                        attempts=_tasks.c.attempts + 1,
                        updated_at=now,
                    )
                    .returning(*_tasks.c)
                )
                rows = (await conn.execute(stmt)).mappings().all()
        tasks = [_record(r) for r in rows]
        tasks.sort(key=lambda t: (-t.priority, t.run_at, t.created_at))
        return tasks

    async def settle(
        self, changes: Sequence[tuple[str, str, dict[str, Any]]], *, now: datetime
    ) -> builtins.list[bool]:
        """Apply each ``(owner, task_id, values)`` to a task ``owner`` holds a live lease on,
        all in one transaction; per change whether it applied (``False``: the lease was lost
        and nothing changed)."""
        if not changes:
            return []
        for _, _, values in changes:
            self.check_values(values)
        if self._sqlite is not None:
            with operation("tasks", "settle", count=len(changes)):
                return await self._sqlite.settle(changes, now=now)
        ids = [task_id for _, task_id, _ in changes]
        with operation("tasks", "settle", count=len(changes)):
            async with self._db.write() as conn:
                holders: dict[str, str | None] = {
                    row[0]: row[1]
                    for row in await conn.execute(
                        select(_tasks.c.id, _tasks.c.lease_owner).where(
                            _tasks.c.id.in_(ids),
                            _tasks.c.status == "leased",
                            _tasks.c.lease_expires_at > now,
                        )
                    )
                }
                applied: list[bool] = []
                groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
                for owner, task_id, values in changes:
                    ok = holders.get(task_id) == owner
                    if ok:
                        del holders[task_id]  # a second change in one batch finds it settled
                        params = {**{f"v_{k}": v for k, v in values.items()}, "b_id": task_id}
                        groups.setdefault(tuple(sorted(values)), []).append(params)
                    applied.append(ok)
                for keys, params_list in groups.items():
                    stmt = (
                        update(_tasks)
                        .where(_tasks.c.id == bindparam("b_id"))
                        .values(updated_at=now, **{k: bindparam(f"v_{k}") for k in keys})
                    )
                    await conn.execute(stmt, params_list)
        return applied

    async def settle_and_take(
        self,
        changes: Sequence[tuple[str, str, dict[str, Any]]],
        owner: str,
        *,
        capabilities: frozenset[str] | None,
        limit: int,
        lease: float,
        now: datetime,
        kinds: Sequence[str] | None = None,
    ) -> tuple[builtins.list[bool], builtins.list[TaskRecord]]:
        """``settle(changes)``, then ``take(owner, ...)`` (nothing when ``limit`` is 0). On
        SQLite both are one transaction: one commit acks a batch and leases the next. Elsewhere
        they are two, the settle committed first. Returns once everything is committed."""
        for _, _, values in changes:
            self.check_values(values)
        if self._sqlite is None:
            applied = await self.settle(changes, now=now)
            if limit <= 0:
                return applied, []
            got = await self.take(
                owner, capabilities=capabilities, limit=limit, lease=lease, now=now, kinds=kinds
            )
            return applied, got
        routes, scan = _route_filter(capabilities)
        with operation("tasks", "settle_and_take", owner=owner, count=len(changes)):
            applied, got = await self._sqlite.settle_and_take(
                changes,
                owner,
                routes=routes,
                all_routes=scan,
                kinds=kinds,
                limit=limit,
                expires=now + timedelta(seconds=lease),
                now=now,
            )
        got.sort(key=_delivery_order)
        return applied, got

    @staticmethod
    def check_values(values: dict[str, Any]) -> None:
        """``ValidationError(field="values")`` unless every key is a settable task column."""
        unknown = set(values) - _SETTABLE
        if unknown:
            raise ValidationError("values", f"not settable task columns: {sorted(unknown)}")

    async def extend(
        self, owner: str, task_ids: Sequence[str], *, lease: float, now: datetime
    ) -> int:
        """Push the leases ``owner`` still holds on ``task_ids`` to ``now + lease``; returns
        how many it still held."""
        if not task_ids:
            return 0
        with operation("tasks", "extend", owner=owner):
            async with self._db.write() as conn:
                res = await conn.execute(
                    update(_tasks)
                    .where(
                        _tasks.c.id.in_(list(task_ids)),
                        _tasks.c.lease_owner == owner,
                        _tasks.c.status == "leased",
                        _tasks.c.lease_expires_at > now,
                    )
                    .values(lease_expires_at=now + timedelta(seconds=lease), updated_at=now)
                )
        return int(res.rowcount)

    async def get(self, task_id: str) -> TaskRecord:
        async with self._db.read() as conn:
            row = (
                (await conn.execute(select(_tasks).where(_tasks.c.id == task_id)))
                .mappings()
                .first()
            )
        if row is None:
            raise NotFoundError("task", task_id)
        return _record(row)

    async def list(
        self,
        *,
        status: TaskStatus | None = None,
        kind: str | None = None,
        limit: int = 50,
        offset: int = 0,
        id_prefix: str | None = None,
    ) -> Page[TaskRecord]:
        """Tasks oldest first, filtered (``id_prefix``: ids starting with it); ``next_cursor``
        is the next offset."""
        limit = check_limit(limit)
        if offset < 0:
            raise ValidationError("offset", "must be >= 0")
        if id_prefix is not None and not 0 < len(id_prefix) <= 100:
            raise ValidationError("id_prefix", "must be 1..100 characters")
        stmt = (
            select(_tasks)
            .order_by(_tasks.c.created_at, _tasks.c.id)
            .limit(limit + 1)
            .offset(offset)
        )
        if status is not None:
            stmt = stmt.where(_tasks.c.status == status)
        if kind is not None:
            stmt = stmt.where(_tasks.c.kind == kind)
        if id_prefix is not None:
            stmt = stmt.where(_tasks.c.id.startswith(id_prefix, autoescape=True))
        with operation("tasks", "list"):
            async with self._db.read() as conn:
                rows = (await conn.execute(stmt)).mappings().all()
        items = [_record(r) for r in rows[:limit]]
        return Page(items=items, next_cursor=str(offset + limit) if len(rows) > limit else None)

    async def count(self, status: TaskStatus | None = None) -> int:
        stmt = select(func.count()).select_from(_tasks)
        if status is not None:
            stmt = stmt.where(_tasks.c.status == status)
        async with self._db.read() as conn:
            return int((await conn.execute(stmt)).scalar_one())

    async def requeue(self, task_id: str, *, now: datetime) -> TaskRecord:
        """Put a dead task back in the queue, ready now, with its attempts reset to 0.
        ``NotFoundError`` when no dead task has that id."""
        with operation("tasks", "requeue", task_id=task_id):
            async with self._db.write() as conn:
                row = (
                    (
                        await conn.execute(
                            update(_tasks)
                            .where(_tasks.c.id == task_id, _tasks.c.status == "dead")
                            .values(
                                status="queued",
                                attempts=0,
                                run_at=now,
                                lease_owner=None,
                                lease_expires_at=None,
                                finished_at=None,
                                updated_at=now,
                            )
                            .returning(*_tasks.c)
                        )
                    )
                    .mappings()
                    .first()
                )
        if row is None:
            raise NotFoundError("dead task", task_id)
        return _record(row)

    async def purge(
        self,
        status: TaskStatus,
        *,
        ids: Sequence[str] | None = None,
        before: datetime | None = None,
    ) -> int:
        """Delete tasks in ``status`` (``dead`` or ``succeeded`` only), optionally only
        ``ids`` or those finished before ``before``; returns how many."""
        if status not in ("dead", "succeeded"):
            raise ValidationError("status", "only dead or succeeded tasks can be purged")
        stmt = delete(_tasks).where(_tasks.c.status == status)
        if ids is not None:
            stmt = stmt.where(_tasks.c.id.in_(list(ids)))
        if before is not None:
            stmt = stmt.where(_tasks.c.finished_at < before)
        with operation("tasks", "purge", status=status):
            async with self._db.write() as conn:
                res = await conn.execute(stmt)
        return int(res.rowcount)

    async def next_due(self, *, now: datetime) -> datetime | None:
        """The earliest time a task becomes ready (``run_at`` of queued tasks, expiry of
        leases), or ``None`` with nothing pending."""
        async with self._db.read() as conn:
            a = (
                await conn.execute(
                    select(func.min(_tasks.c.run_at)).where(_tasks.c.status == "queued")
                )
            ).scalar_one()
            b = (
                await conn.execute(
                    select(func.min(_tasks.c.lease_expires_at)).where(_tasks.c.status == "leased")
                )
            ).scalar_one()
        times: list[datetime] = [t for t in (a, b) if t is not None]
        return min(times) if times else None


def _values(d: TaskDraft, now: datetime) -> dict[str, Any]:
    return {
        "id": new_id(),
        "kind": d.kind,
        "payload": d.payload,
        "capabilities": list(d.capabilities),
        "route": d.route,
        "priority": d.priority,
        "status": "queued",
        "attempts": 0,
        "max_attempts": d.max_attempts,
        "backoff_base": d.backoff_base,
        "backoff_cap": d.backoff_cap,
        "timeout": d.timeout,
        "run_at": d.run_at,
        "lease_owner": None,
        "lease_expires_at": None,
        "idempotency_key": d.idempotency_key,
        "result": None,
        "last_error": None,
        "created_at": now,
        "updated_at": now,
        "finished_at": None,
    }


def _insert_ignoring_duplicates(dialect: str) -> Any:
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(_tasks).on_conflict_do_nothing(index_elements=["idempotency_key"])
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(_tasks).on_conflict_do_nothing(index_elements=["idempotency_key"])
