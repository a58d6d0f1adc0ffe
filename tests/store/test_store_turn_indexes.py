"""Migration 0006: partial status and parent indexes, no index on messages.execution_id.

Queries by a rare status or by parent still use an index on both engines, and give the same
answers as before; a succeeded top-level execution writes neither partial index.
"""

from __future__ import annotations

from sqlalchemy import text

from netsuke.store import Execution, Store


async def _index_sql(store: Store) -> dict[str, str]:
    """Index name -> its definition, for the executions and messages tables."""
    async with store.database.read() as conn:
        if store.dialect == "sqlite":
            rows = await conn.execute(
                text(
                    "SELECT name, sql FROM sqlite_master WHERE type = 'index' "
                    "AND tbl_name IN ('executions', 'messages') AND sql IS NOT NULL"
                )
            )
        else:
            rows = await conn.execute(
                text(
                    "SELECT indexname, indexdef FROM pg_indexes "
                    "WHERE tablename IN ('executions', 'messages')"
                )
            )
        return {str(name): str(sql) for name, sql in rows}


async def _plan(store: Store, sql: str, **params: object) -> str:
    async with store.database.read() as conn:
        if store.dialect == "sqlite":
            rows = await conn.execute(text("EXPLAIN QUERY PLAN " + sql), params)
            return " ".join(str(r[-1]) for r in rows)
        await conn.execute(text("SET LOCAL enable_seqscan = off"))  # the table is tiny
        rows = await conn.execute(text("EXPLAIN " + sql), params)
        return " ".join(str(r[0]) for r in rows)


async def test_the_turn_path_indexes_are_partial_or_gone(store: Store) -> None:
    indexes = await _index_sql(store)
    assert "ix_messages_execution_id" not in indexes
    assert "succeeded" in indexes["ix_executions_status"]
    assert "WHERE" in indexes["ix_executions_status"].upper()
    assert "NOT NULL" in indexes["ix_executions_parent_id"].upper()
    # the rest of the executions indexes are whole
    for name in ("ix_executions_session_id", "ix_executions_started_at"):
        assert "WHERE" not in indexes[name].upper()


async def test_rare_statuses_and_parents_are_found_through_the_partial_indexes(
    store: Store,
) -> None:
    status_plan = await _plan(
        store,
        "SELECT id FROM executions WHERE status = :s AND status <> 'succeeded'",
        s="failed",
    )
    assert "ix_executions_status" in status_plan
    parent_plan = await _plan(store, "SELECT id FROM executions WHERE parent_id = :p", p="x")
    assert "ix_executions_parent_id" in parent_plan


async def test_listing_by_status_and_parent_gives_the_same_answers(store: Store) -> None:
    root = Execution(agent_name="boss", status="succeeded")
    await store.executions.record(root)
    children = [
        Execution(agent_name="helper", status=status, parent_id=root.id)
        for status in ("succeeded", "failed", "running", "cancelled")
    ]
    for child in children:
        await store.executions.record(child)
    await store.executions.record(Execution(agent_name="alone", status="failed"))

    failed = (await store.executions.list(status="failed")).items
    assert {e.agent_name for e in failed} == {"helper", "alone"}
    succeeded = (await store.executions.list(status="succeeded")).items
    assert {e.id for e in succeeded} == {root.id, children[0].id}
    running = (await store.executions.list(status="running", agent_name="helper")).items
    assert [e.id for e in running] == [children[2].id]
    below = (await store.executions.list(parent_id=root.id)).items
    assert {e.id for e in below} == {c.id for c in children}
    chain = await store.executions.chain(root.id)
    assert chain[0].id == root.id and {e.id for e in chain[1:]} == {c.id for c in children}
    # a status moving away from succeeded is found by the partial index again
    await store.executions.finish(children[0].id, status="failed", error="late")
    assert children[0].id in {e.id for e in (await store.executions.list(status="failed")).items}
