"""Elixir's lib/elixir/test/elixir/task/supervisor_test.exs, ported on the virtual clock.

One test per upstream test, named after it. ``Task.Supervisor.start_link`` is
``rt.start(TaskSupervisor, DynamicSupervisorSpec(...))``; ``async`` is ``start(fn, link=me)``,
``async_nolink`` is ``start(fn)``, ``async_stream_nolink`` is ``async_stream``.

Not ported (listed in docs/kernel.md): ``$callers``/``$ancestors``, ``:proc_lib`` initial calls,
``spawn_opt``, the mfa variants, child_spec naming; the ``shutdown:`` option of
``async``/``async_nolink``/``async_stream`` (an awaited task is always ``brutal_kill`` here;
``start_child`` takes ``shutdown``).
"""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from typing import Any

import pytest

from netsuke import (
    ArgumentError,
    ChildNotFoundError,
    Down,
    DynamicSupervisor,
    DynamicSupervisorSpec,
    ExitNow,
    MaxChildrenError,
    Runtime,
    TaskFailedError,
    TaskOutcome,
    TaskSupervisor,
    virtual_time,
)

INF = 10**9


async def sleep(n: float) -> float:
    await asyncio.sleep(n / 1000)
    return n


async def exit_(reason: Any) -> None:
    raise ExitNow(reason)


async def _sup(rt: Runtime, **kw: Any) -> TaskSupervisor:
    pid = await rt.start(TaskSupervisor, DynamicSupervisorSpec(**kw))
    p = rt.process(pid)  # type: ignore[arg-type]
    assert isinstance(p, TaskSupervisor)
    return p


async def _children(rt: Runtime, sup: TaskSupervisor) -> list[Any]:
    return [c.pid for c in await DynamicSupervisor.which_children(sup.pid, runtime=rt)]


@virtual_time
async def test_supervisor_test_counts_and_returns_children() -> None:
    async with Runtime() as rt:
        sup = await _sup(rt)
        assert await _children(rt, sup) == []
        assert await DynamicSupervisor.count_children(sup.pid, runtime=rt) == {
            "specs": 0,
            "active": 0,
            "supervisors": 0,
            "workers": 0,
        }


@virtual_time
async def test_supervisor_test_async_1_spawns_tasks_under_the_supervisor() -> None:
    async with Runtime() as rt, rt.scope() as me:
        sup = await _sup(rt)
        go = asyncio.Event()

        async def wait_and_send() -> str:
            rt.send(me.pid, "ready")
            await go.wait()
            return "done"

        task = await sup.start(wait_and_send, link=me.pid)
        assert await _children(rt, sup) == [task.pid]
        assert task.pid in rt.links(me.pid)
        assert await me.receive(timeout=1) == "ready"
        go.set()
        assert await task.join(1) == "done"


@virtual_time
async def test_supervisor_test_async_1_raises_when_max_children_is_reached() -> None:
    async with Runtime() as rt:
        sup = await _sup(rt, max_children=1)
        await sup.start(lambda: asyncio.sleep(INF))
        with pytest.raises(MaxChildrenError):
            await sup.start(lambda: asyncio.sleep(0))


@virtual_time
async def test_supervisor_test_async_nolink_1_spawns_a_task_under_the_supervisor_without_linking_to_the_caller() -> (
    None
):
    async with Runtime() as rt, rt.scope() as me:
        sup = await _sup(rt)
        task = await sup.start(lambda: sleep(1))
        assert await _children(rt, sup) == [task.pid]
        assert task.pid not in rt.links(me.pid)
        assert await task.join(1) == 1


@virtual_time
async def test_supervisor_test_start_child_1() -> None:
    async with Runtime() as rt, rt.scope() as me:
        sup = await _sup(rt)
        go = asyncio.Event()

        async def wait_and_send() -> None:
            rt.send(me.pid, "ready")
            await go.wait()
            rt.send(me.pid, "done")

        pid = await sup.start_child(wait_and_send)
        assert await _children(rt, sup) == [pid]
        assert pid not in rt.links(me.pid)
        assert await me.receive(timeout=1) == "ready"
        go.set()
        assert await me.receive(timeout=1) == "done"


@virtual_time
async def test_supervisor_test_start_child_1_with_custom_shutdown() -> None:
    async with Runtime() as rt, rt.scope() as me:
        sup = await _sup(rt)
        pid = await sup.start_child(lambda: asyncio.sleep(INF), shutdown="brutal_kill")
        ref = me.monitor(pid)
        await rt.stop(sup.pid, "shutdown")  # upstream: exit(sup, :shutdown) from its parent
        assert await me.receive(timeout=1) == Down(ref, pid, "killed")


