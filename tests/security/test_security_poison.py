"""Issue 14 item 2: values that cannot be stored and served back are refused at the door.

Every body (tasks, functions' args and schemas, agent config and text, webhooks, session
messages, keys) with a lone surrogate or nesting deeper than ``MAX_JSON_DEPTH`` gets a 422
problem+json naming the field, through one application-wide check; nothing is stored and a
function with such arguments never runs. A row poisoned by an older version is served
sanitised instead of failing every listing."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from netsuke.api import Settings
from netsuke.store import MAX_JSON_DEPTH, TaskDraft
from tests.api.conftest import Live, serve

SURROGATE = '"\\ud800"'  # JSON text for a lone surrogate
DEEP = "[" * (MAX_JSON_DEPTH + 5) + "]" * (MAX_JSON_DEPTH + 5)

# (method, path, JSON body text with @ for the poison, the field the 422 must name)
TEMPLATES = [
    ("POST", "/api/v1/tasks", '{"kind":"k","payload":{"x":@}}', "payload.x"),
    ("POST", "/api/v1/functions/echo/execute", '{"args":{"x":@}}', "args.x"),
    (
        "POST",
        "/api/v1/functions",
        '{"name":"f2","code":"def f2():\\n    return 1\\n","output_schema":{"description":@}}',
        "output_schema.description",
    ),
    ("POST", "/api/v1/agents", '{"name":"a1","model":"test","description":@}', "description"),
    ("POST", "/api/v1/agents", '{"name":"a2","model":"test","config":{"k":@}}', "config.k"),
    (
        "POST",
        "/api/v1/webhooks",
        '{"url":"https://example.org/h","topics":["*"],"description":@}',
        "description",
    ),
    ("POST", "/api/v1/sessions/greeter-u1/messages", '{"message":@}', "message"),
    ("POST", "/api/v1/keys", '{"name":@,"role":"user"}', "name"),
]
CASES = [
    (method, path, text.replace("@", poison), field)
    for method, path, text, field in TEMPLATES
    for poison in (SURROGATE, DEEP)
]


@pytest.mark.timeout(90)
async def test_poison_bodies_are_refused_at_the_door_and_nothing_runs(tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'api.db'}", port=0, rate_limit_per_minute=0
    )
    async with serve(settings) as live:
        admin = live.admin
        code = "def echo(x=None):\n    return x\n"
        r = await admin.post("/api/v1/functions", json={"name": "echo", "code": code})
        assert r.status_code == 201, r.text
        executions = (await live.node.store.executions.list(limit=1000)).items
        tasks_before = (await admin.get("/api/v1/tasks", params={"limit": 1000})).json()
        for method, path, text, field in CASES:
            r = await admin.request(
                method, path, content=text.encode(), headers={"Content-Type": "application/json"}
            )
            assert r.status_code == 422, (path, r.status_code, r.text)
            assert r.headers["content-type"] == "application/problem+json"
            problem = r.json()
            assert problem["errors"][0]["field"].startswith(field), (path, problem)
            assert "\ud800" not in r.text and "\\ud800" not in r.text  # never echoed
        # a caller without a key is refused as such first; a refused body is audited as its key's
        anonymous = await live.client().post(
            "/api/v1/tasks",
            content=CASES[0][2].encode(),
            headers={"Content-Type": "application/json"},
        )
        assert anonymous.status_code == 401
        audit = await admin.get("/api/v1/audit", params={"action": "POST /api/v1/tasks"})
        refused = [e for e in audit.json()["items"] if e["outcome"] == "refused"]
        assert refused and all(e["actor"].startswith("bootstrap-admin:") for e in refused)
        # nothing stored, nothing ran
        assert (await live.node.store.executions.list(limit=1000)).items == executions
        assert (await admin.get("/api/v1/tasks", params={"limit": 1000})).json() == tasks_before
        listed = (await admin.get("/api/v1/agents")).json()
        assert not {"a1", "a2"} & {a["name"] for a in listed["items"]}
        assert not {"f2", "f3"} & {
            f["name"] for f in (await admin.get("/api/v1/functions")).json()["items"]
        }
        # a paired surrogate (an emoji) is ordinary Unicode and still accepted
        ok = await admin.post(
            "/api/v1/tasks",
            content=b'{"kind":"k","payload":{"x":"\\ud83d\\ude00"}}',
            headers={"Content-Type": "application/json"},
        )
        assert ok.status_code == 201 and ok.json()["payload"] == {"x": "\U0001f600"}


@pytest.mark.timeout(60)
async def test_a_poisoned_row_from_an_older_version_does_not_fail_listings(
    tmp_path: Path,
) -> None:
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'api.db'}", port=0, rate_limit_per_minute=0
    )
    async with serve(settings) as live:
        await _poison(live)
        admin = live.admin
        listing = await admin.get("/api/v1/tasks", params={"status": "queued", "limit": 1000})
        assert listing.status_code == 200, listing.text
        items = {t["kind"]: t for t in listing.json()["items"]}
        assert items["surrogate"]["payload"]["x"].startswith("\ufffd")
        deep = items["deep"]["payload"]["x"]
        for _ in range(MAX_JSON_DEPTH - 1):
            assert isinstance(deep, list)
            deep = deep[0]
        assert deep == "[nested too deep]"
        one = await admin.get(f"/api/v1/tasks/{items['surrogate']['id']}")
        assert one.status_code == 200


async def _poison(live: Live) -> None:
    """Rows as an older version stored them (below the queue's check, straight into the
    store's task table)."""
    deep: object = []
    for _ in range(200):
        deep = [deep]
    now = datetime.now(UTC)
    await live.node.store.tasks.insert(
        [
            TaskDraft(kind="surrogate", payload={"x": "\ud800"}, run_at=now),
            TaskDraft(kind="deep", payload={"x": deep}, run_at=now),
        ],
        now=now,
    )
