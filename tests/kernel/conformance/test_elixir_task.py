"""Elixir's lib/elixir/test/elixir/task_test.exs, ported to Netsuke on the virtual clock.

One test per upstream test, named after it (``describe`` folded into the name; Elixir's
milliseconds are Netsuke's seconds / 1000). A Task is ``rt.tasks.start`` (unlinked, like
``async_nolink``; ``link=`` makes it ``async``); ``exit(reason)`` inside a task is ``raise
ExitNow(reason)``; ``{:ok, v}``/``{:exit, r}``/``nil`` are ``TaskOutcome(True, v)``/
``TaskOutcome(False, reason=r)``/``None``.

Not ported (listed in docs/kernel.md): tests of ``$callers``, process labels, the logger
reporter, ``:proc_lib`` initial calls and ``child_spec`` generation (BEAM process dictionary
and code loading); ``:noconnection`` (distribution); "raises when invoked from a non-owner
process" (a handle is a value any coroutine may await: there is no owner); the tests built on
``%Task{pid: nil}`` structs with hand-sent messages (a handle cannot be forged: ``completed``
stands in for them); mfa variants (the same as the fun variants in Python).
"""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from typing import Any

import pytest

from netsuke import (
    ArgumentError,
    CallTimeoutError,
    ExitNow,
    Runtime,
    TaskFailedError,
    TaskHandle,
    TaskOutcome,
    TaskSupervisor,
    virtual_time,
)

INF = 10**9


async def sleep(n: float) -> float:
    """Elixir's TaskTest.sleep/1: sleeps n ms, returns n."""
    await asyncio.sleep(n / 1000)
    return n


async def exit_(reason: Any) -> None:
    raise ExitNow(reason)


def ok(v: Any) -> TaskOutcome[Any]:
    return TaskOutcome(True, v)


def ex(r: Any) -> TaskOutcome[Any]:
    return TaskOutcome(False, None, r)


async def _collect(it: Any, take: int | None = None) -> list[Any]:
    out = []
    async with aclosing(it) as s:
        async for o in s:
            out.append(o)
            if take is not None and len(out) == take:
                break
    return out


# --------------------------------------------------------------------------- basics


@virtual_time
async def test_task_test_can_be_supervised_directly() -> None:
    from netsuke import Supervisor, SupervisorSpec

    async with Runtime() as rt, rt.scope() as me:

        async def work() -> None:
            rt.send(me.pid, "ran")

        spec = SupervisorSpec([TaskSupervisor.child_spec(work)], strategy="one_for_one")
        sup = await rt.start(Supervisor, spec)
        assert sup is not None
        assert await me.receive(timeout=1) == "ran"
        with pytest.raises(ArgumentError):
            TaskSupervisor.child_spec(work(), restart="permanent")  # type: ignore[arg-type]


@virtual_time
async def test_task_test_generates_child_spec_1() -> None:
    async def work() -> None:
        pass

    spec = TaskSupervisor.child_spec(work)
    assert (spec.id, spec.restart, spec.shutdown_policy) == ("task", "temporary", 5.0)
    spec = TaskSupervisor.child_spec(work, id="other", restart="permanent", shutdown="brutal_kill")
    assert (spec.id, spec.restart, spec.shutdown_policy) == ("other", "permanent", "brutal_kill")
    with pytest.raises(ArgumentError):
        TaskSupervisor.child_spec(work, restart="always")  # type: ignore[arg-type]


@virtual_time
async def test_task_test_async_1() -> None:
    async with Runtime() as rt, rt.scope() as me:
        go = asyncio.Event()

        async def wait_and_send() -> str:
            rt.send(me.pid, "ready")
            await go.wait()
            return "done"

        task = await rt.tasks.start(wait_and_send, link=me.pid)
        assert task.pid in rt.links(me.pid)
        assert await me.receive(timeout=1) == "ready"
        go.set()
        assert await task.join() == "done"


