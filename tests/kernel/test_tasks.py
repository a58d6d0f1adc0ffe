from __future__ import annotations

import asyncio

import pytest

from netsuke import CallTimeoutError, Runtime, TaskFailedError, virtual_time

from .helpers import Echo, settle


async def test_task_returns_its_value() -> None:
    async with Runtime() as rt:
        h = await rt.tasks.start(lambda: asyncio.sleep(0, "done"))
        assert await h.join(timeout=5) == "done"
        out = await h.outcome()
        assert out.ok and out.value == "done"


async def test_crashed_task_reaches_awaiter_as_error_value() -> None:
    async def boom() -> None:
        raise ValueError("task failed")

    async with Runtime() as rt:
        h = await rt.tasks.start(boom)
        out = await h.outcome(timeout=5)
        assert not out.ok and isinstance(out.reason, ValueError)
        with pytest.raises(TaskFailedError) as ei:
            await h.join()
        assert isinstance(ei.value.__cause__, ValueError)


async def test_cancel_propagates_into_the_coroutine() -> None:
    seen: list[str] = []

    async def inner() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            seen.append("inner cancelled")
            raise

    async def outer() -> None:
        await inner()

    async with Runtime() as rt:
        h = await rt.tasks.start(outer)
        await settle()
        assert h.cancel()
        out = await h.outcome(timeout=5)
        assert out.reason == "killed"
        await settle()
        assert seen == ["inner cancelled"]
        assert not h.cancel()


@virtual_time
async def test_task_timeout_kills_it_and_join_timeout_leaves_it_running() -> None:
    async with Runtime() as rt:
        h = await rt.tasks.start(lambda: asyncio.sleep(100), timeout=10)
        with pytest.raises(CallTimeoutError):
            await h.join(timeout=1)
        assert not h.done()
        with pytest.raises(TaskFailedError) as ei:
            await h.join()
        assert ei.value.reason == "timeout"
        assert asyncio.get_running_loop().time() == pytest.approx(10, abs=0.01)


async def test_linked_task_crash_takes_the_linked_process_down() -> None:
    async def boom() -> None:
        await asyncio.sleep(0)
        raise RuntimeError("linked crash")

    async with Runtime() as rt:
        owner = await rt.start(Echo, None)
        h = await rt.tasks.start(boom, link=owner)
        await h.outcome(timeout=5)
        assert not rt.alive(owner)  # type: ignore[arg-type]
        # and the other way round: the owner's death kills a linked task
        owner2 = await rt.start(Echo, None)
        h2 = await rt.tasks.start(lambda: asyncio.sleep(3600), link=owner2)
        rt.exit(owner2, "gone")  # type: ignore[arg-type]
        assert (await h2.outcome(timeout=5)).reason == "gone"


async def test_task_rejects_non_callables() -> None:
    async with Runtime() as rt:
        with pytest.raises(TypeError):
            await rt.tasks.start(42)  # type: ignore[arg-type]


@virtual_time
async def test_on_exit_hears_every_way_a_task_ends() -> None:
    seen: dict[str, object] = {}

    async def boom() -> None:
        raise ValueError("no")

    async with Runtime() as rt:
        ok = await rt.tasks.start(lambda: asyncio.sleep(0, "v"))
        ok.on_exit(lambda r: seen.__setitem__("ok", r))
        crash = await rt.tasks.start(boom)
        crash.on_exit(lambda r: seen.__setitem__("crash", r))
        slow = await rt.tasks.start(lambda: asyncio.sleep(60), timeout=1.0)
        slow.on_exit(lambda r: seen.__setitem__("timeout", r))
        killed = await rt.tasks.start(lambda: asyncio.sleep(60))
        killed.on_exit(lambda r: seen.__setitem__("killed", r))
        killed.cancel()
        await asyncio.sleep(2.0)
        assert seen["ok"] == "normal"
        assert isinstance(seen["crash"], ValueError)
        assert seen["timeout"] == "timeout"
        assert seen["killed"] == "killed"
        ok.on_exit(lambda r: seen.__setitem__("late", r))  # already exited: called soon after
        await asyncio.sleep(0)
        assert seen["late"] == "normal"
