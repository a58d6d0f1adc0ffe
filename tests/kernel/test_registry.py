from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netsuke import AlreadyStartedError, NoProcessError, Registry, Runtime, Via, run_virtual

from .helpers import Echo, settle


async def test_unique_keys_with_metadata_and_removal_on_exit() -> None:
    async with Runtime() as rt:
        reg = Registry(rt, keys="unique", name="agents")
        a = await rt.start(Echo, None)
        b = await rt.start(Echo, None)
        assert a and b
        reg.register("chat:user:1", a, {"model": "offline", "user": "1"})
        reg.register("chat:user:2", b, {"model": "claude", "user": "2"})
        with pytest.raises(AlreadyStartedError) as ei:
            reg.register("chat:user:1", b)
        assert ei.value.pid == a
        assert reg.whereis("chat:user:1") == a
        assert reg.meta("chat:user:1") == {"model": "offline", "user": "1"}
        assert reg.lookup("chat:user:2") == [(b, {"model": "claude", "user": "2"})]
        assert reg.keys(a) == ["chat:user:1"]
        reg.update_meta("chat:user:1", a, {"model": "x"})
        assert reg.meta("chat:user:1") == {"model": "x"}
        rt.kill(a)
        assert reg.whereis("chat:user:1") is None
        assert len(reg) == 1


async def test_match_by_glob_prefix_contains_and_metadata_count_and_select() -> None:
    async with Runtime() as rt:
        reg = rt.registry
        for user in ("1", "2", "123"):
            await rt.start(Echo, None, name=f"chat:user:{user}")
        await rt.start(Echo, None, name="support:user:123")
        p = rt.whereis("support:user:123")
        assert p
        reg.update_meta("support:user:123", p, {"model": "claude"})
        assert {e.key for e in reg.match("chat:*")} == {
            "chat:user:1",
            "chat:user:2",
            "chat:user:123",
        }
        assert {e.key for e in reg.match(contains="user:123")} == {
            "chat:user:123",
            "support:user:123",
        }
        assert {e.key for e in reg.match(prefix="support:")} == {"support:user:123"}
        assert [e.key for e in reg.match(where={"model": "claude"})] == ["support:user:123"]
        assert reg.count("chat:user:?") == 2
        assert reg.count(where=lambda m: m is None) >= 3
        sel = reg.select(lambda k, pid, meta: k.endswith("2"))
        assert [e.key for e in sel] == ["chat:user:2"]


async def test_duplicate_keys_dispatch_to_every_entry() -> None:
    async with Runtime() as rt:
        topic = Registry(rt, keys="duplicate", name="topics")
        subs = [await rt.start(Echo, None) for _ in range(3)]
        for s in subs:
            topic.register("news", s)  # type: ignore[arg-type]
        assert len(topic.lookup("news")) == 3
        assert topic.dispatch("news", "hello") == 3
        await settle()
        for s in subs:
            assert await rt.call(s, "infos") == ["hello"]  # type: ignore[arg-type]
        rt.kill(subs[0])  # type: ignore[arg-type]
        assert topic.dispatch("news", "again") == 2
        assert topic.unregister("news", subs[1])  # type: ignore[arg-type]
        assert topic.count() == 1


async def test_via_names_resolve_through_their_registry() -> None:
    async with Runtime() as rt:
        reg = Registry(rt, name="agents")
        pid = await rt.start(Echo, None, name=Via(reg, "agent-1"))
        assert reg.whereis("agent-1") == pid
        assert await rt.call(Via(reg, "agent-1"), "hi") == "hi"
        with pytest.raises(AlreadyStartedError):
            await rt.start(Echo, None, name=Via(reg, "agent-1"))
        with pytest.raises(NoProcessError):
            reg.register("x", rt.registry.whereis("netsuke.root").__class__("local", 10**9))


@settings(max_examples=25, deadline=None)
@given(n=st.integers(min_value=2, max_value=40), delays=st.lists(st.integers(0, 3), max_size=40))
def test_concurrent_registrations_of_one_name_have_exactly_one_winner(
    n: int, delays: list[int]
) -> None:
    async def main() -> None:
        async with Runtime() as rt:

            async def contender(i: int) -> object:
                for _ in range(delays[i] if i < len(delays) else 0):
                    await asyncio.sleep(0)
                try:
                    return await rt.start(Echo, None, name="the-one")
                except AlreadyStartedError as e:
                    return ("lost", e.pid)

            results = await asyncio.gather(*(contender(i) for i in range(n)))
            winners = [r for r in results if not isinstance(r, tuple)]
            losers = [r for r in results if isinstance(r, tuple)]
            assert len(winners) == 1
            assert all(pid == winners[0] for _, pid in losers)
            assert rt.whereis("the-one") == winners[0]

    run_virtual(main())


async def test_ensure_started_under_concurrency_gives_one_process() -> None:
    async with Runtime() as rt:
        pids = await asyncio.gather(
            *(rt.ensure_started(Echo, None, name="session:u1") for _ in range(100))
        )
        assert len(set(pids)) == 1


_OPS = st.lists(
    st.tuples(
        st.sampled_from(["register", "unregister", "unregister_match", "kill"]),
        st.integers(0, 2),  # key
        st.integers(0, 2),  # process
        st.integers(0, 3),  # meta
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(ops=_OPS)
def test_duplicate_registry_matches_a_list_of_entries(ops: list[tuple[str, int, int, int]]) -> None:
    """A duplicate registry behaves as a plain list of (key, pid, meta) entries."""

    async def main() -> None:
        async with Runtime() as rt:
            reg = Registry(rt, keys="duplicate")
            pids = [await rt.start(Echo, None) for _ in range(3)]
            model: list[tuple[int, int, int]] = []
            alive = [True, True, True]
            for op, k, i, m in ops:
                pid = pids[i]
                assert pid is not None
                if op == "register":
                    if alive[i]:
                        reg.register(k, pid, m)
                        model.append((k, i, m))
                elif op == "unregister":
                    had = any(e[0] == k and e[1] == i for e in model)
                    assert reg.unregister(k, pid) == (had and alive[i])
                    model = [e for e in model if not (e[0] == k and e[1] == i)]
                elif op == "unregister_match":
                    gone = [e for e in model if e[0] == k and e[1] == i and e[2] % 2 == m % 2]
                    n = reg.unregister_match(k, pid, lambda v, m=m: v % 2 == m % 2)
                    assert n == (len(gone) if alive[i] else 0)
                    model = [e for e in model if e not in gone or not alive[i]]
                else:
                    rt.kill(pid)
                    alive[i] = False
                    model = [e for e in model if e[1] != i]
                assert len(reg) == len(model) == reg.count()
                for key in range(3):
                    want = [(pids[j], mm) for kk, j, mm in model if kk == key]
                    assert sorted(reg.lookup(key), key=repr) == sorted(want, key=repr)
                    assert reg.dispatch(key, "x") == len(want)
                for j in range(3):
                    p = pids[j]
                    assert p is not None
                    want_keys = sorted(kk for kk, jj, _ in model if jj == j)
                    assert sorted(reg.keys(p)) == (want_keys if alive[j] else [])

    run_virtual(main())