@virtual_time
async def test_task_test_start_1() -> None:
    async with Runtime() as rt, rt.scope() as me:

        async def send_done() -> None:
            rt.send(me.pid, "done")

        pid = await rt.tasks.start_child(send_done)
        assert pid not in rt.links(me.pid)
        assert await me.receive(timeout=1) == "done"


@virtual_time
async def test_task_test_completed_1() -> None:
    async with Runtime() as rt:
        task = rt.tasks.completed("done")
        assert task.pid is None
        assert await task.join() == "done"


@virtual_time
async def test_task_test_start_link_1() -> None:
    async with Runtime() as rt, rt.scope(trap_exit=True) as me:
        go = asyncio.Event()

        async def wait_and_send() -> None:
            rt.send(me.pid, "ready")
            await go.wait()
            rt.send(me.pid, "done")

        h = await rt.tasks.start(wait_and_send, link=me.pid)
        assert h.pid in rt.links(me.pid)
        assert await me.receive(timeout=1) == "ready"
        go.set()
        assert await me.receive(timeout=1) == "done"


# --------------------------------------------------------------------------- ignore/1


@virtual_time
async def test_task_test_ignore_1_discards_on_time_replies() -> None:
    async with Runtime() as rt:
        task = await rt.tasks.start(lambda: asyncio.sleep(0, "ok"))
        await rt.wait_exit(task.pid)  # type: ignore[arg-type]
        assert task.ignore() == ok("ok")
        with pytest.raises(CallTimeoutError):
            await task.join(0)


@virtual_time
async def test_task_test_ignore_1_discards_late_replies() -> None:
    async with Runtime() as rt, rt.scope() as me:
        go = asyncio.Event()

        async def work() -> str:
            await go.wait()
            return "ok"

        task = await rt.tasks.start(work, link=me.pid)
        assert task.ignore() is None
        assert task.pid not in rt.links(me.pid)
        go.set()
        await rt.wait_exit(task.pid)  # type: ignore[arg-type]
        with pytest.raises(CallTimeoutError):
            await task.join(0)


@virtual_time
async def test_task_test_ignore_1_discards_on_time_failures() -> None:
    async with Runtime() as rt:
        task = await rt.tasks.start(lambda: exit_("oops"))
        await rt.wait_exit(task.pid)  # type: ignore[arg-type]
        assert task.ignore() == ex("oops")
        with pytest.raises(CallTimeoutError):
            await task.join(0)


@virtual_time
async def test_task_test_ignore_1_discards_late_failures() -> None:
    async with Runtime() as rt:
        go = asyncio.Event()

        async def work() -> None:
            await go.wait()
            raise ExitNow("oops")

        task = await rt.tasks.start(work)
        assert task.ignore() is None
        go.set()
        await rt.wait_exit(task.pid)  # type: ignore[arg-type]
        with pytest.raises(CallTimeoutError):
            await task.join(0)


@virtual_time
async def test_task_test_ignore_1_can_ignore_completed_tasks() -> None:
    async with Runtime() as rt:
        assert rt.tasks.completed("done").ignore() == ok("done")


# --------------------------------------------------------------------------- await/2


@virtual_time
async def test_task_test_await_2_demonitors_and_unalias_on_timeout() -> None:
    async with Runtime() as rt:
        go = asyncio.Event()

        async def work() -> str:
            await go.wait()
            return "done"

        task = await rt.tasks.start(work)
        with pytest.raises(CallTimeoutError):
            await task.join(0)
        go.set()
        assert await task.join(1) == "done"  # the task kept running


@virtual_time
async def test_task_test_await_2_exits_on_timeout() -> None:
    async with Runtime() as rt:
        task = await rt.tasks.start(lambda: asyncio.sleep(INF))
        with pytest.raises(CallTimeoutError):
            await task.join(0)


