"""Membership: node leases in the store, judged by the database clock, and self-fencing.

The store is the authority on who is a member; NATS (the transport's heartbeats) only says
fast who seems alive. Each run of a node has a row ``(name, incarnation)`` in ``cluster_nodes``
whose lease (``expires_at``) is set and renewed by the database from its own clock
(PostgreSQL ``clock_timestamp()``, SQLite ``julianday('now')``): nodes never compare their
clocks. A lease is live while ``state = 'live'`` and ``expires_at`` is later than the
database's now; once it has run out it cannot be renewed (the renewal's ``UPDATE`` requires a
live lease), so whatever it guarded (global names) may be taken by others.

**Self-fencing.** A node that cannot renew stops acting as a member before its lease runs
out: the time since the *start* of its last successful renewal is measured on its own
monotonic clock, and once it reaches ``fence_after`` (< ``lease``) the node is *fenced*. The
check also runs synchronously whenever code asks (``fenced``, ``check()``), so a node resumed
after SIGSTOP fences itself before it answers anything as owner. Fencing is final for the
incarnation: callbacks run, ``cluster_node_fenced`` is logged and
``netsuke_cluster_fenced_total{node,reason}`` counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import structlog
from prometheus_client import Counter
from sqlalchemy import Table, func, insert, literal_column, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from netsuke.observability import REGISTRY
from netsuke.store import Database
from netsuke.store._models import Base

__all__ = [
    "DuplicateNodeError",
    "FencedError",
    "Membership",
    "NodeInfo",
    "db_now",
    "end_exited_lease",
    "list_nodes",
]

log = structlog.get_logger("netsuke.cluster")

NODES: Final[Table] = Base.metadata.tables["cluster_nodes"]
NAMES: Final[Table] = Base.metadata.tables["cluster_names"]

LIVE: Final = "live"
LEFT: Final = "left"
FENCED: Final = "fenced"
DOWN: Final = "down"  # revoked by a survivor that saw the node down (``Membership.revoke``)
EXITED: Final = "exited"

FENCED_TOTAL = Counter(
    "netsuke_cluster_fenced",
    "Times this node fenced itself (stopped acting as a member), by reason.",
    ["node", "reason"],
    registry=REGISTRY,
)
REVOCATIONS = Counter(
    "netsuke_cluster_lease_revocations",
    "Leases of other nodes this node revoked after seeing them down, by cause.",
    ["node", "cause"],
    registry=REGISTRY,
)
RENEWALS = Counter(
    "netsuke_cluster_lease_renewals",
    "Lease renewals of this node, by outcome (ok, failed, lost).",
    ["node", "outcome"],
    registry=REGISTRY,
)


class DuplicateNodeError(RuntimeError):
    """Another run of this node name holds a live lease: the name is taken."""

    def __init__(self, name: str, incarnation: int, expires_in: float) -> None:
        super().__init__(
            f"node name {name!r} is held by a live node (incarnation {incarnation}, lease "
            f"expires in {max(expires_in, 0.0):.1f} s): pick another --node name, or stop "
            "that node"
        )
        self.name = name
        self.incarnation = incarnation
        self.expires_in = expires_in


class FencedError(RuntimeError):
    """This node has fenced itself (its lease could not be renewed): it is no member."""

    def __init__(self, node_id: str, reason: str) -> None:
        super().__init__(f"node {node_id} is fenced ({reason}): it no longer acts as a member")
        self.node_id = node_id
        self.reason = reason


def db_now(conn: AsyncConnection) -> ColumnElement[float]:
    """The database clock, in seconds since the epoch, as an SQL expression."""
    if conn.dialect.name == "postgresql":
        return literal_column("CAST(extract(epoch from clock_timestamp()) AS double precision)")
    return literal_column("((julianday('now') - 2440587.5) * 86400.0)")


async def _now(conn: AsyncConnection) -> float:
    return float((await conn.execute(select(db_now(conn)))).scalar_one())


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """One node incarnation as the store sees it (ages and expiry by the database clock)."""

    name: str
    incarnation: int
    state: str
    live: bool
    lease_s: float
    lease_age: float
    expires_in: float
    processes: int
    names: int
    started_at: float
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def node_id(self) -> str:
        return f"{self.name}#{self.incarnation}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "node": self.node_id,
            "name": self.name,
            "incarnation": self.incarnation,
            "state": self.state if self.live or self.state != LIVE else "expired",
            "live": self.live,
            "lease_s": self.lease_s,
            "lease_age_s": round(self.lease_age, 3),
            "expires_in_s": round(self.expires_in, 3),
            "processes": self.processes,
            "names": self.names,
            "started_at": self.started_at,
            "labels": dict(self.labels),
        }


async def list_nodes(db: Database, *, include_gone: bool = False) -> list[NodeInfo]:
    """Every node incarnation with a live lease (with ``include_gone``, also those that left,
    fenced or expired), by name then incarnation."""
    async with db.read() as conn:
        now = await _now(conn)
        counts = {
            (n, int(i)): int(c)
            for n, i, c in (
                await conn.execute(
                    select(NAMES.c.node_name, NAMES.c.incarnation, func.count()).group_by(
                        NAMES.c.node_name, NAMES.c.incarnation
                    )
                )
            ).all()
        }
        rows = (
            await conn.execute(select(NODES).order_by(NODES.c.name, NODES.c.incarnation))
        ).mappings()
        out = []
        for r in rows:
            live = r["state"] == LIVE and r["expires_at"] > now
            if not live and not include_gone:
                continue
            out.append(
                NodeInfo(
                    name=r["name"],
                    incarnation=int(r["incarnation"]),
                    state=r["state"],
                    live=live,
                    lease_s=float(r["lease_s"]),
                    lease_age=now - float(r["renewed_at"]),
                    expires_in=float(r["expires_at"]) - now,
                    processes=int(r["processes"]),
                    names=counts.get((r["name"], int(r["incarnation"])), 0),
                    started_at=float(r["started_at"]),
                    labels={str(k): str(v) for k, v in dict(r["labels"] or {}).items()},
                )
            )
    return out


class Membership:
    """This node's membership lease. Options (defaults in brackets):

    * ``lease`` [``5.0``] seconds a renewal keeps the node a member (database clock);
    * ``renew_interval`` [``lease / 5``] seconds between renewals;
    * ``fence_after`` [``lease * 0.6``] seconds after the start of the last successful
      renewal (local monotonic clock) at which the node fences itself; must be less than
      ``lease`` and more than ``renew_interval``;
    * ``process_count``: a function giving the node's process count (stored at each renewal);
    * ``clock`` [``time.monotonic``]: the local clock fencing is measured on;
    * ``renew_in_thread`` [``False``]: renew from a thread of its own (its own event loop and
      database connection), so an event loop kept busy by other work does not delay the
      renewals (``join_cluster`` turns it on); a paused process still stops them all.

    ``await join()`` takes the lease (raises :class:`DuplicateNodeError` when another run of
    the name holds a live one) and starts renewing; ``await leave()`` gives it up."""

    def __init__(
        self,
        db: Database,
        name: str,
        *,
        lease: float = 5.0,
        renew_interval: float | None = None,
        fence_after: float | None = None,
        process_count: Callable[[], int] | None = None,
        clock: Callable[[], float] = time.monotonic,
        renew_in_thread: bool = False,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        renew_interval = lease / 5 if renew_interval is None else renew_interval
        fence_after = lease * 0.6 if fence_after is None else fence_after
        if not lease > 0:
            raise ValueError(f"lease must be > 0, not {lease!r}")
        if not 0 < renew_interval < fence_after < lease:
            raise ValueError(
                "need 0 < renew_interval < fence_after < lease, not "
                f"{renew_interval!r}, {fence_after!r}, {lease!r}"
            )
        self.db = db
        self.name = name
        self.labels: dict[str, str] = dict(labels or {})
        self.lease = lease
        self.renew_interval = renew_interval
        self.fence_after = fence_after
        self.process_count = process_count
        self.clock = clock
        self.incarnation: int | None = None
        self.fence_reason: str | None = None
        self.fenced_event = asyncio.Event()
        self._last_ok = 0.0
        self._callbacks: list[Callable[[str], None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._left = False
        self.renew_in_thread = renew_in_thread
        self._thread: threading.Thread | None = None
        self._thread_stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ identity

    @property
    def node_id(self) -> str:
        if self.incarnation is None:
            raise RuntimeError("Membership.join() has not run")
        return f"{self.name}#{self.incarnation}"

    @property
    def fenced(self) -> bool:
        """``True`` once this node has fenced itself (checked now against the local clock)."""
        self._check_overdue()
        return self.fence_reason is not None

    def check(self) -> None:
        """Raise :class:`FencedError` if this node is no member (fenced, or never joined)."""
        if self.incarnation is None:
            raise RuntimeError("Membership.join() has not run")
        if self.fenced:
            raise FencedError(self.node_id, self.fence_reason or "")

    def on_fenced(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(reason)`` when this node fences itself (at once if it has)."""
        if self.fence_reason is not None:
            callback(self.fence_reason)
        else:
            self._callbacks.append(callback)

    def since_renewal(self) -> float:
        """Seconds (local monotonic clock) since the start of the last successful renewal."""
        return self.clock() - self._last_ok

    # ------------------------------------------------------------------ lifecycle

    async def join(self) -> int:
        """Take a lease for a new incarnation of this name and start renewing it; returns the
        incarnation (the store's: greater than any earlier one of the name)."""
        if self.incarnation is not None:
            raise RuntimeError(f"node {self.node_id} has already joined")
        started = self.clock()
        async with self.db.write() as conn:
            if conn.dialect.name == "postgresql":  # one join per name at a time
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(hashtext(:k))"),
                    {"k": f"netsuke.cluster.node:{self.name}"},
                )
            now = await _now(conn)
            rows = (
                await conn.execute(
                    select(NODES.c.incarnation, NODES.c.state, NODES.c.expires_at).where(
                        NODES.c.name == self.name
                    )
                )
            ).all()
            for inc, state, expires_at in rows:
                if state == LIVE and expires_at > now:
                    raise DuplicateNodeError(self.name, int(inc), float(expires_at) - now)
            previous = max((int(r[0]) for r in rows), default=0)
            incarnation = max(previous + 1, time.time_ns() // 1000)
            await conn.execute(
                insert(NODES).values(
                    name=self.name,
                    incarnation=incarnation,
                    started_at=now,
                    renewed_at=now,
                    expires_at=now + self.lease,
                    lease_s=self.lease,
                    processes=0,
                    state=LIVE,
                    info={},
                    labels=dict(self.labels),
                )
            )
            # A predecessor's names are not kept alive by its successor.
            await conn.execute(
                NAMES.delete().where(
                    NAMES.c.node_name == self.name, NAMES.c.incarnation < incarnation
                )
            )
        self.incarnation = incarnation
        self._last_ok = started
        loop = self._loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._watchdog())]
        if self.renew_in_thread:
            self._thread = threading.Thread(
                target=self._thread_main, name=f"netsuke-lease-{self.name}", daemon=True
            )
            self._thread.start()
        else:
            self._tasks.append(loop.create_task(self._renewer()))
        log.info("cluster_member_joined", node=self.node_id, lease=self.lease)
        return incarnation

    async def leave(self) -> None:
        """Stop renewing; give the lease and this node's names up (best effort: if the store
        cannot be reached the lease simply runs out)."""
        if self._left:
            return
        self._left = True
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self._thread_stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, self.lease + self.renew_interval)
        if self.incarnation is None:
            return
        try:
            await asyncio.wait_for(self._release(LEFT), timeout=self.lease)
        except Exception as e:  # the lease runs out by itself
            log.warning("cluster_leave_failed", node=self.node_id, error=_short(e))
        else:
            log.info("cluster_member_left", node=self.node_id)

    async def _release(self, state: str) -> None:
        assert self.incarnation is not None
        async with self.db.write() as conn:
            now = db_now(conn)
            await conn.execute(
                update(NODES)
                .where(
                    NODES.c.name == self.name,
                    NODES.c.incarnation == self.incarnation,
                    NODES.c.state == LIVE,
                )
                .values(state=state, expires_at=_least(conn, NODES.c.expires_at, now))
            )
            await conn.execute(
                NAMES.delete().where(
                    NAMES.c.node_name == self.name, NAMES.c.incarnation == self.incarnation
                )
            )

    # ------------------------------------------------------------------ renewals

    async def renew(self, db: Database | None = None) -> bool:
        """Renew the lease once; ``False`` when it had already run out (the node fences)."""
        assert self.incarnation is not None
        started = self.clock()
        processes = self.process_count() if self.process_count is not None else 0
        async with (db or self.db).write() as conn:
            now = db_now(conn)
            done = await conn.execute(
                update(NODES)
                .where(
                    NODES.c.name == self.name,
                    NODES.c.incarnation == self.incarnation,
                    NODES.c.state == LIVE,
                    NODES.c.expires_at > now,
                )
                .values(renewed_at=now, expires_at=now + self.lease, processes=processes)
            )
        if done.rowcount != 1:
            RENEWALS.labels(self.node_id, "lost").inc()
            if db is None or self._loop is None:
                self._fence("lease_lost")
            else:  # from the renewal thread: fence on the node's own loop
                self._loop.call_soon_threadsafe(self._fence, "lease_lost")
            return False
        RENEWALS.labels(self.node_id, "ok").inc()
        if started > self._last_ok:
            self._last_ok = started
        return True

    def _thread_main(self) -> None:
        asyncio.run(self._thread_renewer())

    async def _thread_renewer(self) -> None:
        db = Database(
            self.db.url,
            sqlite_synchronous=self.db.sqlite_synchronous,
            busy_timeout_ms=self.db.busy_timeout_ms,
            pool_size=1,
        )
        try:
            await self._renewer(db)
        finally:
            await db.dispose()

    async def _renewer(self, db: Database | None = None) -> None:
        failing = False
        while self.fence_reason is None and not self._thread_stop.is_set():
            await asyncio.sleep(self.renew_interval)
            if self.fence_reason is not None or self._thread_stop.is_set():
                return
            if db is None and self.fenced:
                return
            try:
                await asyncio.wait_for(self.renew(db), timeout=self.fence_after)
            except Exception as e:
                RENEWALS.labels(self.node_id, "failed").inc()
                if not failing:
                    log.warning("cluster_lease_renewal_failed", node=self.node_id, error=_short(e))
                failing = True
            else:
                if failing:
                    log.info("cluster_lease_renewal_recovered", node=self.node_id)
                failing = False

    async def _watchdog(self) -> None:
        while self.fence_reason is None:
            left = self.fence_after - self.since_renewal()
            await asyncio.sleep(max(min(left, self.renew_interval), 0.01))
            self._check_overdue()

    def _check_overdue(self) -> None:
        if (
            self.fence_reason is None
            and self.incarnation is not None
            and not self._left
            and self.since_renewal() >= self.fence_after
        ):
            self._fence("renewal_overdue")

    def _fence(self, reason: str) -> None:
        if self.fence_reason is not None:
            return
        self.fence_reason = reason
        FENCED_TOTAL.labels(self.node_id, reason).inc()
        log.error(
            "cluster_node_fenced",
            node=self.node_id,
            reason=reason,
            since_renewal=round(self.since_renewal(), 3),
            lease=self.lease,
        )
        self.fenced_event.set()
        for cb in self._callbacks:
            try:
                cb(reason)
            except Exception as e:  # one bad callback must not stop the others
                log.error("cluster_fence_callback_failed", node=self.node_id, error=_short(e))
        self._callbacks.clear()
        with contextlib.suppress(RuntimeError):  # no loop: nothing to mark
            asyncio.get_running_loop().create_task(self._mark_fenced())

    async def _mark_fenced(self) -> None:
        """Best effort: end the lease now in the store, so others need not wait for it."""
        try:
            await asyncio.wait_for(self._release(FENCED), timeout=self.lease)
        except Exception as e:
            log.info("cluster_fence_mark_failed", node=self.node_id, error=_short(e))

    async def revoke(self, name: str, incarnation: int, cause: str = "node_down") -> bool:
        """End the lease of node ``name#incarnation`` now (``state = 'down'``), because this
        node saw it down over NATS; ``True`` when this call ended it. Only a live member may
        revoke (checked in the same statement, by the database clock), and only a live lease
        is revoked. The revoked node's next renewal fails, so it fences itself
        (``lease_lost``) if it is still running: a wrong verdict costs availability, never
        safety (every commit is fenced by the session's epoch)."""
        self.check()
        assert self.incarnation is not None
        me = NODES.alias("me")
        async with self.db.write() as conn:
            now = db_now(conn)
            alive = (
                select(me.c.name)
                .where(
                    me.c.name == self.name,
                    me.c.incarnation == self.incarnation,
                    me.c.state == LIVE,
                    me.c.expires_at > now,
                )
                .exists()
            )
            done = await conn.execute(
                update(NODES)
                .where(
                    NODES.c.name == name,
                    NODES.c.incarnation == incarnation,
                    NODES.c.state == LIVE,
                    alive,
                )
                .values(state=DOWN, expires_at=_least(conn, NODES.c.expires_at, now))
            )
        if done.rowcount != 1:
            return False
        REVOCATIONS.labels(self.node_id, cause).inc()
        log.warning(
            "cluster_lease_revoked", node=self.node_id, peer=f"{name}#{incarnation}", cause=cause
        )
        return True

    # ------------------------------------------------------------------ queries

    async def is_live(self, name: str, incarnation: int) -> bool:
        """Whether node ``name#incarnation`` holds a live lease, judged by the database clock
        (for this very node: also not fenced)."""
        if name == self.name and incarnation == self.incarnation and self.fenced:
            return False
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    select(NODES.c.name).where(
                        NODES.c.name == name,
                        NODES.c.incarnation == incarnation,
                        NODES.c.state == LIVE,
                        NODES.c.expires_at > db_now(conn),
                    )
                )
            ).first()
        return row is not None

    async def nodes(self, *, include_gone: bool = False) -> list[NodeInfo]:
        return await list_nodes(self.db, include_gone=include_gone)


async def end_exited_lease(db: Database, name: str, incarnation: int) -> bool:
    """End the lease of node ``name#incarnation`` whose OS process is known to have exited
    (its supervisor reaped it: it can renew nothing and commit nothing any more), so its
    successor may join under the name at once and its sessions and names may be taken over
    without waiting for the lease to run out. State ``exited``; its names are deleted.
    Whether a live lease was ended."""
    async with db.write() as conn:
        now = db_now(conn)
        ended = await conn.execute(
            update(NODES)
            .where(
                NODES.c.name == name,
                NODES.c.incarnation == incarnation,
                NODES.c.state == LIVE,
            )
            .values(state=EXITED, expires_at=_least(conn, NODES.c.expires_at, now))
        )
        await conn.execute(
            NAMES.delete().where(NAMES.c.node_name == name, NAMES.c.incarnation == incarnation)
        )
    return bool(ended.rowcount)


def _least(conn: AsyncConnection, a: Any, b: Any) -> Any:
    return func.min(a, b) if conn.dialect.name == "sqlite" else func.least(a, b)


def _short(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}".splitlines()[0][:300]
