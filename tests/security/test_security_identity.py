"""Issue 14 item 9: ownership and idempotency follow the API key's immutable id, not its name.

Key names are free text chosen by an admin: a key named ``alice:x`` must not replay alice's
idempotent submissions, and a user key named like an operator's (or like the bootstrap admin)
must not read that key's tasks or functions. Rows recorded by name before the change are
migrated to the key's id when the name is unambiguous (``0008_owner_ids``)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from netsuke.api import Settings
from netsuke.store import upgrade
from tests.api.conftest import serve

CODE = "def mine():\n    return 1\n"


@pytest.mark.timeout(60)
async def test_key_names_never_reach_another_keys_tasks_functions_or_replies(
    tmp_path: Path,
) -> None:
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'api.db'}", port=0, rate_limit_per_minute=0
    )
    async with serve(settings) as live:
        alice = live.client(await live.key("user", "alice"))
        alice_x = live.client(await live.key("user", "alice:x"))
        op1 = live.client(await live.key("operator", "op1"))
        fake_op1 = live.client(await live.key("user", "op1"))
        fake_admin = live.client(await live.key("user", "bootstrap-admin"))

        # idempotency: "alice" + "x:y" and "alice:x" + "y" were the same scope by name
        mine = await alice.post(
            "/api/v1/tasks",
            json={"kind": "k", "payload": {"secret": "ALICE-IDEMP"}, "idempotency_key": "x:y"},
        )
        assert mine.status_code == 201
        theirs = await alice_x.post("/api/v1/tasks", json={"kind": "other", "idempotency_key": "y"})
        assert theirs.status_code == 201, theirs.text
        assert theirs.json()["id"] != mine.json()["id"] and "ALICE-IDEMP" not in theirs.text
        again = await alice.post(
            "/api/v1/tasks",
            json={"kind": "k", "payload": {"secret": "ALICE-IDEMP"}, "idempotency_key": "x:y"},
        )
        assert again.status_code == 200 and again.json()["id"] == mine.json()["id"]
        assert (await alice_x.get(f"/api/v1/tasks/{mine.json()['id']}")).status_code == 404

        # a user key named like an operator's key reads none of its tasks or functions
        op_task = await op1.post("/api/v1/tasks", json={"kind": "k", "payload": {"p": "OP"}})
        assert op_task.status_code == 201
        made = await op1.post("/api/v1/functions", json={"name": "mine", "code": CODE})
        assert made.status_code == 201
        assert (await fake_op1.get(f"/api/v1/tasks/{op_task.json()['id']}")).status_code == 404
        listed = await fake_op1.get("/api/v1/tasks")
        assert listed.status_code == 200 and listed.json()["items"] == []
        assert (await fake_op1.get("/api/v1/functions/mine")).status_code == 404
        assert (await fake_op1.get("/api/v1/functions")).json()["items"] == []

        # nor one named like the bootstrap admin key
        admin_task = await live.admin.post("/api/v1/tasks", json={"kind": "k"})
        assert admin_task.status_code == 201
        assert (await fake_admin.get("/api/v1/tasks")).json()["items"] == []
        assert (await fake_admin.get(f"/api/v1/tasks/{admin_task.json()['id']}")).status_code == 404
        # the real owner still reaches its own
        assert (await alice.get(f"/api/v1/tasks/{mine.json()['id']}")).status_code == 200
        assert [t["id"] for t in (await alice.get("/api/v1/tasks")).json()["items"]] == [
            mine.json()["id"]
        ]


@pytest.mark.timeout(60)
async def test_owner_migration_rewrites_unambiguous_names_to_key_ids(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    url = f"sqlite+aiosqlite:///{db}"
    await upgrade(url, "0006_turn_indexes")
    now = "2026-01-01 00:00:00"
    with sqlite3.connect(db) as conn:
        keys = [("aaaa1111", "alice", "user"), ("bbbb2222", "op1", "operator"),
                ("cccc3333", "op1", "user")]  # fmt: skip
        for prefix, name, role in keys:
            conn.execute(
                "INSERT INTO api_keys (prefix, secret_hash, name, role, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (prefix, "0" * 64, name, role, now),
            )
        for actor, target in (("alice", "task:t1"), ("op1", "task:t2")):
            conn.execute(
                "INSERT INTO audit_log (at, actor, action, target, outcome, details) "
                "VALUES (?, ?, 'task.submit', ?, 'ok', ?)",
                (now, actor, target, json.dumps({})),
            )
        conn.execute(
            "INSERT INTO audit_log (at, actor, action, target, outcome, details) "
            "VALUES (?, 'alice', 'agent.create', 'agent:a', 'ok', '{}')",
            (now,),
        )
        conn.execute(
            "INSERT INTO functions (id, name, current_version, created_at, updated_at) "
            "VALUES (1, 'f', 1, ?, ?)",
            (now, now),
        )
        conn.execute(
            "INSERT INTO function_versions (function_id, version, description, code, sha256, "
            "is_async, limits, allowed_imports, content_hash, created_by, created_at) "
            "VALUES (1, 1, '', 'def f(): pass', ?, 0, '{}', '[]', ?, 'alice', ?)",
            ("0" * 64, "0" * 64, now),
        )
    assert await upgrade(url, "0008_owner_ids") == "0008_owner_ids"
    with sqlite3.connect(db) as conn:
        actors = dict(
            conn.execute("SELECT target, actor FROM audit_log WHERE action = 'task.submit'")
        )
        other = conn.execute("SELECT actor FROM audit_log WHERE action = 'agent.create'").fetchone()
        created_by = conn.execute("SELECT created_by FROM function_versions").fetchone()
    assert actors == {"task:t1": "alice:aaaa1111", "task:t2": "op1"}  # op1: two keys, unowned
    assert other == ("alice",)  # only ownership rows change
    assert created_by == ("alice:aaaa1111",)