@virtual_time
async def test_task_test_await_2_exits_on_normal_exit() -> None:
    """A task that exits normally without a value is not a success with None."""
    async with Runtime() as rt:
        holder: list[TaskHandle[Any]] = []

        async def work() -> None:
            await asyncio.sleep(0)
            rt.exit(holder[0].pid, "normal")  # type: ignore[arg-type]  # exit(self(), :normal)
            await asyncio.sleep(INF)

        holder.append(await rt.tasks.start(work))
        with pytest.raises(TaskFailedError) as ei:
            await holder[0].join(5)
        assert ei.value.reason == "normal"
        task2 = await rt.tasks.start(lambda: exit_("normal"))
        with pytest.raises(TaskFailedError) as ei:
            await task2.join(5)
        assert ei.value.reason == "normal"


@virtual_time
async def test_task_test_await_2_exits_on_task_error() -> None:
    async def boom() -> None:
        raise RuntimeError("oops")

    async with Runtime() as rt:
        task = await rt.tasks.start(boom)
        with pytest.raises(TaskFailedError) as ei:
            await task.join()
        assert isinstance(ei.value.reason, RuntimeError)


@virtual_time
async def test_task_test_await_2_exits_on_task_exit() -> None:
    async with Runtime() as rt:
        task = await rt.tasks.start(lambda: exit_("unknown"))
        with pytest.raises(TaskFailedError) as ei:
            await task.join()
        assert ei.value.reason == "unknown"


# ---------------------------------------------------------------------- await_many/2


@virtual_time
async def test_task_test_await_many_2_returns_list_of_replies() -> None:
    async with Runtime() as rt:
        tasks = [await rt.tasks.start(lambda n=n: sleep(n)) for n in (1, 2, 3)]
        assert await rt.tasks.join_many(tasks) == [1, 2, 3]


@virtual_time
async def test_task_test_await_many_2_returns_replies_in_input_order_ignoring_response_order() -> (
    None
):
    async with Runtime() as rt:
        tasks = [await rt.tasks.start(lambda n=n: sleep(n)) for n in (30, 10, 20)]
        assert await rt.tasks.join_many(tasks) == [30, 10, 20]


@virtual_time
async def test_task_test_await_many_2_returns_an_empty_list_immediately() -> None:
    async with Runtime() as rt:
        assert await rt.tasks.join_many([]) == []


@virtual_time
async def test_task_test_await_many_2_exits_on_timeout() -> None:
    async with Runtime() as rt:
        task = await rt.tasks.start(lambda: asyncio.sleep(INF))
        with pytest.raises(CallTimeoutError):
            await rt.tasks.join_many([task], 0)
        with pytest.raises(ArgumentError):
            await rt.tasks.join_many([task], -1)


@virtual_time
async def test_task_test_await_many_2_exits_with_same_reason_when_task_exits() -> None:
    async with Runtime() as rt:
        task = await rt.tasks.start(lambda: exit_("normal"))
        with pytest.raises(TaskFailedError) as ei:
            await rt.tasks.join_many([task])
        assert ei.value.reason == "normal"


@virtual_time
@pytest.mark.parametrize("how", ["exits", "crashes", "throws", "error"])
async def test_task_test_await_many_2_exits_immediately_when_any_task_fails(how: str) -> None:
    """'exits immediately when any task exits / crashes / throws' and '... on any task error'."""

    async def fail() -> None:
        await asyncio.sleep(0.001)
        if how == "exits":
            raise ExitNow("normal")
        raise RuntimeError(how)

    async with Runtime() as rt:
        loop = asyncio.get_running_loop()
        t1 = await rt.tasks.start(lambda: asyncio.sleep(INF))
        t2 = await rt.tasks.start(fail)
        t0 = loop.time()
        with pytest.raises(TaskFailedError):
            await rt.tasks.join_many([t1, t2], None)
        assert loop.time() - t0 < 0.01
        assert rt.alive(t1.pid)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- yield/2


@virtual_time
async def test_task_test_yield_2_returns_ok_result_when_reply_and_down_in_message_queue() -> None:
    async with Runtime() as rt:
        task = await rt.tasks.start(lambda: asyncio.sleep(0, "result"))
        await rt.wait_exit(task.pid)  # type: ignore[arg-type]
        assert await task.yield_(0) == ok("result")


