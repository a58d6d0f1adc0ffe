"""PATCH (JSON merge patch, RFC 7396) on agents and functions: the fields sent change, the
rest is kept; bad patches are refused and change nothing. A real node on loopback."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netsuke.api._merge_patch import merge_patch

from .conftest import Live

MERGE = {"Content-Type": "application/merge-patch+json"}
AGENT = {
    "name": "writer",
    "description": "first",
    "system_prompt": "You write.",
    "capabilities": ["write", "edit"],
    "model_settings": {"temperature": 0.5, "max_tokens": 100},
}


def test_merge_patch_follows_rfc_7396_appendix_a() -> None:
    cases: list[tuple[Any, Any, Any]] = [
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        (["a", "b"], ["c", "d"], ["c", "d"]),
        ({"a": "b"}, ["c"], ["c"]),
        ({"a": "foo"}, None, None),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ]
    for target, patch, expected in cases:
        assert merge_patch(target, patch) == expected


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(target=JSON, patch=JSON)
def test_merge_patch_is_idempotent_and_leaves_its_inputs_alone(target: Any, patch: Any) -> None:
    before_target, before_patch = copy.deepcopy(target), copy.deepcopy(patch)
    once = merge_patch(target, patch)
    assert merge_patch(once, patch) == once
    assert target == before_target and patch == before_patch
    if isinstance(patch, dict) and isinstance(once, dict):
        assert all(k not in once for k, v in patch.items() if v is None)


async def test_patch_an_agent_changes_only_what_it_names(live: Live) -> None:
    admin = live.admin
    assert (await admin.post("/api/v1/agents", json=AGENT)).status_code == 201
    r = await admin.patch("/api/v1/agents/writer", json={"description": "only desc"}, headers=MERGE)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["version"] == 2 and r.headers["etag"] == '"2"'
    assert body["description"] == "only desc"
    assert body["system_prompt"] == "You write." and body["capabilities"] == ["write", "edit"]
    assert body["model_settings"]["temperature"] == 0.5
    # nested merge; null resets a member; application/json is accepted too
    r = await admin.patch(
        "/api/v1/agents/writer", json={"model_settings": {"max_tokens": None, "top_p": 0.9}}
    )
    settings = r.json()["model_settings"]
    assert settings["temperature"] == 0.5 and settings["top_p"] == 0.9
    assert settings["max_tokens"] is None
    # the same patch again: no new version
    again = await admin.patch("/api/v1/agents/writer", json={"description": "only desc"})
    assert again.json()["version"] == 3


async def test_a_bad_agent_patch_is_refused_and_changes_nothing(live: Live) -> None:
    admin = live.admin
    await admin.post("/api/v1/agents", json=AGENT)
    cases = [
        ({"modle": "x"}, 422, "modle"),
        ({"max_chain_depth": "deep"}, 422, "max_chain_depth"),
        ({"model_settings": {"temperature": 5.0}}, 422, "model_settings.temperature"),
        ({"name": "other"}, 422, "name"),
    ]
    for patch, status, field in cases:
        r = await admin.patch("/api/v1/agents/writer", json=patch, headers=MERGE)
        assert r.status_code == status, (patch, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        assert field in r.json()["detail"], r.json()
    r = await admin.patch(
        "/api/v1/agents/writer", content=b"[1, 2]", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 422 and "JSON object" in r.json()["detail"]
    r = await admin.patch("/api/v1/agents/writer", content=b"{oops", headers=MERGE)
    assert r.status_code == 422 and "not valid JSON" in r.json()["detail"]
    r = await admin.patch(
        "/api/v1/agents/writer", content=b"description=x", headers={"Content-Type": "text/plain"}
    )
    assert r.status_code == 415
    stale = await admin.patch(
        "/api/v1/agents/writer", json={"description": "late"}, headers={**MERGE, "If-Match": '"7"'}
    )
    assert stale.status_code == 412 and stale.headers["etag"] == '"1"'
    assert (await admin.get("/api/v1/agents/writer")).json()["version"] == 1
    missing = await admin.patch("/api/v1/agents/ghost", json={"description": "x"}, headers=MERGE)
    assert missing.status_code == 404


async def test_patch_needs_an_operator(live: Live) -> None:
    await live.admin.post("/api/v1/agents", json=AGENT)
    user = live.client(await live.key("user", "ann"))
    r = await user.patch("/api/v1/agents/writer", json={"description": "x"}, headers=MERGE)
    assert r.status_code == 403


DOC = 'def add(a: int, b: int) -> int:\n    """Adds two numbers."""\n    return a + b\n'
DOC_V2 = (
    'def add(a: int, b: int, c: int = 0) -> int:\n    """Adds numbers."""\n    return a + b + c\n'
)


async def test_a_functions_docstring_is_its_default_description(live: Live) -> None:
    r = await live.admin.post("/api/v1/functions", json={"name": "add", "code": DOC})
    assert r.status_code == 201, r.text
    assert r.json()["description"] == "Adds two numbers."
    given = await live.admin.put("/api/v1/functions/add", json={"code": DOC, "description": "mine"})
    assert given.json()["description"] == "mine"


async def test_patch_a_function_keeps_what_it_does_not_name(live: Live) -> None:
    admin = live.admin
    body = {"name": "add", "code": DOC, "timeout_s": 5, "memory_mb": 128}
    assert (await admin.post("/api/v1/functions", json=body)).status_code == 201
    r = await admin.patch("/api/v1/functions/add", json={"description": "by hand"}, headers=MERGE)
    assert r.status_code == 200, r.text
    v2 = r.json()
    assert v2["version"] == 2 and v2["description"] == "by hand"
    assert v2["limits"] == {"timeout_s": 5.0, "memory_mb": 128} and v2["code"] == DOC
    # new code: the description set by hand stays, the derived input schema follows the code
    r = await admin.patch("/api/v1/functions/add", json={"code": DOC_V2}, headers=MERGE)
    v3 = r.json()
    assert r.status_code == 200, r.text
    assert v3["description"] == "by hand" and v3["limits"]["timeout_s"] == 5.0
    assert set(v3["input_schema"]["properties"]) == {"a", "b", "c"}
    # null resets the description to its default, the docstring
    r = await admin.patch("/api/v1/functions/add", json={"description": None}, headers=MERGE)
    assert r.json()["description"] == "Adds numbers."


async def test_a_derived_description_follows_the_docstring(live: Live) -> None:
    admin = live.admin
    await admin.post("/api/v1/functions", json={"name": "add", "code": DOC})
    r = await admin.patch("/api/v1/functions/add", json={"code": DOC_V2}, headers=MERGE)
    assert r.json()["description"] == "Adds numbers."


@pytest.mark.parametrize(
    ("patch", "field"),
    [({"timeout_s": -1}, "timeout_s"), ({"code": "x = 1\n"}, "code"), ({"nope": 1}, "nope")],
)
async def test_a_bad_function_patch_changes_nothing(
    live: Live, patch: dict[str, Any], field: str
) -> None:
    admin = live.admin
    await admin.post("/api/v1/functions", json={"name": "add", "code": DOC})
    r = await admin.patch("/api/v1/functions/add", json=patch, headers=MERGE)
    assert r.status_code == 422, r.text
    assert field in r.json()["detail"]
    assert (await admin.get("/api/v1/functions/add")).json()["version"] == 1
