"""Elixir's lib/elixir/test/elixir/gen_server_test.exs, ported on the virtual clock.

One test per upstream test, named after it. Not ported (listed in docs/kernel.md):
"generates child_spec/1" (``use GenServer`` macros), "start_link/3 with global", "abcast/3",
"multi_call/4" (distribution); ``{:global, _}`` and ``{name, node}`` targets.
"""

from __future__ import annotations

import pytest

from netsuke import (
    AlreadyStartedError,
    BadTargetError,
    CallSelfError,
    CallTimeoutError,
    NoProcessError,
    Registry,
    Runtime,
    Via,
    virtual_time,
)

from .gen import Stack


@virtual_time
async def test_gen_server_test_start_link_3() -> None:
    async with Runtime() as rt, rt.scope() as me:
        pid = await rt.start(Stack, ["hello"], name="stack", link=me.pid)
        assert pid in rt.links(me.pid)
        with pytest.raises(AlreadyStartedError) as ei:
            await rt.start(Stack, ["hello"], name="stack")
        assert ei.value.pid == pid
        with pytest.raises(BadTargetError):
            await rt.start(Stack, ["hello"], name=("invalid", "name"))  # type: ignore[arg-type]


@virtual_time
async def test_gen_server_test_start_link_3_with_via() -> None:
    async with Runtime() as rt:
        reg = Registry(rt, name="via")
        pid = await rt.start(Stack, ["hello"], name=Via(reg, "stack"))
        assert await rt.call(Via(reg, "stack"), "pop") == "hello"
        assert reg.whereis("stack") == pid


@virtual_time
async def test_gen_server_test_start_link_2_call_2_and_cast_2() -> None:
    async with Runtime() as rt, rt.scope() as me:
        pid = await rt.start(Stack, ["hello"], link=me.pid)
        assert await rt.call(pid, "pop") == "hello"
        assert rt.cast(pid, ("push", "world")) is True
        assert await rt.call(pid, "pop") == "world"
        await rt.stop(pid)
        # a cast to a missing name or via is dropped, not an error
        assert rt.cast("foo", ("push", "world")) is False
        assert rt.cast(Via(Registry(rt), "bar"), ("push", "world")) is False


@virtual_time
async def test_gen_server_test_call_3_exit_messages() -> None:
    async with Runtime() as rt:
        pid = await rt.start(Stack, ["hello"])
        stopped = await rt.start(Stack, ["hello"])
        await rt.stop(stopped)
        with pytest.raises(CallTimeoutError):
            await rt.call(pid, "noreply", timeout=0.001)
        with pytest.raises(NoProcessError):
            await rt.call("nil", "pop")
        with pytest.raises(NoProcessError):
            await rt.call(stopped, "pop")
        with pytest.raises(BadTargetError):
            await rt.call(None, "pop")  # type: ignore[arg-type]


@virtual_time
async def test_gen_server_test_nil_name() -> None:
    async with Runtime() as rt:
        pid = await rt.start(Stack, ["hello"], name=None)
        p = rt.process(pid)  # type: ignore[arg-type]
        assert p is not None and rt._name_of(p) is None


@virtual_time
async def test_gen_server_test_start_2() -> None:
    async with Runtime() as rt, rt.scope() as me:
        pid = await rt.start(Stack, ["hello"])
        assert pid not in rt.links(me.pid)
        await rt.stop(pid)


@virtual_time
async def test_gen_server_test_whereis_1() -> None:
    async with Runtime() as rt:
        pid = await rt.start(Stack, [], name="whereis_server")
        assert rt.whereis("whereis_server") == pid
        assert rt.whereis(pid) == pid  # type: ignore[arg-type]
        assert rt.whereis("whereis_bad_server") is None
        reg = Registry(rt, name="global")
        pid2 = await rt.start(Stack, [], name=Via(reg, "whereis_server"))
        assert rt.whereis(Via(reg, "whereis_server")) == pid2
        assert rt.whereis(Via(reg, "whereis_bad_server")) is None


@virtual_time
async def test_gen_server_test_stop_3() -> None:
    async with Runtime() as rt:
        pid = await rt.start(Stack, [])
        await rt.stop(pid, "normal")
        with pytest.raises(NoProcessError):
            await rt.stop(pid)
        with pytest.raises(NoProcessError):
            await rt.stop("nil")
        pid = await rt.start(Stack, [])
        # stop(self()) from inside a callback fails at once: calling_self, no deadlock
        err = await rt.call(pid, "stop_self", timeout=1)
        assert isinstance(err, CallSelfError)
        assert rt.alive(pid)  # type: ignore[arg-type]
        await rt.start(Stack, [], name="stack_name")
        await rt.stop("stack_name", "normal")
        assert rt.whereis("stack_name") is None