@virtual_time
async def test_task_test_yield_2_returns_nil_on_timeout() -> None:
    async with Runtime() as rt:
        task = await rt.tasks.start(lambda: asyncio.sleep(INF))
        assert await task.yield_(0) is None


@virtual_time
async def test_task_test_yield_2_return_exit_on_normal_exit() -> None:
    async with Runtime() as rt:
        task = await rt.tasks.start(lambda: exit_("normal"))
        assert await task.yield_() == ex("normal")


# ---------------------------------------------------------------------- yield_many/2


@virtual_time
async def test_task_test_yield_many_2_returns_ok_result_when_reply_and_down_in_message_queue() -> (
    None
):
    async with Runtime() as rt:
        task = await rt.tasks.start(lambda: asyncio.sleep(0, "result"))
        await rt.wait_exit(task.pid)  # type: ignore[arg-type]
        assert await rt.tasks.yield_many([task], 0) == [(task, ok("result"))]


@virtual_time
async def test_task_test_yield_many_2_returns_nil_on_timeout_by_default() -> None:
    async with Runtime() as rt:
        task = await rt.tasks.start(lambda: asyncio.sleep(INF))
        assert await rt.tasks.yield_many([task], 0) == [(task, None)]
        assert rt.alive(task.pid)  # type: ignore[arg-type]


@virtual_time
async def test_task_test_yield_many_2_shuts_down_on_timeout_when_configured() -> None:
    async with Runtime() as rt:
        task = await rt.tasks.start(lambda: asyncio.sleep(INF))
        assert await rt.tasks.yield_many([task], 0, on_timeout="kill_task") == [(task, None)]
        assert not rt.alive(task.pid)  # type: ignore[arg-type]


@virtual_time
async def test_task_test_yield_many_2_ignores_on_timeout_when_configured() -> None:
    async with Runtime() as rt:
        done = asyncio.Event()

        async def work() -> str:
            await done.wait()
            return "ok"

        task = await rt.tasks.start(work)
        assert await rt.tasks.yield_many([task], 0, on_timeout="ignore") == [(task, None)]
        assert rt.alive(task.pid)  # type: ignore[arg-type]
        done.set()
        await rt.wait_exit(task.pid)  # type: ignore[arg-type]
        assert await task.yield_(0) is None


@virtual_time
async def test_task_test_yield_many_2_return_exit_on_normal_exit() -> None:
    async with Runtime() as rt:
        task = await rt.tasks.start(lambda: exit_("normal"))
        assert await rt.tasks.yield_many([task]) == [(task, ex("normal"))]


@virtual_time
async def test_task_test_yield_many_2_returns_results_from_multiple_tasks() -> None:
    async with Runtime() as rt:
        t1 = await rt.tasks.start(lambda: asyncio.sleep(0, "result"))
        t2 = await rt.tasks.start(lambda: asyncio.sleep(INF))
        t3 = await rt.tasks.start(lambda: exit_("normal"))
        await rt.wait_exit(t1.pid)  # type: ignore[arg-type]
        await rt.wait_exit(t3.pid)  # type: ignore[arg-type]
        assert await rt.tasks.yield_many([t1, t2, t3], 0) == [
            (t1, ok("result")),
            (t2, None),
            (t3, ex("normal")),
        ]


@virtual_time
async def test_task_test_yield_many_2_returns_results_from_multiple_tasks_with_limit() -> None:
    async with Runtime() as rt:
        t1 = await rt.tasks.start(lambda: sleep(1))
        t2 = await rt.tasks.start(lambda: asyncio.sleep(INF))
        t3 = await rt.tasks.start(lambda: sleep(2))
        assert await rt.tasks.yield_many([t1, t2, t3], None, limit=1) == [
            (t1, ok(1)),
            (t2, None),
            (t3, None),
        ]
        assert await rt.tasks.yield_many([t2, t3], None, limit=1) == [(t2, None), (t3, ok(2))]


@virtual_time
async def test_task_test_yield_many_2_returns_once_all_tasks_have_replied_below_limit() -> None:
    async with Runtime() as rt:
        task = await rt.tasks.start(lambda: asyncio.sleep(0, "done"))
        assert await rt.tasks.yield_many([task], None, limit=2) == [(task, ok("done"))]


