"""Membership leases in the store (SQLite file and PostgreSQL): one live node per name,
expiry judged by the database clock, and self-fencing when renewals fail for real (a SQLite
file locked by another connection; a PostgreSQL server stopped)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import select

from netsuke.cluster import DuplicateNodeError, FencedError, Membership, list_nodes
from netsuke.cluster._membership import NODES, db_now
from netsuke.store import Database, upgrade
from netsuke.store.testing import TemporaryPostgres, find_bindir

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def db(migrated_url: str) -> Database:
    await upgrade(migrated_url)
    database = Database(migrated_url)
    yield database  # type: ignore[misc]
    await database.dispose()


async def test_a_live_name_cannot_join_twice_and_a_left_one_rejoins_with_a_newer_incarnation(
    db: Database,
) -> None:
    a = Membership(db, "alpha", lease=30.0)
    inc = await a.join()
    with pytest.raises(DuplicateNodeError, match="node name 'alpha' is held by a live node"):
        await Membership(db, "alpha", lease=30.0).join()
    other = Membership(db, "beta", lease=30.0)
    await other.join()
    assert await other.is_live("alpha", inc)
    nodes = {n.node_id: n for n in await list_nodes(db)}
    assert set(nodes) == {a.node_id, other.node_id}
    assert nodes[a.node_id].live and 0 < nodes[a.node_id].expires_in <= 30.0
    await a.leave()
    assert not await other.is_live("alpha", inc)
    again = Membership(db, "alpha", lease=30.0)
    assert await again.join() > inc
    await again.leave()
    await other.leave()


async def test_a_lease_that_is_not_renewed_expires_by_the_database_clock(db: Database) -> None:
    dead = Membership(db, "dead", lease=1.0, renew_interval=0.1, fence_after=0.5)
    inc = await dead.join()
    async with db.read() as conn:
        left = (
            await conn.execute(
                select(NODES.c.expires_at - db_now(conn)).where(NODES.c.name == "dead")
            )
        ).scalar_one()
    assert 0 < left <= 1.0  # set from the database's own clock, not this process's
    for t in dead._tasks:  # the node "crashes": no renewal, no goodbye
        t.cancel()
    watcher = Membership(db, "watcher", lease=30.0)
    await watcher.join()
    assert [n.node_id for n in await list_nodes(db)].count(f"dead#{inc}") in (0, 1)

    async def gone() -> bool:
        return not await watcher.is_live("dead", inc)

    await _eventually_async(gone)
    gone_rows = {n.node_id: n for n in await list_nodes(db, include_gone=True)}
    assert gone_rows[f"dead#{inc}"].live is False
    assert gone_rows[f"dead#{inc}"].as_dict()["state"] == "expired"
    # an expired lease cannot be renewed: the node fences itself
    assert await dead.renew() is False
    assert dead.fenced and dead.fence_reason == "lease_lost"
    # and the name is free again
    successor = Membership(db, "dead", lease=30.0)
    assert await successor.join() > inc
    await successor.leave()
    await watcher.leave()


async def _eventually_async(check: object, timeout: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():  # type: ignore[operator]
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.05)


async def test_self_fencing_when_the_sqlite_file_is_locked_by_another_connection(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cluster.db'}"
    await upgrade(url)
    db = Database(url, busy_timeout_ms=30_000)
    m = Membership(db, "alpha", lease=2.0, renew_interval=0.2, fence_after=1.0)
    seen: list[tuple[str, float]] = []
    m.on_fenced(lambda reason: seen.append((reason, m.since_renewal())))
    await m.join()
    locker = sqlite3.connect(tmp_path / "cluster.db", isolation_level=None, timeout=30)
    try:
        locker.execute("BEGIN EXCLUSIVE")  # every renewal now waits on the lock, then fails
        await asyncio.wait_for(m.fenced_event.wait(), 60)
        assert seen and seen[0][0] == "renewal_overdue"
        assert seen[0][1] < m.lease  # fenced before its lease could have run out
        with pytest.raises(FencedError):
            m.check()
        assert not await m.is_live("alpha", m.incarnation or 0)
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    await m.leave()
    await db.dispose()


async def test_self_fencing_when_postgresql_stops() -> None:
    if find_bindir() is None:
        pytest.skip("PostgreSQL binaries not found")
    server = TemporaryPostgres().start()
    try:
        url = server.create_database()
        await upgrade(url)
        db = Database(url)
        m = Membership(db, "alpha", lease=3.0, renew_interval=0.3, fence_after=1.5)
        await m.join()
        assert await m.renew()
        server.stop()  # renewals now fail for real
        await asyncio.wait_for(m.fenced_event.wait(), 60)
        assert m.fence_reason == "renewal_overdue"
        with pytest.raises(FencedError):
            m.check()
        await m.leave()  # the store is gone: best effort, returns
        await db.dispose()
    finally:
        server.stop()


def test_lease_options_are_checked() -> None:
    db = Database("sqlite+aiosqlite:////tmp/never-opened.db")
    with pytest.raises(ValueError, match="fence_after"):
        Membership(db, "a", lease=1.0, renew_interval=0.5, fence_after=1.0)
    with pytest.raises(ValueError, match="lease"):
        Membership(db, "a", lease=0)


async def test_a_pause_longer_than_fence_after_fences_at_the_first_check_on_resume(
    tmp_path: Path,
) -> None:
    """A controlled clock stands in for a SIGSTOP: the first question asked after the jump
    (before any timer or renewal could run) already sees the node fenced."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'clock.db'}"
    await upgrade(url)
    db = Database(url)
    now = [1000.0]
    m = Membership(
        db, "alpha", lease=300.0, renew_interval=60.0, fence_after=120.0, clock=lambda: now[0]
    )
    await m.join()
    assert m.renew_interval < 120.0 and not m.fenced
    now[0] += 119.0
    assert not m.fenced  # just under fence_after: still a member
    assert await m.renew()  # a renewal resets the measure from its start
    now[0] += 119.0
    assert not m.fenced
    now[0] += 1.0  # fence_after since the last renewal began: fenced, synchronously
    assert m.fenced and m.fence_reason == "renewal_overdue"
    with pytest.raises(FencedError):
        m.check()
    await m.leave()
    await db.dispose()
