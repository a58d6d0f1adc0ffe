"""Elixir's registry tests (registry_test.exs, registry/unique_test.exs,
registry/duplicate_test.exs) and the Registry doctests, ported on the virtual clock.

One test per upstream test, named after it (``test_unique_test_...``,
``test_duplicate_test_...``, ``test_registry_test_...``, ``test_registry_doctest_...``).
Elixir's ``self()`` is a ``rt.scope()`` process. Value patterns and guards
(``match(key, pattern, guards)``) are a ``where`` predicate or dict over the metadata;
``select`` match specs are a predicate over ``(key, pid, meta)`` (see the differences table in
docs/kernel.md).

Not ported: partitions (one table per registry here), "links and unlinks on
register/unregister" (no registry process to link to: entries go when their process exits),
"doesn't grow ets on already_registered", reserved-key tests (ETS match-spec atoms such as
``:_`` and ``:"$1"`` have no meaning for Python keys), "compares using ===" /"compares using
matches" (Python dict keys: ``1 == 1.0`` is one key; listed as a difference).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from netsuke import (
    AlreadyStartedError,
    ArgumentError,
    BadTargetError,
    Process,
    Registered,
    Registry,
    Runtime,
    Unregistered,
    Via,
    virtual_time,
)


class Idle(Process):
    def handle_info(self, message: Any) -> None:
        pass


@pytest.fixture(params=["unique", "duplicate"])
def keys(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# ----------------------------------------------------------------- registry_test.exs


@virtual_time
async def test_registry_test_clean_up_registry_on_process_crash(keys: str) -> None:
    async with Runtime() as rt:
        reg = Registry(rt, keys=keys)  # type: ignore[arg-type]
        t1 = await rt.start(Idle)
        t2 = await rt.start(Idle)
        reg.register("hello", t1, "value")  # type: ignore[arg-type]
        reg.register("world", t2, "value")  # type: ignore[arg-type]
        rt.kill(t1)  # type: ignore[arg-type]
        rt.kill(t2)  # type: ignore[arg-type]
        assert len(reg) == 0
        assert reg._unique == {} and reg._dup == {}


@virtual_time
async def test_registry_test_lock_does_not_lock_when_using_different_keys(keys: str) -> None:
    async with Runtime() as rt:
        reg = Registry(rt, keys=keys)  # type: ignore[arg-type]
        unlock = asyncio.Event()
        locked: list[int] = []

        async def hold(n: int) -> str:
            async def body() -> str:
                locked.append(n)
                await unlock.wait()
                return "done"

            return await reg.lock(n, body)

        t1 = await rt.tasks.start(lambda: hold(1))
        t2 = await rt.tasks.start(lambda: hold(2))
        await asyncio.sleep(0.01)
        assert locked == [1, 2]
        unlock.set()
        assert await t1.join(1) == "done" and await t2.join(1) == "done"
        assert await reg.lock(1, lambda: "done") == "done"
        assert reg._locks == {}


@virtual_time
async def test_registry_test_lock_locks_when_using_the_same_key(keys: str) -> None:
    async with Runtime() as rt:
        reg = Registry(rt, keys=keys)  # type: ignore[arg-type]
        unlock = asyncio.Event()
        locked: list[int] = []

        async def first() -> str:
            locked.append(1)
            await unlock.wait()
            return "done"

        async def second() -> str:
            locked.append(2)
            return "done"

        t1 = await rt.tasks.start(lambda: reg.lock("ok", first))
        await asyncio.sleep(0.01)
        t2 = await rt.tasks.start(lambda: reg.lock("ok", second))
        await asyncio.sleep(0.1)
        assert locked == [1]
        unlock.set()
        assert await t1.join(1) == "done"
        assert await t2.join(1) == "done"
        assert locked == [1, 2]


@virtual_time
async def test_registry_test_lock_locks_when_the_one_holding_the_lock_raises(keys: str) -> None:
    async with Runtime() as rt:
        reg = Registry(rt, keys=keys)  # type: ignore[arg-type]

        async def boom() -> None:
            await asyncio.sleep(0.01)
            raise RuntimeError("oops")

        t1 = await rt.tasks.start(lambda: reg.lock("ok", boom))
        await asyncio.sleep(0)
        t2 = await rt.tasks.start(lambda: reg.lock("ok", lambda: "done"))
        out = await t1.outcome(1)
        assert isinstance(out.reason, RuntimeError)
        assert await t2.join(1) == "done"
        assert await reg.lock("ok", lambda: "done") == "done"


@virtual_time
@pytest.mark.parametrize("who", ["holding", "waiting"])
async def test_registry_test_lock_locks_when_the_one_holding_or_waiting_for_the_lock_terminates(
    keys: str, who: str
) -> None:
    """'locks when the one holding the lock terminates' and '... waiting for the lock ...'."""
    async with Runtime() as rt:
        reg = Registry(rt, keys=keys)  # type: ignore[arg-type]
        forever = asyncio.Event()

        async def wait_forever() -> None:
            await forever.wait()

        t1 = await rt.tasks.start(lambda: reg.lock("ok", wait_forever))
        await asyncio.sleep(0)
        t2 = await rt.tasks.start(lambda: reg.lock("ok", wait_forever))
        await asyncio.sleep(0)
        if who == "holding":
            t1.cancel()
            await asyncio.sleep(0.01)
            t2.cancel()
        else:
            t2.cancel()
            await asyncio.sleep(0.01)
            t1.cancel()
        await asyncio.sleep(0.01)
        assert await reg.lock("ok", lambda: "done") == "done"
        assert reg._locks == {}


# ------------------------------------------------------------ registry/unique_test.exs


@virtual_time
async def test_unique_test_counts_0_keys_in_an_empty_registry() -> None:
    async with Runtime() as rt:
        assert Registry(rt).count() == 0


@virtual_time
async def test_unique_test_counts_the_number_of_keys_in_a_registry() -> None:
    async with Runtime() as rt, rt.scope() as me:
        reg = Registry(rt)
        reg.register("hello", me.pid, "value")
        reg.register("world", me.pid, "value")
        assert reg.count() == 2


@virtual_time
async def test_unique_test_has_unique_registrations() -> None:
    async with Runtime() as rt, rt.scope() as me:
        reg = Registry(rt)
        reg.register("hello", me.pid, "value")
        assert reg.keys(me.pid) == ["hello"]
        assert reg.values("hello", me.pid) == ["value"]
        with pytest.raises(AlreadyStartedError) as ei:
            reg.register("hello", me.pid, "value")
        assert ei.value.pid == me.pid
        assert reg.keys(me.pid) == ["hello"]
        assert reg.values("hello", me.pid) == ["value"]
        reg.register("world", me.pid, "value")
        assert sorted(reg.keys(me.pid)) == ["hello", "world"]


@virtual_time
async def test_unique_test_has_unique_registrations_across_processes() -> None:
    async with Runtime() as rt, rt.scope() as me:
        reg = Registry(rt)
        task = await rt.start(Idle)
        reg.register("hello", task, "value")  # type: ignore[arg-type]
        assert reg.keys(task) == ["hello"]  # type: ignore[arg-type]
        with pytest.raises(AlreadyStartedError) as ei:
            reg.register("hello", me.pid, "recent")
        assert ei.value.pid == task
        assert reg.keys(me.pid) == []
        assert reg.values("hello", me.pid) == []


@virtual_time
async def test_unique_test_unregister_match_supports_patterns() -> None:
    async with Runtime() as rt, rt.scope() as me:
        reg = Registry(rt)
        value = (1, "atom", 1)
        reg.register("hello", me.pid, value)
        assert reg.unregister_match("hello", me.pid, lambda v: v[0] == 2) == 0
        assert reg.lookup("hello") == [(me.pid, value)]
        assert reg.unregister_match("hello", me.pid, lambda v: v[1] == "atom") == 1
        assert reg.lookup("hello") == []


@virtual_time
async def test_unique_test_updates_current_process_value() -> None:
    async with Runtime() as rt, rt.scope() as me:
        reg = Registry(rt)
        reg.register("world", me.pid, 1)
        reg.update_meta("world", me.pid, 2)
        assert reg.lookup("world") == [(me.pid, 2)]


@virtual_time
async def test_unique_test_dispatches_to_a_single_key() -> None:
    async with Runtime() as rt, rt.scope() as me:
        reg = Registry(rt)
        assert reg.dispatch("hello", "x") == 0
        reg.register("hello", me.pid, "value")
        assert reg.dispatch("hello", ("dispatch", "value")) == 1
        assert await me.receive(timeout=0) == ("dispatch", "value")


@virtual_time
async def test_unique_test_unregisters_process_by_key() -> None:
    async with Runtime() as rt, rt.scope() as me:
        reg = Registry(rt)
        assert reg.unregister("hello", me.pid) is False
        reg.register("hello", me.pid, "value")
        reg.register("world", me.pid, "value")
        assert reg.unregister("hello", me.pid)
        assert reg.keys(me.pid) == ["world"]
        assert reg.unregister("world", me.pid)
        assert reg.keys(me.pid) == []


@virtual_time
@pytest.mark.parametrize("mode", ["unique", "duplicate"])
async def test_unique_test_allows_listeners(mode: str) -> None:
    """(and duplicate_test.exs's "allows listeners")"""
    async with Runtime() as rt, rt.scope() as me:
        rt.registry.register("unique_listener", me.pid)
        reg = Registry(rt, keys=mode, listeners=["unique_listener"])  # type: ignore[arg-type]
        task = await rt.start(Idle)
        reg.register("hello", task, "world")  # type: ignore[arg-type]
        assert await me.receive(timeout=0) == Registered(reg, "hello", task, "world")  # type: ignore[arg-type]
        reg.register("world", me.pid, "value")
        assert await me.receive(timeout=0) == Registered(reg, "world", me.pid, "value")
        assert reg.unregister("world", me.pid)
        assert await me.receive(timeout=0) == Unregistered(reg, "world", me.pid)
        rt.kill(task)  # type: ignore[arg-type]  # an exit is not an unregister: monitor for it
        with pytest.raises(TimeoutError):
            await me.receive(timeout=0)


@virtual_time
async def test_unique_test_raises_on_unknown_registry_name() -> None:
    async with Runtime() as rt:
        for bad in (":unknown", "unknown", 42, None):
            with pytest.raises(ArgumentError):
                Via(bad, "hello")  # type: ignore[arg-type]
        with pytest.raises(ArgumentError):
            Registry(rt, name="")
        with pytest.raises(ArgumentError):
            Registry(rt, name=42)  # type: ignore[arg-type]
        with pytest.raises(ArgumentError):
            Registry(rt, keys="unknown")  # type: ignore[arg-type]
        with pytest.raises(ArgumentError):
            Registry("not a runtime")  # type: ignore[arg-type]


@virtual_time
async def test_unique_test_via_callbacks() -> None:
    async with Runtime() as rt:
        reg = Registry(rt)
        name = Via(reg, "hello")
        pid = await rt.start(Idle, None, name=name)
        assert reg.whereis("hello") == pid
        assert rt.whereis(name) == pid
        with pytest.raises(AlreadyStartedError):
            await rt.start(Idle, None, name=name)
        rt.send(name, "hi")
        rt.kill(pid)  # type: ignore[arg-type]
        assert rt.whereis(name) is None


@virtual_time
async def test_unique_test_empty_list_for_empty_registry() -> None:
    async with Runtime() as rt:
        assert Registry(rt).select(lambda k, p, v: True) == []


@virtual_time
async def test_unique_test_select_all() -> None:
    async with Runtime() as rt, rt.scope() as me:
        reg = Registry(rt)
        reg.register("hello", me.pid, "value")
        reg.register("world", me.pid, "value")
        got = reg.select(lambda k, p, v: True)
        assert sorted((e.key, e.pid, e.meta) for e in got) == [
            ("hello", me.pid, "value"),
            ("world", me.pid, "value"),
        ]


@virtual_time
async def test_unique_test_select_supports_guard_conditions() -> None:
    async with Runtime() as rt, rt.scope() as me:
        reg = Registry(rt)
        reg.register("hello", me.pid, ("some", "tuple"))
        reg.register("world", me.pid, ("another", "tuple"))
        got = reg.select(lambda k, p, v: v[0] == "some")
        assert [e.key for e in got] == ["hello"]


@virtual_time
async def test_unique_test_select_raises_on_incorrect_shape_of_match_spec() -> None:
    async with Runtime() as rt:
        reg = Registry(rt)
        for bad in ("_", [("_", [], ["$_"])], {"spec": 1}):
            with pytest.raises(ArgumentError):
                reg.select(bad)  # type: ignore[arg-type]
        for kw in ({"where": "x"}, {"pattern": 1}, {"prefix": b"x"}, {"contains": 3}):
            with pytest.raises(ArgumentError):
                reg.match(**kw)  # type: ignore[arg-type]


# --------------------------------------------------------- registry/duplicate_test.exs


@virtual_time
async def test_duplicate_test_counts_the_number_of_keys_in_a_registry() -> None:
    async with Runtime() as rt, rt.scope() as me:
        reg = Registry(rt, keys="duplicate")
        reg.register("hello", me.pid, "value")
        reg.register("hello", me.pid, "value")
        assert reg.count() == 2


@virtual_time
async def test_duplicate_test_has_duplicate_registrations() -> None:
    async with Runtime() as rt, rt.scope() as me:
        reg = Registry(rt, keys="duplicate")
        reg.register("hello", me.pid, "value")
        assert reg.keys(me.pid) == ["hello"]
        assert reg.values("hello", me.pid) == ["value"]
        reg.register("hello", me.pid, "value")
        assert reg.keys(me.pid) == ["hello", "hello"]
        assert reg.values("hello", me.pid) == ["value", "value"]
        reg.register("world", me.pid, "value")
        assert sorted(reg.keys(me.pid)) == ["hello", "hello", "world"]


@virtual_time
async def test_duplicate_test_has_duplicate_registrations_across_processes() -> None:
    async with Runtime() as rt, rt.scope() as me:
        reg = Registry(rt, keys="duplicate")
        task = await rt.start(Idle)
        reg.register("hello", task, "world")  # type: ignore[arg-type]
        assert reg.keys(me.pid) == []
        assert reg.keys(task) == ["hello"]  # type: ignore[arg-type]
        assert reg.values("hello", task) == ["world"]  # type: ignore[arg-type]
        reg.register("hello", me.pid, "value")
        assert reg.values("hello", me.pid) == ["value"]


@virtual_time
async def test_duplicate_test_dispatches_to_multiple_keys_in_serial() -> None:
    """A process registered twice under a key gets a dispatch twice."""
    async with Runtime() as rt, rt.scope() as me:
        reg = Registry(rt, keys="duplicate")
        assert reg.dispatch("hello", "x") == 0
        reg.register("hello", me.pid, "value1")
        reg.register("hello", me.pid, "value2")
        assert reg.lookup("hello") == [(me.pid, "value1"), (me.pid, "value2")]
        assert reg.dispatch("hello", "dispatch") == 2
        assert [await me.receive(timeout=0) for _ in range(2)] == ["dispatch", "dispatch"]


@virtual_time
async def test_duplicate_test_unregisters_by_key() -> None:
    async with Runtime() as rt, rt.scope() as me:
        reg = Registry(rt, keys="duplicate")
        reg.register("hello", me.pid, "value")
        reg.register("hello", me.pid, "value")
        reg.register("world", me.pid, "value")
        assert sorted(reg.keys(me.pid)) == ["hello", "hello", "world"]
        assert reg.unregister("hello", me.pid)
        assert reg.keys(me.pid) == ["world"]
        assert reg.unregister("world", me.pid)
        assert reg.keys(me.pid) == []
        assert reg.unregister("hello", me.pid) is False  # unregisters with no entries


@virtual_time
async def test_duplicate_test_supports_match_patterns() -> None:
    async with Runtime() as rt, rt.scope() as me:
        reg = Registry(rt, keys="duplicate")
        v1, v2 = (1, "atom", 1), (2, "atom", 2)
        reg.register("hello", me.pid, v1)
        reg.register("hello", me.pid, v2)
        assert [e.meta for e in reg.match("hello", where=lambda v: v[0] == 1)] == [v1]
        assert [e.meta for e in reg.match("hello", where=lambda v: v[1] == "atom")] == [v1, v2]
        assert [e.meta for e in reg.match("hello", where=lambda v: v[0] == v[2])] == [v1, v2]
        assert reg.count("hello", where=lambda v: v[0] < 2) == 1


@virtual_time
async def test_duplicate_test_uses_exact_complex_keys_in_lookup_and_match() -> None:
    async with Runtime() as rt, rt.scope() as me:
        reg = Registry(rt, keys="duplicate")
        tuple_key = ("_", "topic")
        reg.register(tuple_key, me.pid, "tuple")
        reg.register(("other", "topic"), me.pid, "other_tuple")
        reg.register(frozenset({"b"}), me.pid, "set")
        assert reg.lookup(tuple_key) == [(me.pid, "tuple")]
        assert reg.lookup(frozenset({"b"})) == [(me.pid, "set")]
        assert len(reg.select(lambda k, p, v: k == tuple_key)) == 1


@virtual_time
async def test_duplicate_test_unregister_match_supports_patterns() -> None:
    async with Runtime() as rt, rt.scope() as me:
        reg = Registry(rt, keys="duplicate")
        v1, v2 = (1, "atom", 1), (2, "atom", 2)
        reg.register("hello", me.pid, v1)
        reg.register("hello", me.pid, v2)
        assert reg.unregister_match("hello", me.pid, lambda v: v[0] == 2) == 1
        assert reg.lookup("hello") == [(me.pid, v1)]
        reg.register("hello", me.pid, v2)
        assert reg.unregister_match("hello", me.pid, lambda v: v == (2.5, "atom", 2)) == 0
        assert reg.lookup("hello") == [(me.pid, v1), (me.pid, v2)]
        assert reg.unregister_match("hello", me.pid, lambda v: v[1] == "atom") == 2
        assert reg.lookup("hello") == []
        assert reg.keys(me.pid) == []


@virtual_time
async def test_duplicate_test_raises_if_attempt_to_be_used_on_via() -> None:
    async with Runtime() as rt:
        reg = Registry(rt, keys="duplicate")
        with pytest.raises(ArgumentError):
            await rt.start(Idle, None, name=Via(reg, "hello"))
        with pytest.raises(BadTargetError):
            await rt.call(("via", reg, "hello"), "x")  # type: ignore[arg-type]


@virtual_time
async def test_duplicate_test_update_value_is_not_supported() -> None:
    async with Runtime() as rt, rt.scope() as me:
        reg = Registry(rt, keys="duplicate")
        reg.register("hello", me.pid, "value")
        with pytest.raises(ArgumentError):
            reg.update_meta("hello", me.pid, "other")


# ------------------------------------------------------------------ Registry doctests


@virtual_time
async def test_registry_doctest_lookup() -> None:
    async with Runtime() as rt, rt.scope() as me:
        uniq = Registry(rt, name="Registry.UniqueLookupTest")
        assert uniq.lookup("hello") == []
        uniq.register("hello", me.pid, "world")
        assert uniq.lookup("hello") == [(me.pid, "world")]
        dup = Registry(rt, keys="duplicate", name="Registry.DuplicateLookupTest")
        dup.register("hello", me.pid, "world")
        dup.register("hello", me.pid, "another")
        assert sorted(dup.lookup("hello"), key=repr) == [(me.pid, "another"), (me.pid, "world")]


@virtual_time
async def test_registry_doctest_lock() -> None:
    async with Runtime() as rt:
        reg = Registry(rt, name="Registry.LockTest")
        assert await reg.lock("hello", lambda: "ok") == "ok"


@virtual_time
async def test_registry_doctest_unregister_match() -> None:
    async with Runtime() as rt, rt.scope() as me:
        uniq = Registry(rt)
        uniq.register("hello", me.pid, "world")
        uniq.unregister_match("hello", me.pid, lambda v: v == "foo")
        assert uniq.keys(me.pid) == ["hello"]
        uniq.unregister_match("hello", me.pid, lambda v: v == "world")
        assert uniq.keys(me.pid) == []
        dup = Registry(rt, keys="duplicate")
        for v in ("world_a", "world_b", "world_c"):
            dup.register("hello", me.pid, v)
        assert dup.keys(me.pid) == ["hello", "hello", "hello"]
        dup.unregister_match("hello", me.pid, lambda v: v == "world_a")
        assert dup.keys(me.pid) == ["hello", "hello"]
        assert dup.lookup("hello") == [(me.pid, "world_b"), (me.pid, "world_c")]


@virtual_time
async def test_registry_doctest_meta_put_meta_delete_meta() -> None:
    async with Runtime() as rt:
        reg = Registry(rt, meta={"custom_key": "custom_value"})
        assert reg.get_meta("custom_key") == "custom_value"
        with pytest.raises(KeyError):
            reg.get_meta("unknown_key")
        assert reg.get_meta("unknown_key", None) is None
        reg.put_meta(("tuple", "key"), "tuple_value")
        assert reg.get_meta(("tuple", "key")) == "tuple_value"
        reg.delete_meta("custom_key")
        assert reg.get_meta("custom_key", "gone") == "gone"
        reg.delete_meta("custom_key")  # deleting twice is fine


@virtual_time
async def test_registry_doctest_register_and_count() -> None:
    async with Runtime() as rt, rt.scope() as me:
        uniq = Registry(rt)
        uniq.register("hello", me.pid, "world")
        with pytest.raises(AlreadyStartedError):
            uniq.register("hello", me.pid, "later")
        assert uniq.keys(me.pid) == ["hello"]
        uniq.register("world", me.pid, "world")
        assert uniq.count() == 2
        dup = Registry(rt, keys="duplicate")
        dup.register("hello", me.pid, "world")
        dup.register("hello", me.pid, "world")
        assert dup.keys(me.pid) == ["hello", "hello"]
        assert dup.count() == 2


# ------------------------------------- match patterns and guards, as where-predicates


async def _two(rt: Runtime, me: Any, keys: str) -> tuple[Registry, Any, Any]:
    reg = Registry(rt, keys=keys)  # type: ignore[arg-type]
    v1, v2 = (1, "atom", 1), (2, "atom", 2)
    reg.register("hello", me.pid, v1)
    reg.register("hello" if keys == "duplicate" else "world", me.pid, v2)
    return reg, v1, v2


@virtual_time
async def test_unique_test_supports_match_patterns() -> None:
    async with Runtime() as rt, rt.scope() as me:
        reg, v1, _ = await _two(rt, me, "unique")
        assert [(e.pid, e.meta) for e in reg.match("hello", where=lambda v: v[0] == 1)] == [
            (me.pid, v1)
        ]
        assert reg.match("hello", where=lambda v: type(v[0]) is float) == []
        assert len(reg.match("hello", where=lambda v: v[0] == v[2])) == 1
        assert len(reg.match("hello")) == 1
        reg.register("map", me.pid, {"a": "a", "b": "b"})
        assert len(reg.match("map", where={"b": "b"})) == 1


@virtual_time
@pytest.mark.parametrize("mode", ["unique", "duplicate"])
async def test_unique_test_supports_guard_conditions(mode: str) -> None:
    """(and duplicate_test.exs's "supports guards")"""
    async with Runtime() as rt, rt.scope() as me:
        reg, _, v2 = await _two(rt, me, mode)
        got = reg.match("hello", where=lambda v: v[2] > 1)
        assert [e.meta for e in got] == ([v2] if mode == "duplicate" else [])
        assert len(reg.match("hello", where=lambda v: isinstance(v[1], str))) == (
            2 if mode == "duplicate" else 1
        )


@virtual_time
@pytest.mark.parametrize("mode", ["unique", "duplicate"])
async def test_unique_test_count_match_supports_match_patterns_and_guard_conditions(
    mode: str,
) -> None:
    """count_match with patterns and with guards (both files)."""
    async with Runtime() as rt, rt.scope() as me:
        reg, _, _ = await _two(rt, me, mode)
        assert reg.count("hello", where=lambda v: v[0] == 1) == 1
        assert reg.count("hello", where=lambda v: v[1] == "atom") == (
            2 if mode == "duplicate" else 1
        )
        assert reg.count("nope", where=lambda v: True) == 0


@virtual_time
@pytest.mark.parametrize("mode", ["unique", "duplicate"])
async def test_unique_test_unregister_match_supports_guards(mode: str) -> None:
    async with Runtime() as rt, rt.scope() as me:
        reg, _, v2 = await _two(rt, me, mode)
        reg.unregister_match("hello", me.pid, lambda v: v[0] < 2)
        assert reg.lookup("hello") == ([(me.pid, v2)] if mode == "duplicate" else [])


@virtual_time
@pytest.mark.parametrize("mode", ["unique", "duplicate"])
async def test_unique_test_select_supports_full_match_specs_and_multiple_specs(mode: str) -> None:
    """select with full specs, guards and several specs (an "or" of predicates); count_select."""
    async with Runtime() as rt, rt.scope() as me:
        reg = Registry(rt, keys=mode)  # type: ignore[arg-type]
        reg.register("hello", me.pid, ("some", "tuple"))
        reg.register("world", me.pid, ("another", "tuple"))
        assert [e.key for e in reg.select(lambda k, p, v: k == "hello")] == ["hello"]
        assert [e.meta for e in reg.select(lambda k, p, v: p == me.pid and v[0] == "some")] == [
            ("some", "tuple")
        ]
        specs = [lambda k, p, v: k == "hello", lambda k, p, v: v[0] == "another"]
        got = reg.select(lambda k, p, v: any(s(k, p, v) for s in specs))
        assert sorted(e.key for e in got) == ["hello", "world"]
        assert len(reg.select(lambda k, p, v: v[1] == "tuple")) == 2  # count_select
