"""Issue 14, items 3 and 12 over HTTP, on a real node on 127.0.0.1 with a real store and sandbox.

Item 3: a user key cannot give a function more time or memory than its role's ceiling (422
naming the field, nothing stored), and calls at once are bounded per key and per node (429 with
Retry-After, problem+json, nothing run or recorded). Item 12: what the sandbox's language layer
refuses is refused through the API too."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import httpx
import pytest

from netsuke.api import SettingsError, load_settings
from netsuke.sandbox import FunctionStore
from tests.api.conftest import Live, live, live_factory  # noqa: F401  (fixtures)

PROBLEM = "application/problem+json"
QUICK = "def quick() -> int:\n    return 1\n"
HOLD = "import time\n\ndef hold(s: float) -> str:\n    time.sleep(s)\n    return 'done'\n"

LiveFactory = Callable[..., AbstractAsyncContextManager[Live]]


def _need_isolation() -> None:
    if shutil.which("bwrap") or shutil.which("unshare"):
        return
    reason = "neither bubblewrap nor unshare is installed; run `make install` as root"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true requires an isolation mechanism: {reason}")
    pytest.skip(reason)


def _fields(r: httpx.Response) -> list[str]:
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    return [e["field"] for e in r.json()["errors"]]


# ------------------------------------------------------------- item 3: per-role ceilings
async def test_a_user_key_cannot_store_limits_over_its_ceiling(live: Live) -> None:  # noqa: F811
    alice = live.client(await live.key("user", "alice"))
    body = {"name": "quick", "code": QUICK}
    r = await alice.post("/api/v1/functions", json={**body, "timeout_s": 3600})
    assert _fields(r) == ["timeout_s"]
    r = await alice.post("/api/v1/functions", json={**body, "memory_mb": 65536})
    assert _fields(r) == ["memory_mb"]
    r = await alice.post("/api/v1/functions", json={**body, "timeout_s": 3600, "memory_mb": 65536})
    assert _fields(r) == ["timeout_s", "memory_mb"]
    assert (await alice.get("/api/v1/functions/quick")).status_code == 404  # nothing stored
    r = await alice.post("/api/v1/functions", json={**body, "timeout_s": 60, "memory_mb": 512})
    assert r.status_code == 201, r.text
    r = await alice.put("/api/v1/functions/quick", json={"code": QUICK, "timeout_s": 61})
    assert _fields(r) == ["timeout_s"]
    assert (await alice.get("/api/v1/functions/quick")).json()["version"] == 1
    # an admin may (its ceilings are the store's range)
    r = await live.admin.post(
        "/api/v1/functions", json={"name": "big", "code": QUICK.replace("quick", "big"),
                                   "timeout_s": 3600, "memory_mb": 65536},
    )  # fmt: skip
    assert r.status_code == 201, r.text


async def test_rolling_back_to_a_version_over_the_ceiling_is_refused(
    live: Live,  # noqa: F811
) -> None:
    alice = live.client(await live.key("user", "alice"))
    assert (
        await alice.post("/api/v1/functions", json={"name": "quick", "code": QUICK})
    ).status_code == 201
    r = await live.admin.put("/api/v1/functions/quick", json={"code": QUICK, "timeout_s": 900})
    assert r.json()["version"] == 2
    r = await alice.put("/api/v1/functions/quick", json={"code": QUICK + "\n"})
    assert r.json()["version"] == 3
    r = await alice.post("/api/v1/functions/quick/rollback", json={"version": 2})
    assert _fields(r) == ["timeout_s"]
    assert (await alice.get("/api/v1/functions/quick")).json()["version"] == 3


async def test_ceilings_are_operator_settings(live_factory: LiveFactory) -> None:  # noqa: F811
    async with live_factory(function_max_timeout_s_user=5, function_max_memory_mb_user=128) as n:
        alice = n.client(await n.key("user", "alice"))
        r = await alice.post("/api/v1/functions", json={"name": "quick", "code": QUICK,
                                                        "timeout_s": 10})  # fmt: skip
        assert _fields(r) == ["timeout_s"]
        assert "at most 5" in r.json()["detail"]
        # omitted limits default to the smaller of their default and the ceiling
        r = await alice.post("/api/v1/functions", json={"name": "quick", "code": QUICK})
        assert r.status_code == 201, r.text
        assert r.json()["limits"] == {"timeout_s": 5.0, "memory_mb": 128}


async def test_a_call_runs_with_at_most_the_callers_ceiling(
    live_factory: LiveFactory,  # noqa: F811
) -> None:
    _need_isolation()
    async with live_factory(function_max_timeout_s_user=1) as n:
        # stored by an admin with 30 s; a user key's call still stops at its 1 s ceiling
        owner = "alice"
        alice = n.client(await n.key("user", owner))
        r = await alice.post("/api/v1/functions", json={"name": "hold", "code": HOLD,
                                                        "allowed_imports": ["time"]})  # fmt: skip
        assert r.status_code == 201, r.text
        r = await n.admin.put("/api/v1/functions/hold", json={
            "code": HOLD, "allowed_imports": ["time"], "timeout_s": 30})  # fmt: skip
        assert r.json()["limits"]["timeout_s"] == 30
        r = await alice.post("/api/v1/functions/hold/execute", json={"args": {"s": 20}})
        assert r.status_code == 504, r.text
        assert "1s" in r.json()["detail"]


def test_the_limits_are_settings_with_documented_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    defaults = load_settings()
    assert defaults.function_ceilings("user") == (60.0, 512)
    assert defaults.function_ceilings("operator") == (600.0, 4096)
    assert defaults.function_ceilings("admin") == (3600.0, 65536)
    assert (defaults.executions_max_running, defaults.executions_per_caller) == (8, 2)
    assert (defaults.executions_max_waiting, defaults.executions_max_wait_s) == (32, 30.0)
    monkeypatch.setenv("NETSUKE_FUNCTION_MAX_TIMEOUT_S_USER", "120")
    assert load_settings().function_ceilings("user") == (120.0, 512)
    monkeypatch.setenv("NETSUKE_EXECUTIONS_MAX_RUNNING", "0")
    monkeypatch.setenv("NETSUKE_FUNCTION_MAX_MEMORY_MB_USER", "99999")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    fields = [f for f, _ in caught.value.problems]
    assert sorted(fields) == ["executions_max_running", "function_max_memory_mb_user"]


# ------------------------------------------------------ item 3: calls at once are bounded
async def _until(predicate: Callable[[], bool]) -> None:
    for _ in range(2000):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached")


@pytest.mark.timeout(60)
async def test_calls_at_once_are_bounded_per_key_and_per_node(
    live_factory: LiveFactory,  # noqa: F811
) -> None:
    _need_isolation()
    settings = {"executions_max_running": 1, "executions_per_caller": 1,
                "executions_max_waiting": 1, "executions_max_wait_s": 60}  # fmt: skip
    async with live_factory(**settings) as n:
        alice = n.client(await n.key("user", "alice"))
        bob = n.client(await n.key("user", "bob"))
        carol = n.client(await n.key("user", "carol"))
        for client, name, code, imports in [
            (alice, "hold", HOLD, ["time"]),
            (alice, "quick", QUICK, []),
            (bob, "bquick", QUICK.replace("quick", "bquick"), []),
            (carol, "cquick", QUICK.replace("quick", "cquick"), []),
        ]:
            r = await client.post("/api/v1/functions", json={
                "name": name, "code": code, "allowed_imports": imports})  # fmt: skip
            assert r.status_code == 201, r.text
        functions = n.node.functions
        assert isinstance(functions, FunctionStore) and functions.gate is not None
        gate = functions.gate
        held = asyncio.create_task(
            alice.post("/api/v1/functions/hold/execute", json={"args": {"s": 4}}, timeout=30)
        )
        await _until(lambda: gate.running == 1)
        # the same key again: its own bound
        r = await alice.post("/api/v1/functions/quick/execute", json={})
        assert r.status_code == 429, r.text
        assert r.headers["content-type"].startswith(PROBLEM)
        assert int(r.headers["retry-after"]) >= 1
        assert r.json()["type"].endswith("too-many-executions") and r.json()["scope"] == "caller"
        # another key waits in the node's queue ...
        queued = asyncio.create_task(
            bob.post("/api/v1/functions/bquick/execute", json={}, timeout=30)
        )
        await _until(lambda: gate.waiting == 1)
        # ... which is now full
        r = await carol.post("/api/v1/functions/cquick/execute", json={})
        assert r.status_code == 429, r.text
        assert r.json()["scope"] == "node" and "retry-after" in r.headers
        done, waited = await held, await queued
        assert done.status_code == 200 and done.json()["value"] == "done"
        assert waited.status_code == 200 and waited.json()["value"] == 1
        assert (gate.running, gate.waiting) == (0, 0)
        # refused calls ran nothing and wrote nothing
        page = await n.node.store.executions.list(kind="function_call")
        assert sorted(e.function_name or "" for e in page.items) == ["bquick", "hold"]
        metrics = (await n.admin.get("/metrics")).text
        assert 'netsuke_sandbox_executions_busy_total{scope="caller"}' in metrics


# ---------------------------------------------------- item 12: the language layer via HTTP
async def test_trojan_source_and_format_traversal_are_refused_at_the_door(
    live: Live,  # noqa: F811
) -> None:
    alice = live.client(await live.key("user", "alice"))
    bidi = 'def f() -> str:\n    return "user\u202e \u2066# admin\u2069 \u2066"\n'
    r = await alice.post("/api/v1/functions", json={"name": "f", "code": bidi})
    assert _fields(r) == ["code"] and r.json()["line"] == 2
    assert "U+202E" in r.json()["detail"]
    traversal = (
        "import string\n\ndef f() -> str:\n    u = '_' * 2\n"
        "    return str(string.Formatter().get_field('0.' + u + 'class' + u, [()], {}))\n"
    )
    r = await alice.post(
        "/api/v1/functions", json={"name": "f", "code": traversal, "allowed_imports": ["string"]}
    )
    assert _fields(r) == ["code"] and "get_field" in r.json()["detail"]
    assert (await alice.get("/api/v1/functions/f")).status_code == 404


async def test_output_is_escaped_and_a_huge_result_is_an_output_limit(
    live: Live,  # noqa: F811
) -> None:
    _need_isolation()
    alice = live.client(await live.key("user", "alice"))
    ansi = "def ansi() -> int:\n    print('\\x1b[2J\\x1b[31mred\\x1b[0m')\n    return 1\n"
    huge = "def huge() -> str:\n    return 'x' * 100_000_000\n"
    for name, code in [("ansi", ansi), ("huge", huge)]:
        r = await alice.post("/api/v1/functions", json={"name": name, "code": code,
                                                        "memory_mb": 192})  # fmt: skip
        assert r.status_code == 201, r.text
    r = await alice.post("/api/v1/functions/ansi/execute", json={})
    assert r.status_code == 200, r.text
    assert r.json()["stdout"] == "\\x1b[2J\\x1b[31mred\\x1b[0m\n"
    r = await alice.post("/api/v1/functions/huge/execute", json={}, timeout=60)
    assert r.status_code == 422, r.text
    assert r.json()["type"].endswith("function-output_limit")
    assert "result" in r.json()["detail"]


async def test_a_result_or_output_the_node_cannot_serve_is_never_a_500(
    live: Live,  # noqa: F811
) -> None:
    _need_isolation()
    alice = live.client(await live.key("user", "alice"))
    cases = {
        "surr": ("    return chr(0xD800)\n", 502),
        "deep": ("    v = []\n    for _ in range(900):\n        v = [v]\n    return v\n", 502),
        "outsurr": ("    print(chr(0xDC00))\n    return 1\n", 200),
    }
    for name, (body, status) in cases.items():
        code = f"def {name}():\n{body}"
        r = await alice.post("/api/v1/functions", json={"name": name, "code": code})
        assert r.status_code == 201, r.text
        r = await alice.post(f"/api/v1/functions/{name}/execute", json={})
        assert r.status_code == status, r.text
        if status == 502:
            assert r.headers["content-type"].startswith(PROBLEM)
            assert r.json()["type"].endswith("function-result")
        else:
            assert r.json()["stdout"] == "\\udc00\n"
