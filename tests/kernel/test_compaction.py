"""The node's tables give memory back after a burst of processes (``_compaction``)."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from netsuke import ChildSpec, DynamicSupervisor, DynamicSupervisorSpec, From, Process, Runtime


class Echo(Process):
    __slots__ = ()

    def handle_call(self, request: Any, from_: From) -> Any:
        return request


async def test_tables_shrink_after_a_burst_and_everything_left_still_works() -> None:
    async with Runtime(hibernate_sweep=0.05) as rt:
        sup = await rt.start_child(
            ChildSpec(DynamicSupervisor, DynamicSupervisorSpec(max_restarts=50), id="burst",
                      name="burst", type="supervisor")
        )  # fmt: skip
        assert sup is not None
        spec = ChildSpec(Echo, restart="permanent", id="echo")
        pids = [
            await DynamicSupervisor.start_child("burst", spec, name=f"e{i}", runtime=rt)
            for i in range(5000)
        ]
        sp = rt.process(sup)
        assert sp is not None
        await asyncio.sleep(0.15)  # the sweeps see the peak
        peak_sizes = (sys.getsizeof(rt._procs), sys.getsizeof(rt._names), sys.getsizeof(sp._links))
        before = rt.stats.compactions
        for pid in pids[100:]:
            await DynamicSupervisor.terminate_child("burst", pid, runtime=rt)
        await asyncio.sleep(0.2)  # a few sweeps
        assert rt.stats.compactions - before >= 3, "process table, names, supervisor links"
        sizes = (sys.getsizeof(rt._procs), sys.getsizeof(rt._names), sys.getsizeof(sp._links))
        assert all(after * 8 < peak for after, peak in zip(sizes, peak_sizes, strict=True))
        assert rt.registry._unique is rt._names
        # what is left is intact: names resolve, calls answer, the supervisor restarts its children
        for i, pid in enumerate(pids[:100]):
            assert rt.whereis(f"e{i}") == pid
            assert await rt.call(pid, i) == i
        assert len(await DynamicSupervisor.which_children("burst", runtime=rt)) == 100
        rt.kill(pids[7])
        for _ in range(100):
            await asyncio.sleep(0.01)
            new = rt.whereis("e7")
            if new is not None and new != pids[7]:
                break
        assert new is not None and new != pids[7], "restarted through the rebuilt link set"
        assert await rt.call("e7", "back") == "back"
        # a second burst grows the tables again and they shrink again
        more = [await rt.start(Echo, name=f"m{i}") for i in range(3000)]
        await asyncio.sleep(0.15)
        mid = rt.stats.compactions
        for pid in more:
            assert pid is not None
            await rt.stop(pid)
        await asyncio.sleep(0.2)
        assert rt.stats.compactions > mid


async def test_small_tables_are_left_alone() -> None:
    async with Runtime(hibernate_sweep=0.05) as rt:
        pids = [await rt.start(Echo, name=f"s{i}") for i in range(500)]
        await asyncio.sleep(0.15)
        for pid in pids:
            assert pid is not None
            await rt.stop(pid)
        await asyncio.sleep(0.2)
        assert rt.stats.compactions == 0, "peaks under 1,024 entries are not worth a rebuild"
