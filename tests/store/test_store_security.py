from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from sqlalchemy import text

from netsuke.store import NotFoundError, Store, ValidationError


async def test_api_keys_are_stored_hashed_with_only_the_prefix_in_clear(store: Store) -> None:
    issued = await store.api_keys.create("ci", "operator", actor="admin")
    secret = issued.secret
    assert secret.startswith(f"nsk_{issued.key.prefix}_")
    async with store.database.read() as conn:
        rows = (await conn.execute(text("SELECT * FROM api_keys"))).mappings().all()
    assert len(rows) == 1
    stored = dict(rows[0])
    assert stored["secret_hash"] == hashlib.sha256(secret.encode()).hexdigest()
    secret_part = secret.rsplit("_", 1)[1]
    assert all(secret_part not in str(value) for value in stored.values())
    assert stored["prefix"] == issued.key.prefix


async def test_verify_accepts_the_secret_and_refuses_anything_else(store: Store) -> None:
    issued = await store.api_keys.create("ops", "admin")
    key = await store.api_keys.verify(issued.secret)
    assert key is not None
    assert key.role == "admin"
    assert key.last_used_at is None
    tampered = issued.secret[:-1] + ("A" if issued.secret[-1] != "A" else "B")
    assert await store.api_keys.verify(tampered) is None
    assert await store.api_keys.verify("nsk_00000000_nope") is None
    assert await store.api_keys.verify("garbage") is None
    touched = await store.api_keys.verify(issued.secret, touch=True)
    assert touched is not None
    assert touched.last_used_at is not None


async def test_revoked_keys_no_longer_verify(store: Store) -> None:
    issued = await store.api_keys.create("temp", "user")
    revoked = await store.api_keys.revoke(issued.key.prefix, actor="admin")
    assert revoked.revoked_at is not None
    assert await store.api_keys.verify(issued.secret) is None
    assert await store.api_keys.list() == []
    assert [k.prefix for k in await store.api_keys.list(include_revoked=True)] == [
        issued.key.prefix
    ]
    with pytest.raises(NotFoundError):
        await store.api_keys.revoke("ffffffff")


async def test_unknown_role_is_refused(store: Store) -> None:
    with pytest.raises(ValidationError) as caught:
        await store.api_keys.create("x", "root")  # type: ignore[arg-type]
    assert caught.value.field == "role"
    assert await store.api_keys.list(include_revoked=True) == []


async def test_audit_records_and_filters(store: Store) -> None:
    await store.audit.record(actor="alice", action="session.open", target="session:1")
    await store.audit.record(
        actor="bob", action="auth.login", target="api", outcome="denied", details={"ip": "10.0.0.1"}
    )
    issued = await store.api_keys.create("k", "user", actor="alice")
    everything = (await store.audit.list()).items
    assert [e.action for e in everything] == ["api_key.create", "auth.login", "session.open"]
    denied = (await store.audit.list(actor="bob")).items
    assert denied[0].outcome == "denied"
    assert denied[0].details == {"ip": "10.0.0.1"}
    assert (await store.audit.list(target=f"api_key:{issued.key.prefix}")).items[0].actor == "alice"
    later = everything[0].at + timedelta(seconds=1)
    assert (await store.audit.list(since=later)).items == []
    first = await store.audit.list(limit=2)
    rest = await store.audit.list(limit=2, cursor=first.next_cursor)
    assert [e.id for e in first.items + rest.items] == [e.id for e in everything]
    with pytest.raises(ValidationError):
        await store.audit.record(actor="x", action="", target="t")


async def test_executions_form_chains(store: Store) -> None:
    root = await store.executions.start("agent_turn", agent_name="boss")
    child = await store.executions.start("agent_turn", agent_name="helper", parent_id=root.id)
    call = await store.executions.start("function_call", function_name="add", parent_id=child.id)
    done = await store.executions.finish(call.id, status="succeeded", tokens_in=0)
    assert done.duration_ms is not None
    assert done.duration_ms >= 0
    failed = await store.executions.finish(child.id, status="failed", error="boom")
    assert failed.error == "boom"
    chain = await store.executions.chain(root.id)
    assert [e.id for e in chain] == [root.id, child.id, call.id]
    assert [e.id for e in (await store.executions.list(parent_id=root.id)).items] == [child.id]
    assert [e.id for e in (await store.executions.list(status="failed")).items] == [child.id]
    with pytest.raises(ValidationError):
        await store.executions.finish(root.id, status="running")
    with pytest.raises(NotFoundError):
        await store.executions.finish("missing", status="failed")
    with pytest.raises(ValidationError):
        await store.executions.start("task", parent_id="missing")
