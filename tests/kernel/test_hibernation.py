from __future__ import annotations

import asyncio
from typing import Any

import pytest

from netsuke import TIMEOUT, ArgumentError, From, Process, Runtime, virtual_time


class Counter(Process):
    __slots__ = ("n",)

    def init(self, arg: Any) -> None:
        self.n = arg

    def handle_call(self, request: Any, from_: From) -> Any:
        self.n += request
        return self.n


class Eager(Counter):
    __slots__ = ()
    hibernate_after = 0


class Never(Counter):
    __slots__ = ()
    hibernate_after = None


@virtual_time
async def test_idle_process_hibernates_and_wakes_transparently() -> None:
    async with Runtime(hibernate_sweep=0.5) as rt:
        pid = await rt.start(Counter, 0)
        assert pid is not None
        proc = rt.process(pid)
        assert proc is not None and proc.hibernating, "a new process holds no task"
        assert await rt.call(pid, 1) == 1
        assert not proc.hibernating
        await asyncio.sleep(2.0)
        assert proc.hibernating, "idle past hibernate_after: the task is released"
        assert proc._mailbox is None
        assert await rt.call(pid, 2) == 3, "state survives hibernation"


@virtual_time
async def test_hibernate_after_zero_and_none() -> None:
    async with Runtime(hibernate_sweep=0.5) as rt:
        eager = await rt.start(Eager, 0)
        never = await rt.start(Never, 0)
        assert eager and never
        await rt.call(eager, 1)
        await rt.call(never, 1)
        await asyncio.sleep(0)
        assert rt.process(eager).hibernating  # type: ignore[union-attr]
        await asyncio.sleep(60)
        assert not rt.process(never).hibernating  # type: ignore[union-attr]
        assert await rt.hibernate_idle() >= 1
        assert rt.process(never).hibernating  # type: ignore[union-attr]


async def test_many_idle_processes_hold_no_tasks() -> None:
    async with Runtime() as rt:
        pids = [await rt.start(Counter, 0) for _ in range(2000)]
        for p in pids:
            await rt.call(p, 1)  # type: ignore[arg-type]
        assert rt.active_count() > 0
        await rt.hibernate_idle()
        assert rt.active_count() == 0
        assert len(asyncio.all_tasks()) == 1
        assert [await rt.call(p, 1) for p in pids[:3]] == [2, 2, 2]  # type: ignore[arg-type]


class _Timed(Process):
    """Asks for callback timeouts and records the ``TIMEOUT`` messages it gets."""

    hibernate_after = 0.1

    def init(self, arg: Any) -> None:
        self.seen: list[Any] = []
        if arg is not None:
            self.set_timeout(arg)  # {ok, State, Timeout}

    def handle_call(self, request: Any, from_: From) -> Any:
        match request:
            case ("timeout", t):
                self.set_timeout(t)
            case ("timeout_with_queued", t):
                self.set_timeout(t)
                self.runtime.cast(self.pid, "queued")
            case ("timeout_then_cancel", t):
                self.set_timeout(t)
                self.set_timeout(None)
            case "seen":
                return list(self.seen)
        return "ok"

    def handle_cast(self, request: Any) -> None:
        self.seen.append(("cast", request))

    def handle_info(self, message: Any) -> None:
        self.seen.append("TIMEOUT" if message is TIMEOUT else message)


@virtual_time
async def test_callback_timeouts_fire_once_are_cancelled_by_messages_and_block_hibernation() -> (
    None
):
    async with Runtime() as rt:
        loop = asyncio.get_running_loop()
        # from init
        pid = await rt.start(_Timed, 2.0)
        p = rt.process(pid)  # type: ignore[arg-type]
        assert isinstance(p, _Timed)
        await asyncio.sleep(1.0)
        assert not p.hibernating  # hibernate_after=0.1, but a timeout is pending
        await asyncio.sleep(1.1)
        assert p.seen == ["TIMEOUT"]
        await asyncio.sleep(5)
        assert p.seen == ["TIMEOUT"]  # once
        assert p.hibernating  # and then it hibernates as usual
        # a message that arrives first cancels it
        assert await rt.call(pid, ("timeout", 1.0)) == "ok"
        await asyncio.sleep(0.5)
        rt.cast(pid, "first")
        await asyncio.sleep(3)
        assert p.seen == ["TIMEOUT", ("cast", "first")]
        # a message already waiting cancels it too (OTP: it is received instead)
        p.seen.clear()
        assert await rt.call(pid, ("timeout_with_queued", 0)) == "ok"
        await asyncio.sleep(1)
        assert p.seen == [("cast", "queued")]
        # timeout 0 with an empty mailbox fires at once; None cancels a request
        assert await rt.call(pid, ("timeout_then_cancel", 0.5)) == "ok"
        await asyncio.sleep(2)
        assert "TIMEOUT" not in p.seen
        t0 = loop.time()
        assert await rt.call(pid, ("timeout", 0)) == "ok"
        await asyncio.sleep(0.01)
        assert p.seen[-1] == "TIMEOUT"
        assert loop.time() - t0 < 0.02
        with pytest.raises(ArgumentError):
            p.set_timeout(-1)
        # a killed process's pending timeout does nothing
        assert await rt.call(pid, ("timeout", 1.0)) == "ok"
        rt.kill(pid)  # type: ignore[arg-type]
        await asyncio.sleep(2)