@virtual_time
async def test_task_test_yield_many_2_returns_results_from_multiple_tasks_with_limit_and_on_timeout() -> (
    None
):
    async with Runtime() as rt:
        t1 = await rt.tasks.start(lambda: asyncio.sleep(INF))
        t2 = await rt.tasks.start(lambda: asyncio.sleep(0, "done"))
        assert await rt.tasks.yield_many([t1, t2], None, on_timeout="kill_task", limit=1) == [
            (t1, None),
            (t2, ok("done")),
        ]
        assert rt.alive(t1.pid)  # type: ignore[arg-type]  # the limit, not the timeout
        assert await rt.tasks.yield_many([t1], 0, on_timeout="kill_task", limit=1) == [(t1, None)]
        assert not rt.alive(t1.pid)  # type: ignore[arg-type]


@virtual_time
async def test_task_test_yield_many_2_returns_results_on_infinity_timeout() -> None:
    async with Runtime() as rt:
        t1 = await rt.tasks.start(lambda: sleep(3))
        t2 = await rt.tasks.start(lambda: sleep(1))
        t3 = await rt.tasks.start(lambda: exit_("normal"))
        assert await rt.tasks.yield_many([t1, t2, t3], None) == [
            (t1, ok(3)),
            (t2, ok(1)),
            (t3, ex("normal")),
        ]


# ----------------------------------------------------------------------- shutdown/2


async def _dummy(rt: Runtime, reason: Any, value: Any = None) -> TaskHandle[Any]:
    """A task already down with ``reason`` (after replying ``value``, if given)."""

    async def work() -> Any:
        if value is not None:
            return value
        raise ExitNow(reason)

    task = await rt.tasks.start(work)
    await rt.wait_exit(task.pid)  # type: ignore[arg-type]
    return task


@virtual_time
@pytest.mark.parametrize("mode", [5.0, "brutal_kill"], ids=["timeout", "brutal_kill"])
@pytest.mark.parametrize("reason", ["abnormal", "normal", "shutdown"])
async def test_task_test_shutdown_2_returns_ok_result_when_reply_and_down_in_message_queue(
    mode: Any, reason: str
) -> None:
    async with Runtime() as rt:
        task = await _dummy(rt, reason, value="result")
        assert await task.shutdown(mode) == ok("result")


@virtual_time
async def test_task_test_shutdown_2_returns_nil_on_shutting_down_task() -> None:
    async with Runtime() as rt:
        task = await rt.tasks.start(lambda: asyncio.sleep(INF))
        assert await task.shutdown() is None
        assert not rt.alive(task.pid)  # type: ignore[arg-type]


@virtual_time
@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("abnormal", ex("abnormal")),
        ("normal", ex("normal")),
        ("shutdown", None),
        ("killed", ex("killed")),
    ],
    ids=["abnormal", "normal", "shutdown", "killed"],
)
async def test_task_test_shutdown_2_returns_exit_or_nil_on_down_in_message_queue(
    reason: str, expected: Any
) -> None:
    """returns exit on abnormal / normal / killed :DOWN, nil on shutdown :DOWN."""
    async with Runtime() as rt:
        task = await _dummy(rt, reason)
        assert await task.shutdown() == expected


@virtual_time
async def test_task_test_shutdown_2_ignores_if_task_pid_is_nil() -> None:
    async with Runtime() as rt:
        assert await rt.tasks.completed("done").shutdown() == ok("done")


@virtual_time
@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("killed", None),
        ("abnormal", ex("abnormal")),
        ("normal", ex("normal")),
        ("shutdown", ex("shutdown")),
    ],
    ids=["killed", "abnormal", "normal", "shutdown"],
)
async def test_task_test_shutdown_2_with_brutal_kill_returns_on_down_in_message_queue(
    reason: str, expected: Any
) -> None:
    """nil on killed :DOWN; exit on abnormal / normal / shutdown :DOWN."""
    async with Runtime() as rt:
        task = await _dummy(rt, reason)
        assert await task.shutdown("brutal_kill") == expected


