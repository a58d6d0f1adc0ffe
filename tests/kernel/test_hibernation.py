from __future__ import annotations

import asyncio
from typing import Any

from netsuke import From, Process, Runtime, virtual_time


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
