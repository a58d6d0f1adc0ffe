"""Functions over HTTP on a real node: CRUD, versions, rollback, execute in the real sandbox,
errors as problems, and user A against user B's functions."""

from __future__ import annotations

import os
import shutil

import pytest

from .conftest import Live

ADD = "def add(a: int, b: int) -> int:\n    return a + b\n"
ADD_V2 = "def add(a: int, b: int) -> int:\n    return a + b + 0\n"
SCHEMA = {
    "type": "object",
    "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
    "required": ["a", "b"],
}


def _need_isolation() -> None:
    if shutil.which("bwrap") or shutil.which("unshare"):
        return
    reason = "neither bubblewrap nor unshare is installed; run `make install` as root"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true requires an isolation mechanism: {reason}")
    pytest.skip(reason)


async def test_crud_versions_rollback(live: Live) -> None:
    admin = live.admin
    body = {"name": "add", "code": ADD, "input_schema": SCHEMA, "description": "adds"}
    r = await admin.post("/api/v1/functions", json=body)
    assert r.status_code == 201, r.text
    assert r.headers["etag"] == '"1"' and r.json()["sha256"]
    assert (await admin.post("/api/v1/functions", json=body)).status_code == 409
    content = {k: v for k, v in body.items() if k != "name"}
    same = await admin.put("/api/v1/functions/add", json=content)
    assert same.json()["version"] == 1  # unchanged content: no new version
    r = await admin.put("/api/v1/functions/add", json={**content, "code": ADD_V2})
    assert r.json()["version"] == 2
    stale = await admin.put("/api/v1/functions/add", json=content, headers={"If-Match": '"1"'})
    assert stale.status_code == 412 and stale.headers["etag"] == '"2"'
    versions = (await admin.get("/api/v1/functions/add/versions")).json()["items"]
    assert [v["version"] for v in versions] == [1, 2]
    assert (await admin.get("/api/v1/functions/add/versions/1")).json()["code"] == ADD
    r = await admin.post("/api/v1/functions/add/rollback", json={"version": 1})
    assert r.json()["version"] == 3 and r.json()["code"] == ADD
    listed = (await admin.get("/api/v1/functions")).json()
    assert [f["name"] for f in listed["items"]] == ["add"]
    assert (await admin.delete("/api/v1/functions/add")).status_code == 204
    assert (await admin.get("/api/v1/functions/add")).status_code == 404


async def test_bad_code_and_bodies_are_4xx(live: Live) -> None:
    admin = live.admin
    cases = [
        ({"name": "f", "code": "def f(:\n  pass\n"}, 422),
        ({"name": "f", "code": "def f():\n    return eval('1')\n"}, 422),
        ({"name": "f", "code": "import os\ndef f():\n    return 1\n"}, 422),
        ({"name": "f", "code": ADD}, 422),  # does not define f
        ({"name": "f", "code": "def f():\n    return 1\n", "owner": "x"}, 422),
        ({"name": "bad name", "code": "def f(): pass"}, 422),
        ({"name": "f", "code": "def f():\n    return 1\n", "timeout_s": 0}, 422),
    ]
    for body, status in cases:
        r = await admin.post("/api/v1/functions", json=body)
        assert r.status_code == status, (body, r.text)
        assert r.headers["content-type"] == "application/problem+json"
    syntax = (await admin.post("/api/v1/functions", json=cases[0][0])).json()
    assert syntax["line"] == 1 and syntax["errors"][0]["field"] == "code"
    assert (await admin.get("/api/v1/functions")).json()["items"] == []  # nothing written


async def test_execute_in_the_sandbox(live: Live) -> None:
    _need_isolation()
    admin = live.admin
    await admin.post("/api/v1/functions", json={"name": "add", "code": ADD, "input_schema": SCHEMA})
    boom = "def boom(x: int) -> int:\n    print('about to fail')\n    return 1 // x\n"
    await admin.post("/api/v1/functions", json={"name": "boom", "code": boom})
    slow = "import time\ndef slow() -> int:\n    while True:\n        pass\n"
    r = await admin.post(
        "/api/v1/functions",
        json={"name": "slow", "code": slow, "allowed_imports": ["time"], "timeout_s": 0.5},
    )
    assert r.status_code == 201, r.text

    r = await admin.post("/api/v1/functions/add/execute", json={"args": {"a": 2, "b": 3}})
    assert r.status_code == 200, r.text
    assert r.json()["value"] == 5 and r.json()["version"] == 1 and r.json()["execution_id"]
    bad = await admin.post("/api/v1/functions/add/execute", json={"args": {"a": "x", "b": 3}})
    assert bad.status_code == 422 and bad.json()["type"].endswith("validation")
    raised = await admin.post("/api/v1/functions/boom/execute", json={"args": {"x": 0}})
    assert raised.status_code == 422, raised.text
    assert raised.json()["type"].endswith("function-raised")
    assert "ZeroDivisionError" in raised.json()["detail"] and raised.json()["execution_id"]
    timed = await admin.post("/api/v1/functions/slow/execute", json={})
    assert timed.status_code == 504, timed.text
    missing = await admin.post("/api/v1/functions/nope/execute", json={})
    assert missing.status_code == 404


async def test_user_a_cannot_reach_user_b_functions(live: Live) -> None:
    alice_key = await live.key("user", "alice")
    alice = live.client(alice_key)
    bob = live.client(await live.key("user", "bob"))
    operator = live.client(await live.key("operator", "ops"))
    r = await alice.post(
        "/api/v1/functions", json={"name": "mine", "code": ADD.replace("add", "mine")}
    )
    # the owner is the key (name and immutable prefix), never the bare name
    assert r.status_code == 201 and r.json()["created_by"] == f"alice:{alice_key.split('_')[1]}"
    content = {"code": ADD.replace("add", "mine")}
    denied = [
        await bob.get("/api/v1/functions/mine"),
        await bob.get("/api/v1/functions/mine/versions"),
        await bob.get("/api/v1/functions/mine/versions/1"),
        await bob.put("/api/v1/functions/mine", json=content),
        await bob.post("/api/v1/functions/mine/rollback", json={"version": 1}),
        await bob.post("/api/v1/functions/mine/execute", json={"args": {"a": 1, "b": 2}}),
        await bob.delete("/api/v1/functions/mine"),
    ]
    assert [r.status_code for r in denied] == [404] * 7
    taken = await bob.post("/api/v1/functions", json={"name": "mine", **content})
    assert taken.status_code == 409
    assert (await bob.get("/api/v1/functions")).json()["items"] == []
    assert [f["name"] for f in (await alice.get("/api/v1/functions")).json()["items"]] == ["mine"]
    # operators reach every function; the function stays alice's
    r = await operator.put("/api/v1/functions/mine", json={"code": ADD_V2.replace("add", "mine")})
    assert r.status_code == 200 and r.json()["version"] == 2
    assert (await alice.get("/api/v1/functions/mine")).json()["version"] == 2
    assert (await alice.delete("/api/v1/functions/mine")).status_code == 204