@virtual_time
async def test_task_test_shutdown_2_returns_nil_on_killing_task() -> None:
    async with Runtime() as rt, rt.scope() as me:
        task = await rt.tasks.start(lambda: asyncio.sleep(INF), link=me.pid)
        assert await task.shutdown("brutal_kill") is None
        assert not rt.alive(task.pid)  # type: ignore[arg-type]
        assert rt.alive(me.pid)  # unlinked first: the kill did not reach us
        with pytest.raises(ArgumentError):
            await task.shutdown(-1)


# --------------------------------------------------------------------- async_stream/2


@virtual_time
async def test_task_test_async_stream_2_timeout() -> None:
    async with Runtime() as rt:
        with pytest.raises(CallTimeoutError):
            await _collect(rt.tasks.async_stream([INF], sleep, timeout=0))
        await asyncio.sleep(0)
        assert (await rt.tasks.count_children(rt.tasks.pid, runtime=rt))["active"] == 0


@virtual_time
async def test_task_test_async_stream_2_streams_an_enumerable_with_ordered_false() -> None:
    async with Runtime() as rt:
        s = rt.tasks.async_stream([400, 300, 200, 100], sleep, max_concurrency=1, ordered=False)
        assert await _collect(s) == [ok(400), ok(300), ok(200), ok(100)]
        s = rt.tasks.async_stream([400, 300, 200, 100], sleep, max_concurrency=4, ordered=False)
        assert await _collect(s) == [ok(100), ok(200), ok(300), ok(400)]


@virtual_time
async def test_task_test_async_stream_2_streams_an_enumerable_with_ordered_false_on_timeout_kill_task() -> (
    None
):
    async with Runtime() as rt:
        s = rt.tasks.async_stream(
            [100, 1, 100, 1],
            sleep,
            max_concurrency=4,
            ordered=False,
            on_timeout="kill_task",
            timeout=0.05,
        )
        assert await _collect(s) == [ok(1), ok(1), ex("timeout"), ex("timeout")]


@virtual_time
async def test_task_test_async_stream_2_streams_an_enumerable_with_infinite_timeout() -> None:
    async def f(_: Any) -> str:
        return "ok"

    async with Runtime() as rt:
        assert await _collect(rt.tasks.async_stream([1], f, timeout=None)) == [ok("ok")]


@virtual_time
async def test_task_test_async_stream_2_does_not_allow_streaming_with_bad_options() -> None:
    """max_concurrency = 0, invalid :on_timeout, invalid :timeout: raised at once."""
    async with Runtime() as rt:
        for kw in ({"max_concurrency": 0}, {"on_timeout": "unknown"}, {"timeout": "unknown"}):
            with pytest.raises(ArgumentError):
                rt.tasks.async_stream([1], sleep, **kw)  # type: ignore[arg-type]


@virtual_time
async def test_task_test_async_stream_2_wrapping_a_flat_map_concat_with_a_haltable_stream() -> None:
    async def ident(x: Any) -> Any:
        return x

    async def source() -> Any:
        for x in ["foo", 1, 2]:
            yield x

    async with Runtime() as rt:
        assert await _collect(rt.tasks.async_stream(source(), ident)) == [ok("foo"), ok(1), ok(2)]


CONCURRENCY = pytest.mark.parametrize("mc", [4, 2, 8], ids=["==", "<", ">"])


@virtual_time
@CONCURRENCY
async def test_task_test_async_stream_with_max_concurrency_streams_an_enumerable_with_fun(
    mc: int,
) -> None:
    async with Runtime() as rt:
        s = rt.tasks.async_stream(range(1, 5), sleep, max_concurrency=mc)
        assert await _collect(s) == [ok(1), ok(2), ok(3), ok(4)]
        await asyncio.sleep(0)
        assert (await rt.tasks.count_children(rt.tasks.pid, runtime=rt))["active"] == 0


