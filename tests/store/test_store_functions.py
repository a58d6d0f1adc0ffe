from __future__ import annotations

import hashlib

import pytest

from netsuke.store import ConflictError, NotFoundError, Store, ValidationError

ADD = "def add(a: int, b: int) -> int:\n    return a + b\n"
FETCH = "import json\n\nasync def fetch(x):\n    return json.dumps(x)\n"


async def test_same_code_again_makes_no_new_version(store: Store) -> None:
    first = await store.functions.put({"name": "add", "code": ADD}, actor="dev")
    again = await store.functions.put({"name": "add", "code": ADD})
    assert first.version == again.version == 1
    assert first.sha256 == hashlib.sha256(ADD.encode()).hexdigest()
    assert first.is_async is False
    assert len(await store.functions.versions("add")) == 1


async def test_changed_code_or_limits_add_versions_and_all_are_kept(store: Store) -> None:
    await store.functions.put({"name": "add", "code": ADD})
    v2 = await store.functions.put({"name": "add", "code": ADD.replace("a + b", "b + a")})
    v3 = await store.functions.put(
        {
            "name": "add",
            "code": ADD.replace("a + b", "b + a"),
            "limits": {"timeout_s": 5, "memory_mb": 64},
        }
    )
    assert (v2.version, v3.version) == (2, 3)
    assert v2.sha256 == v3.sha256
    assert v3.limits.timeout_s == 5
    versions = await store.functions.versions("add")
    assert [v.version for v in versions] == [1, 2, 3]
    assert (await store.functions.get("add", 1)).code == ADD
    found = await store.functions.find_by_sha256(v2.sha256)
    assert [(f.name, f.version) for f in found] == [("add", 2), ("add", 3)]
    page = await store.functions.list()
    assert [(f.name, f.version) for f in page.items] == [("add", 3)]


async def test_async_function_with_allowed_imports_and_schemas(store: Store) -> None:
    stored = await store.functions.put(
        {
            "name": "fetch",
            "code": FETCH,
            "allowed_imports": ["json"],
            "input_schema": {"type": "object"},
            "output_schema": {"type": "string"},
        }
    )
    assert stored.is_async is True
    assert stored.allowed_imports == ["json"]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"name": "add", "code": "def add(:\n"}, "code"),
        ({"name": "add", "code": "def other():\n    pass\n"}, "code"),
        ({"name": "fetch", "code": FETCH}, "code"),  # imports json, not allowed
        ({"name": "add", "code": ADD, "is_async": True}, "is_async"),
        ({"name": "add-1", "code": ADD}, "name"),
        ({"name": "add", "code": ADD, "input_schema": {"type": 5}}, "input_schema"),
        ({"name": "add", "code": ADD, "limits": {"timeout_s": 0}}, "limits.timeout_s"),
        ({"name": "add", "code": ADD, "allowed_imports": ["os;rm"]}, "allowed_imports[0]"),
    ],
)
async def test_invalid_function_is_refused_and_nothing_is_written(
    store: Store, fields: dict[str, object], field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        await store.functions.put(fields)
    assert caught.value.field == field
    assert (await store.functions.list()).items == []


async def test_stale_expected_version_is_a_conflict(store: Store) -> None:
    await store.functions.put({"name": "add", "code": ADD}, expected_version=0)
    with pytest.raises(ConflictError) as caught:
        await store.functions.put({"name": "add", "code": ADD + "\n# x\n"}, expected_version=0)
    assert caught.value.current_version == 1
    with pytest.raises(NotFoundError):
        await store.functions.get("missing")


async def test_rollback_makes_a_new_version_with_the_old_content(store: Store) -> None:
    v1 = await store.functions.put({"name": "add", "code": ADD})
    await store.functions.put({"name": "add", "code": ADD.replace("a + b", "b + a")})
    back = await store.functions.rollback("add", 1, actor="ops")
    assert back.version == 3 and back.sha256 == v1.sha256 and back.code == ADD
    same = await store.functions.rollback("add", 3)
    assert same.version == 3  # content equal to the current version: no new version
    with pytest.raises(ConflictError):
        await store.functions.rollback("add", 2, expected_version=1)
    with pytest.raises(NotFoundError):
        await store.functions.rollback("add", 9)
    actions = [e.action for e in (await store.audit.list(target="function:add")).items]
    assert "function.rollback" in actions


async def test_delete_removes_every_version_and_is_audited(store: Store) -> None:
    await store.functions.put({"name": "add", "code": ADD})
    await store.functions.put({"name": "add", "code": ADD.replace("a + b", "b + a")})
    with pytest.raises(ConflictError):
        await store.functions.delete("add", expected_version=1)
    await store.functions.delete("add", expected_version=2, actor="ops")
    with pytest.raises(NotFoundError):
        await store.functions.get("add")
    with pytest.raises(NotFoundError):
        await store.functions.delete("add")
    again = await store.functions.put({"name": "add", "code": ADD})
    assert again.version == 1
    actions = [e.action for e in (await store.audit.list(target="function:add")).items]
    assert "function.delete" in actions
