"""Contract of /api/v1/agents: create, read, update with If-Match, versions, rollback, delete."""

from __future__ import annotations

import asyncio

from netsuke.events import topics

from .conftest import Live

PROBLEM = "application/problem+json"


async def test_create_returns_201_with_etag_location_and_version_one(live: Live) -> None:
    r = await live.admin.post("/api/v1/agents", json={"name": "search", "capabilities": ["search"]})
    assert r.status_code == 201, r.text
    assert r.headers["etag"] == '"1"'
    assert r.headers["location"] == "/api/v1/agents/search"
    body = r.json()
    assert body["version"] == 1 and body["capabilities"] == ["search"]
    assert body["created_by"].startswith("bootstrap-admin:")
    got = await live.admin.get("/api/v1/agents/search")
    assert got.status_code == 200 and got.headers["etag"] == '"1"'


async def test_unknown_fields_are_refused_and_nothing_is_written(live: Live) -> None:
    r = await live.admin.post("/api/v1/agents", json={"name": "x", "version": 99})
    assert r.status_code == 422
    assert r.headers["content-type"].startswith(PROBLEM)
    problem = r.json()
    assert problem["status"] == 422 and problem["errors"][0]["field"] == "version"
    assert not await live.node.store.agents.exists("x")
    nested = await live.admin.post(
        "/api/v1/agents", json={"name": "x", "model_settings": {"temperature": 1, "admin": True}}
    )
    assert nested.status_code == 422
    assert nested.json()["errors"][0]["field"] == "model_settings.admin"


async def test_store_validation_is_a_422_naming_the_field(live: Live) -> None:
    r = await live.admin.post("/api/v1/agents", json={"name": "x", "model": "nonsense:gpt"})
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "model"


async def test_taken_name_is_409_with_the_current_version(live: Live) -> None:
    await live.admin.post("/api/v1/agents", json={"name": "dup"})
    r = await live.admin.post("/api/v1/agents", json={"name": "dup"})
    assert r.status_code == 409
    assert r.json()["current_version"] == 1


async def test_put_requires_if_match_and_refuses_a_stale_version(live: Live) -> None:
    admin = live.admin
    await admin.post("/api/v1/agents", json={"name": "a"})
    missing = await admin.put("/api/v1/agents/a", json={"description": "v2"})
    assert missing.status_code == 428
    ok = await admin.put(
        "/api/v1/agents/a", json={"description": "v2"}, headers={"If-Match": '"1"'}
    )
    assert ok.status_code == 200 and ok.headers["etag"] == '"2"'
    stale = await admin.put(
        "/api/v1/agents/a", json={"description": "v3"}, headers={"If-Match": '"1"'}
    )
    assert stale.status_code == 412
    assert stale.json()["current_version"] == 2 and stale.headers["etag"] == '"2"'
    assert (await live.node.store.agents.get("a")).description == "v2"
    bad = await admin.put(
        "/api/v1/agents/a", json={"description": "v3"}, headers={"If-Match": "yes"}
    )
    assert bad.status_code == 400
    star = await admin.put(
        "/api/v1/agents/a", json={"description": "v3"}, headers={"If-Match": "*"}
    )
    assert star.status_code == 200 and star.json()["version"] == 3


async def test_put_refuses_a_name_in_the_body(live: Live) -> None:
    await live.admin.post("/api/v1/agents", json={"name": "a"})
    r = await live.admin.put("/api/v1/agents/a", json={"name": "b"}, headers={"If-Match": '"1"'})
    assert r.status_code == 422


async def test_versions_paginate_and_rollback_adds_a_version(live: Live) -> None:
    admin = live.admin
    await admin.post("/api/v1/agents", json={"name": "a", "description": "one"})
    for i, text in enumerate(["two", "three"], start=1):
        await admin.put(
            "/api/v1/agents/a", json={"description": text}, headers={"If-Match": f'"{i}"'}
        )
    first = (await admin.get("/api/v1/agents/a/versions", params={"limit": 2})).json()
    assert [v["version"] for v in first["items"]] == [1, 2] and first["next_cursor"] == "2"
    rest = (await admin.get("/api/v1/agents/a/versions", params={"cursor": "2"})).json()
    assert [v["version"] for v in rest["items"]] == [3] and rest["next_cursor"] is None
    v1 = await admin.get("/api/v1/agents/a/versions/1")
    assert v1.json()["description"] == "one"
    rolled = await admin.post("/api/v1/agents/a/rollback", json={"version": 1})
    assert rolled.status_code == 200
    assert rolled.json()["version"] == 4 and rolled.json()["description"] == "one"
    missing = await admin.post("/api/v1/agents/a/rollback", json={"version": 40})
    assert missing.status_code == 404


async def test_list_paginates_in_name_order(live: Live) -> None:
    for name in ["c", "a", "b"]:
        await live.admin.post("/api/v1/agents", json={"name": name})
    page = (await live.admin.get("/api/v1/agents", params={"limit": 2})).json()
    assert [a["name"] for a in page["items"]] == ["a", "b"] and page["next_cursor"] == "b"
    rest = (await live.admin.get("/api/v1/agents", params={"cursor": "b"})).json()
    assert [a["name"] for a in rest["items"]] == ["c"] and rest["next_cursor"] is None
    bad = await live.admin.get("/api/v1/agents", params={"limit": 0})
    assert bad.status_code == 422


async def test_delete_needs_if_match_and_then_the_agent_is_gone(live: Live) -> None:
    await live.admin.post("/api/v1/agents", json={"name": "gone"})
    assert (await live.admin.delete("/api/v1/agents/gone")).status_code == 428
    assert (
        await live.admin.delete("/api/v1/agents/gone", headers={"If-Match": '"1"'})
    ).status_code == 204
    r = await live.admin.get("/api/v1/agents/gone")
    assert r.status_code == 404 and r.headers["content-type"].startswith(PROBLEM)


async def test_every_change_publishes_definition_changed(live: Live) -> None:
    sub = live.node.runtime.events.subscribe(topics.DEFINITION_CHANGED)
    await live.admin.post("/api/v1/agents", json={"name": "ev"})
    await live.admin.put(
        "/api/v1/agents/ev", json={"description": "x"}, headers={"If-Match": '"1"'}
    )
    await live.admin.delete("/api/v1/agents/ev", headers={"If-Match": '"2"'})
    seen = [await sub.get(timeout=2) for _ in range(3)]
    assert [(e.data["action"], e.data["version"]) for e in seen] == [
        ("created", 1),
        ("updated", 2),
        ("deleted", 2),
    ]
    assert all(e.data["actor"].startswith("bootstrap-admin:") for e in seen)
    sub.close()
    await asyncio.sleep(0)


async def test_unknown_route_and_method_are_problem_json(live: Live) -> None:
    r = await live.admin.get("/api/v1/nothing-here")
    assert r.status_code == 404 and r.headers["content-type"].startswith(PROBLEM)
    r = await live.admin.patch("/api/v1/agents")
    assert r.status_code == 405 and r.headers["content-type"].startswith(PROBLEM)


async def test_malformed_json_is_a_4xx(live: Live) -> None:
    r = await live.admin.post(
        "/api/v1/agents", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert 400 <= r.status_code < 500
    assert r.headers["content-type"].startswith(PROBLEM)