@virtual_time
@CONCURRENCY
async def test_task_test_async_stream_with_max_concurrency_streams_an_enumerable_with_slowest_first(
    mc: int,
) -> None:
    async with Runtime() as rt:
        s = rt.tasks.async_stream([4, 3, 2, 1], sleep, max_concurrency=mc)
        assert await _collect(s) == [ok(4), ok(3), ok(2), ok(1)]


@virtual_time
@CONCURRENCY
async def test_task_test_async_stream_with_max_concurrency_streams_an_enumerable_with_exits(
    mc: int,
) -> None:
    async with Runtime() as rt:
        s = rt.tasks.async_stream(range(1, 5), exit_, max_concurrency=mc)
        assert await _collect(s) == [ex(1), ex(2), ex(3), ex(4)]


@virtual_time
@CONCURRENCY
async def test_task_test_async_stream_with_max_concurrency_shuts_down_unused_tasks(
    mc: int,
) -> None:
    async with Runtime() as rt:
        s = rt.tasks.async_stream([0, INF, INF, INF], sleep, max_concurrency=mc)
        assert await _collect(s, take=1) == [ok(0)]
        await asyncio.sleep(0)
        assert (await rt.tasks.count_children(rt.tasks.pid, runtime=rt))["active"] == 0


@virtual_time
@CONCURRENCY
async def test_task_test_async_stream_with_max_concurrency_with_outer_halt_and_slowest_first(
    mc: int,
) -> None:
    async with Runtime() as rt:
        s = rt.tasks.async_stream(range(8, 0, -1), sleep, max_concurrency=mc)
        assert await _collect(s, take=4) == [ok(8), ok(7), ok(6), ok(5)]


@virtual_time
@CONCURRENCY
async def test_task_test_async_stream_with_max_concurrency_with_on_timeout_set_to_kill_task(
    mc: int,
) -> None:
    async with Runtime() as rt:
        s = rt.tasks.async_stream(
            [100, 1, 100, 1], sleep, max_concurrency=mc, on_timeout="kill_task", timeout=0.05
        )
        assert await _collect(s) == [ex("timeout"), ok(1), ex("timeout"), ok(1)]


@virtual_time
@CONCURRENCY
async def test_task_test_async_stream_with_max_concurrency_with_timeout_and_zip_input_on_exit_set_to_true(
    mc: int,
) -> None:
    async with Runtime() as rt:
        s = rt.tasks.async_stream(
            [1, 100],
            sleep,
            max_concurrency=mc,
            zip_input_on_exit=True,
            on_timeout="kill_task",
            timeout=0.05,
        )
        assert await _collect(s) == [ok(1), ex((100, "timeout"))]


@virtual_time
@CONCURRENCY
async def test_task_test_async_stream_with_max_concurrency_with_outer_halt_on_failure_and_zip_input_on_exit(
    mc: int,
) -> None:
    async with Runtime() as rt:
        s = rt.tasks.async_stream(range(1, 9), exit_, max_concurrency=mc, zip_input_on_exit=True)
        assert await _collect(s, take=4) == [ex((1, 1)), ex((2, 2)), ex((3, 3)), ex((4, 4))]


async def _zip(a: Any, b: Any) -> list[tuple[Any, Any]]:
    out = []
    async with aclosing(a) as x, aclosing(b) as y:
        while True:
            try:
                out.append((await anext(x), await anext(y)))
            except StopAsyncIteration:
                return out


@virtual_time
@CONCURRENCY
async def test_task_test_async_stream_with_max_concurrency_streams_an_enumerable_without_leaking_tasks(
    mc: int,
) -> None:
    async with Runtime() as rt:
        before = rt.count_processes()
        s = rt.tasks.async_stream(range(1, 5), sleep, max_concurrency=mc)
        assert await _collect(s) == [ok(1), ok(2), ok(3), ok(4)]
        await asyncio.sleep(0)
        assert rt.count_processes() == before