@virtual_time
async def test_supervisor_test_start_child_1_with_custom_restart() -> None:
    async with Runtime() as rt, rt.scope() as me:
        sup = await _sup(rt)

        async def wait() -> None:
            rt.send(me.pid, "ready")
            await asyncio.sleep(INF)

        pid = await sup.start_child(wait, restart="permanent")
        assert await me.receive(timeout=1) == "ready"
        ref = me.monitor(pid)
        rt.exit(pid, "shutdown")
        assert await me.receive(timeout=1) == Down(ref, pid, "shutdown")
        assert await me.receive(timeout=1) == "ready"  # restarted
        (new,) = await _children(rt, sup)
        assert new != pid


@virtual_time
async def test_supervisor_test_start_child_1_with_transient_and_temporary_restart() -> None:
    """The restart values of a task child: transient after an abnormal exit only."""
    async with Runtime() as rt, rt.scope() as me:
        sup = await _sup(rt)
        runs: list[str] = []

        async def once(reason: Any) -> None:
            runs.append(reason)
            rt.send(me.pid, reason)
            if len(runs) == 1:
                raise ExitNow(reason)

        await sup.start_child(lambda: once("boom"), restart="transient")
        assert await me.receive(timeout=1) == "boom"
        assert await me.receive(timeout=1) == "boom"  # restarted once, then ends normally
        runs.clear()
        await sup.start_child(lambda: once("normal"), restart="transient")
        assert await me.receive(timeout=1) == "normal"
        with pytest.raises(TimeoutError):
            await me.receive(timeout=1)
        runs.clear()
        await sup.start_child(lambda: once("boom"), restart="temporary")
        assert await me.receive(timeout=1) == "boom"
        with pytest.raises(TimeoutError):
            await me.receive(timeout=1)
        with pytest.raises(ArgumentError):
            await sup.start_child(asyncio.sleep(1), restart="permanent")  # a coroutine: once
        with pytest.raises(ArgumentError):
            await sup.start_child(lambda: asyncio.sleep(1), restart="always")  # type: ignore[arg-type]


@virtual_time
async def test_supervisor_test_terminate_child_2() -> None:
    async with Runtime() as rt:
        sup = await _sup(rt)
        pid = await sup.start_child(lambda: asyncio.sleep(INF))
        assert await _children(rt, sup) == [pid]
        await DynamicSupervisor.terminate_child(sup.pid, pid, runtime=rt)
        assert await _children(rt, sup) == []
        with pytest.raises(ChildNotFoundError):
            await DynamicSupervisor.terminate_child(sup.pid, pid, runtime=rt)


@virtual_time
async def test_supervisor_test_await_1_exits_on_task_error() -> None:
    async def boom() -> None:
        raise RuntimeError("oops")

    async with Runtime() as rt:
        sup = await _sup(rt)
        task = await sup.start(boom)
        with pytest.raises(TaskFailedError) as ei:
            await task.join()
        assert isinstance(ei.value.reason, RuntimeError)


@virtual_time
async def test_supervisor_test_await_1_exits_on_task_exit() -> None:
    async with Runtime() as rt:
        sup = await _sup(rt)
        task = await sup.start(lambda: exit_("unknown"))
        with pytest.raises(TaskFailedError) as ei:
            await task.join()
        assert ei.value.reason == "unknown"


async def _collect(it: Any, take: int | None = None) -> list[Any]:
    out = []
    async with aclosing(it) as s:
        async for o in s:
            out.append(o)
            if take is not None and len(out) == take:
                break
    return out


@virtual_time
async def test_supervisor_test_async_stream_streams_an_enumerable_with_fun() -> None:
    async with Runtime() as rt:
        sup = await _sup(rt)
        assert await _collect(sup.async_stream(range(1, 5), sleep)) == [
            TaskOutcome(True, n) for n in range(1, 5)
        ]


@virtual_time
async def test_supervisor_test_async_stream_streams_an_enumerable_without_leaking_tasks() -> None:
    async with Runtime() as rt:
        sup = await _sup(rt)
        await _collect(sup.async_stream(range(1, 5), sleep))
        await asyncio.sleep(0)
        assert await _children(rt, sup) == []


@virtual_time
async def test_supervisor_test_async_stream_streams_an_enumerable_with_exits() -> None:
    async with Runtime() as rt:
        sup = await _sup(rt)
        assert await _collect(sup.async_stream(range(1, 5), exit_)) == [
            TaskOutcome(False, None, n) for n in range(1, 5)
        ]


@virtual_time
async def test_supervisor_test_async_stream_shuts_down_unused_tasks() -> None:
    async with Runtime() as rt:
        sup = await _sup(rt)
        s = sup.async_stream([0, INF, INF, INF], sleep)
        assert await _collect(s, take=1) == [TaskOutcome(True, 0)]
        await asyncio.sleep(0)
        assert await _children(rt, sup) == []


@virtual_time
async def test_supervisor_test_async_stream_raises_an_error_if_max_children_is_reached_with_clean_stream_shutdown() -> (
    None
):
    async with Runtime() as rt:
        sup = await _sup(rt, max_children=1)
        with pytest.raises(MaxChildrenError):
            await _collect(sup.async_stream([1, 2, 3], sleep, max_concurrency=2))
        await asyncio.sleep(0)
        assert await _children(rt, sup) == []
