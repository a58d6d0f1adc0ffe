"""Security: the role x endpoint matrix, users confined to their own sessions, rate limits,
body limits, an audit record for every mutating call, and no secret in logs or errors."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import structlog

from netsuke.api import Principal

from .conftest import Live

Factory = Callable[..., AbstractAsyncContextManager[Live]]
HOOK = str(uuid.uuid4())

# (method, path, json body, the least role admitted)
MATRIX: list[tuple[str, str, dict | None, str]] = [
    ("GET", "/api/v1/agents", None, "user"),
    ("GET", "/api/v1/agents/m", None, "user"),
    ("GET", "/api/v1/agents/m/versions", None, "user"),
    ("GET", "/api/v1/agents/m/versions/1", None, "user"),
    ("POST", "/api/v1/agents", {"name": "n"}, "operator"),
    ("PUT", "/api/v1/agents/m", {"description": "d"}, "operator"),
    ("PATCH", "/api/v1/agents/m", {"description": "p"}, "operator"),
    ("POST", "/api/v1/agents/m/rollback", {"version": 1}, "operator"),
    ("DELETE", "/api/v1/agents/m", None, "operator"),
    ("GET", "/api/v1/audit", None, "admin"),
    ("GET", "/api/v1/keys", None, "admin"),
    ("POST", "/api/v1/keys", {"name": "k", "role": "user"}, "admin"),
    ("DELETE", "/api/v1/keys/00000000", None, "admin"),
    ("GET", "/api/v1/webhooks", None, "admin"),
    ("POST", "/api/v1/webhooks", {"url": "http://127.0.0.1/x", "topics": ["a"]}, "admin"),
    ("GET", f"/api/v1/webhooks/{HOOK}", None, "admin"),
    ("DELETE", f"/api/v1/webhooks/{HOOK}", None, "admin"),
    ("GET", f"/api/v1/webhooks/{HOOK}/deliveries", None, "admin"),
]
RANK = {"anonymous": -1, "user": 0, "operator": 1, "admin": 2}


async def test_authorization_matrix_role_by_endpoint(live: Live) -> None:
    await live.node.store.agents.create({"name": "m"})
    keys = {
        "anonymous": None,
        "user": await live.key("user", "alice"),
        "operator": await live.key("operator"),
        "admin": await live.key("admin"),
    }
    failures = []
    for method, path, body, least in MATRIX:
        for who, key in keys.items():
            client = live.client(key, **({"If-Match": "*"} if method in ("PUT", "DELETE") else {}))
            r = await client.request(method, path, json=body)
            if who == "anonymous":
                expected_ok = r.status_code == 401
            elif RANK[who] < RANK[least]:
                expected_ok = r.status_code == 403
            else:
                expected_ok = r.status_code not in (401, 403) and r.status_code < 500
            if not expected_ok:
                failures.append((method, path, who, r.status_code))
            if r.status_code in (401, 403):
                assert r.headers["content-type"].startswith("application/problem+json")
            if method == "DELETE" and path.endswith("/m") and r.status_code == 204:
                await live.node.store.agents.create({"name": "m"})
    assert failures == []


async def test_a_bad_or_revoked_key_is_401(live: Live) -> None:
    key = await live.key("admin")
    prefix = key.split("_")[1]
    assert (await live.client(key).get("/api/v1/agents")).status_code == 200
    assert (await live.admin.delete(f"/api/v1/keys/{prefix}")).status_code == 200
    assert (await live.client(key).get("/api/v1/agents")).status_code == 401
    assert (await live.client("nsk_deadbeef_nope").get("/api/v1/agents")).status_code == 401
    r = await live.client("garbage").get("/api/v1/agents")
    assert r.status_code == 401 and "garbage" not in r.text


def test_a_user_acts_only_for_itself_and_operators_for_anyone() -> None:
    alice = Principal(prefix="a", name="alice", role="user")
    operator = Principal(prefix="o", name="ops", role="operator")
    assert alice.user_id == "alice" and alice.may_act_for("alice")
    assert not alice.may_act_for("bob") and not alice.may_act_for(None)
    assert operator.user_id is None and operator.may_act_for("bob")
    assert operator.has("user") and not operator.has("admin")


async def test_rate_limit_answers_429_with_retry_after(live_factory: Factory) -> None:
    async with live_factory(rate_limit_per_minute=60, rate_limit_burst=3) as live:
        client = live.admin
        codes = [(await client.get("/api/v1/agents")).status_code for _ in range(5)]
        assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]
        r = await client.get("/api/v1/agents")
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert r.json()["type"].endswith("rate-limited")
        other = live.client(await live.key("user"))
        assert (await other.get("/api/v1/agents")).status_code == 200  # per key


async def test_bodies_over_the_limit_are_413_and_change_nothing(live_factory: Factory) -> None:
    async with live_factory(max_body_bytes=2048) as live:
        big = {"name": "big", "description": "x" * 4000}
        r = await live.admin.post("/api/v1/agents", json=big)
        assert r.status_code == 413
        assert r.headers["content-type"].startswith("application/problem+json")

        async def chunks():
            yield b'{"name": "big", "description": "'
            for _ in range(10):
                yield b"x" * 500
            yield b'"}'

        r = await live.admin.post(
            "/api/v1/agents", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 413
        assert not await live.node.store.agents.exists("big")


async def test_every_mutating_call_is_audited_with_its_outcome(live: Live) -> None:
    user = live.client(await live.key("user", "carol"))
    await live.admin.post("/api/v1/agents", json={"name": "aud"})
    await live.admin.post("/api/v1/agents", json={"name": "aud"})  # 409
    await user.post("/api/v1/agents", json={"name": "nope"})  # 403
    assert (await live.client().delete("/api/v1/agents/aud")).status_code == 401
    entries = (
        await live.admin.get("/api/v1/audit", params={"action": "POST /api/v1/agents"})
    ).json()
    outcomes = [(e["outcome"], e["details"]["status"]) for e in entries["items"]]
    assert outcomes == [("denied", 403), ("refused", 409), ("ok", 201)]
    assert entries["items"][0]["actor"].startswith("carol:")
    # a request without a valid key changes nothing: counted and logged, never an audit row
    anon = (await live.admin.get("/api/v1/audit", params={"actor": "anonymous"})).json()["items"]
    assert anon == []


async def test_secrets_never_reach_logs_or_errors(live: Live) -> None:
    with structlog.testing.capture_logs() as logs:
        created = await live.admin.post("/api/v1/keys", json={"name": "dave", "role": "user"})
        secret = created.json()["secret"]
        await live.client(secret).get("/api/v1/agents")
        bad = await live.client(secret + "x").get("/api/v1/agents")
        hook = await live.admin.post(
            "/api/v1/webhooks",
            json={"url": "http://10.0.0.1/x", "topics": ["a"], "secret": "sup3r-s3cret-value-123"},
        )
    text = repr(logs)
    assert secret not in text and live.admin_key not in text
    assert "sup3r-s3cret-value-123" not in text and "sup3r-s3cret-value-123" not in hook.text
    assert secret not in bad.text
    listed = (await live.admin.get("/api/v1/keys")).text
    assert secret not in listed and "secret_hash" not in listed


async def test_keys_ls_shows_when_a_key_was_last_used(live: Live) -> None:
    key = await live.key("user", "lu")
    prefix = key.split("_")[1]

    async def last_used() -> str | None:
        listed = (await live.admin.get("/api/v1/keys")).json()["items"]
        return next(k["last_used_at"] for k in listed if k["prefix"] == prefix)

    assert await last_used() is None
    assert (await live.client(key).get("/api/v1/agents")).status_code == 200
    first = await last_used()
    assert first is not None
    for _ in range(5):  # within the minute: no write per request
        await live.client(key).get("/api/v1/agents")
    assert await last_used() == first


async def test_the_key_cache_writes_last_used_at_most_once_per_period(live: Live) -> None:
    from netsuke.api._auth import KeyCache

    store = live.node.store
    key = await live.key("user", "period")
    prefix = key.split("_")[1]

    async def stamp() -> object:
        return next(k.last_used_at for k in await store.api_keys.list() if k.prefix == prefix)

    seldom = KeyCache(store, cache_s=0.0, touch_s=3600.0)
    for _ in range(3):
        assert await seldom.verify(key) is not None
    once = await stamp()
    assert once is not None
    await seldom.verify(key)
    assert await stamp() == once  # the period has not passed: no second write
    always = KeyCache(store, cache_s=0.0, touch_s=0.0)
    await always.verify(key)
    assert await stamp() != once  # a period of 0 writes each time (a later timestamp)