@virtual_time
@CONCURRENCY
async def test_task_test_async_stream_with_max_concurrency_shuts_down_unused_tasks_without_leaking_messages(
    mc: int,
) -> None:
    async with Runtime() as rt, rt.scope() as me:
        s = rt.tasks.async_stream([0, INF, INF, INF], sleep, max_concurrency=mc)
        assert await _collect(s, take=1) == [ok(0)]
        await asyncio.sleep(1)
        with pytest.raises(TimeoutError):
            await me.receive(timeout=0)


@virtual_time
@CONCURRENCY
@pytest.mark.parametrize("case", ["on success", "on failure", "with slowest first"])
async def test_task_test_async_stream_with_max_concurrency_is_zippable(mc: int, case: str) -> None:
    """'is zippable on success', '... on failure', '... with slowest first'."""
    items = [4, 3, 2, 1] if case == "with slowest first" else [1, 2, 3, 4]
    fn = exit_ if case == "on failure" else sleep
    async with Runtime() as rt:
        a = rt.tasks.async_stream(items, fn, max_concurrency=mc)
        b = rt.tasks.async_stream(items, fn, max_concurrency=mc)
        got = [
            (x.value if x.ok else x.reason, y.value if y.ok else y.reason)
            for x, y in await _zip(a, b)
        ]
        assert got == [(n, n) for n in items]


@virtual_time
@CONCURRENCY
@pytest.mark.parametrize("case", ["on success", "on failure", "and slowest first"])
async def test_task_test_async_stream_with_max_concurrency_with_inner_halt(
    mc: int, case: str
) -> None:
    """'with inner halt on success', '... on failure', '... and slowest first'."""
    import itertools

    src = range(8, 0, -1) if case == "and slowest first" else range(1, 9)
    fn = exit_ if case == "on failure" else sleep
    wrap = ex if case == "on failure" else ok
    async with Runtime() as rt:
        s = rt.tasks.async_stream(itertools.islice(src, 4), fn, max_concurrency=mc)
        assert await _collect(s) == [wrap(n) for n in list(src)[:4]]


@virtual_time
@CONCURRENCY
@pytest.mark.parametrize("case", ["on success", "on failure"])
async def test_task_test_async_stream_with_max_concurrency_with_outer_halt(
    mc: int, case: str
) -> None:
    """'with outer halt on success', '... on failure' (and slowest first above)."""
    fn = exit_ if case == "on failure" else sleep
    wrap = ex if case == "on failure" else ok
    async with Runtime() as rt:
        s = rt.tasks.async_stream(range(1, 9), fn, max_concurrency=mc)
        assert await _collect(s, take=4) == [wrap(n) for n in range(1, 5)]
        await asyncio.sleep(0)
        assert (await rt.tasks.count_children(rt.tasks.pid, runtime=rt))["active"] == 0


@virtual_time
@CONCURRENCY
async def test_task_test_async_stream_with_max_concurrency_terminates_inner_effect(mc: int) -> None:
    """The consumer's own clean-up runs after the stream ends (Stream.transform's after)."""
    done: list[bool] = []

    async def transform(stream: Any) -> Any:
        try:
            async for x in stream:
                yield x
        finally:
            done.append(True)

    async with Runtime() as rt:
        s = transform(rt.tasks.async_stream(range(1, 5), sleep, max_concurrency=mc))
        assert await _collect(s) == [ok(1), ok(2), ok(3), ok(4)]
        assert done == [True]


@virtual_time
@CONCURRENCY
async def test_task_test_async_stream_with_max_concurrency_terminates_outer_effect(mc: int) -> None:
    """The source's clean-up runs once the stream has consumed it."""
    done: list[bool] = []

    async def source() -> Any:
        try:
            for n in range(1, 5):
                yield n
        finally:
            done.append(True)

    async with Runtime() as rt:
        s = rt.tasks.async_stream(source(), sleep, max_concurrency=mc)
        assert await _collect(s) == [ok(1), ok(2), ok(3), ok(4)]
        assert done == [True]
        # and when the consumer halts first (outer halt), the source is closed too
        done.clear()
        s = rt.tasks.async_stream(source(), sleep, max_concurrency=1)
        assert await _collect(s, take=1) == [ok(1)]
        assert done == [True]
