from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from netsuke.store import (
    Database,
    SchemaOutdatedError,
    SchemaTooNewError,
    Store,
    ValidationError,
    current_revision,
    downgrade,
    head_revision,
    known_revisions,
    upgrade,
)
from netsuke.store._models import Base

TABLES_BY_REVISION = {
    "0001_definitions": {"agents", "agent_versions", "functions", "function_versions"},
    "0002_runtime": {"conversations", "messages", "executions"},
    "0003_security": {"audit_log", "api_keys"},
    "0004_tasks": {"tasks", "workflow_runs", "workflow_steps"},
    "0005_webhooks": {"webhooks", "webhook_deliveries"},
    "0006_turn_indexes": set(),  # indexes only
    "0007_incarnation": set(),  # a column
    "0008_owner_ids": set(),  # rows only (owners by key id)
    "0009_manager": {"manager_agents", "manager_agent_events"},
    "0010_cluster": {"cluster_nodes", "cluster_names"},
    "0011_session_owners": {"turn_requests"},  # and two owner columns
    "0012_node_labels": set(),  # a column
    "0013_session_restart": set(),  # two columns and an index
    "0014_session_owner_pid": set(),  # a column
}


async def _tables(url: str) -> set[str]:
    db = Database(url)
    try:
        async with db.read() as conn:
            names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    finally:
        await db.dispose()
    return names - {"alembic_version"}


async def test_upgrade_then_downgrade_step_by_step_creates_and_drops_each_revisions_tables(
    db_url: str,
) -> None:
    assert await current_revision(db_url) is None
    assert await _tables(db_url) == set()
    expected: set[str] = set()
    for revision in known_revisions():
        assert await upgrade(db_url, revision) == revision
        expected |= TABLES_BY_REVISION[revision]
        assert await _tables(db_url) == expected
    assert await current_revision(db_url) == head_revision()
    for revision in reversed(known_revisions()):
        previous = known_revisions().index(revision) - 1
        target = known_revisions()[previous] if previous >= 0 else "base"
        assert await downgrade(db_url, target) == (None if target == "base" else target)
        expected -= TABLES_BY_REVISION[revision]
        assert await _tables(db_url) == expected
    assert await upgrade(db_url) == head_revision()


async def test_migrated_schema_matches_the_models_exactly(db_url: str) -> None:
    await upgrade(db_url)
    db = Database(db_url)

    def diff(conn: Connection) -> list[object]:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    try:
        async with db.read() as conn:
            differences = await conn.run_sync(diff)
    finally:
        await db.dispose()
    assert differences == []


async def test_open_refuses_a_database_newer_than_the_code_and_leaves_it_alone(
    db_url: str,
) -> None:
    await upgrade(db_url)
    db = Database(db_url)
    try:
        async with db.write() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    finally:
        await db.dispose()
    with pytest.raises(SchemaTooNewError) as caught:
        await Store.open(db_url, migrate=True)
    assert caught.value.database_revision == "9999_future"
    assert caught.value.code_head == head_revision()
    assert "newer" in str(caught.value)
    with pytest.raises(SchemaTooNewError):
        await upgrade(db_url)
    assert await current_revision(db_url) == "9999_future"


async def test_open_migrates_embedded_sqlite_but_not_a_server_database(
    db_url: str, backend: str
) -> None:
    if backend == "sqlite":
        async with Store.open(db_url) as store:
            assert await store.agents.count() == 0
        assert await current_revision(db_url) == head_revision()
    else:
        with pytest.raises(SchemaOutdatedError) as caught:
            await Store.open(db_url)
        assert caught.value.database_revision is None
        assert await current_revision(db_url) is None
        await upgrade(db_url)
        async with Store.open(db_url) as store:
            assert await store.agents.count() == 0


async def test_partially_migrated_database_is_outdated_unless_migrated(db_url: str) -> None:
    await upgrade(db_url, "0001_definitions")
    with pytest.raises(SchemaOutdatedError):
        await Store.open(db_url, migrate=False)
    async with Store.open(db_url, migrate=True) as store:
        assert store.url
    assert await current_revision(db_url) == head_revision()


async def test_downgrade_to_an_unknown_revision_is_a_validation_error(db_url: str) -> None:
    await upgrade(db_url)
    with pytest.raises(ValidationError) as caught:
        await downgrade(db_url, "nope")
    assert caught.value.field == "revision"
    assert await current_revision(db_url) == head_revision()


async def test_foreign_keys_are_enforced(store: Store) -> None:
    with pytest.raises(Exception, match=r"(?i)foreign key"):
        async with store.database.write() as conn:
            await conn.execute(
                text(
                    "INSERT INTO messages (conversation_id, seq, kind, payload, created_at) "
                    "VALUES (424242, 0, 'request', '{}', CURRENT_TIMESTAMP)"
                )
            )


async def test_sqlite_connections_use_wal_busy_timeout_and_full_sync(
    store: Store, backend: str
) -> None:
    async with store.database.read() as conn:
        if backend == "sqlite":
            assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
            assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
            assert (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar() == 10_000
            assert (await conn.exec_driver_sql("PRAGMA synchronous")).scalar() == 2  # FULL
        else:
            assert (await conn.exec_driver_sql("SHOW synchronous_commit")).scalar() == "on"
