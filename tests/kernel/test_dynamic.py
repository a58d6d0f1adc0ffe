from __future__ import annotations

from typing import Any

import pytest

from netsuke import (
    ChildNotFoundError,
    ChildSpec,
    DynamicSupervisor,
    DynamicSupervisorSpec,
    MaxChildrenError,
    Runtime,
    StartError,
)

from .helpers import Echo, Named, settle


async def test_start_which_count_and_terminate_children() -> None:
    events: list[Any] = []
    async with Runtime() as rt:
        sup = await rt.start(DynamicSupervisor, DynamicSupervisorSpec(), name="dyn")
        spec = ChildSpec(Named, id="session")
        pids = [
            await DynamicSupervisor.start_child("dyn", spec, arg=(f"s{i}", events), name=f"s{i}")
            for i in range(5)
        ]
        assert all(pids)
        assert await DynamicSupervisor.count_children(sup) == {  # type: ignore[arg-type]
            "specs": 5,
            "active": 5,
            "workers": 5,
            "supervisors": 0,
        }
        which = await DynamicSupervisor.which_children("dyn")
        assert {w.pid for w in which} == set(pids)
        await DynamicSupervisor.terminate_child("dyn", pids[0])  # type: ignore[arg-type]
        await settle()
        assert rt.whereis("s0") is None, "terminated children are not restarted"
        assert ("stop", "s0") in events
        with pytest.raises(ChildNotFoundError):
            await DynamicSupervisor.terminate_child("dyn", pids[0])  # type: ignore[arg-type]


async def test_crashed_child_restarts_with_its_name_and_argument() -> None:
    async with Runtime() as rt:
        await rt.start(DynamicSupervisor, None, name="dyn")
        spec = ChildSpec(Echo, id="echo")
        first = await DynamicSupervisor.start_child("dyn", spec, arg=None, name="e1")
        rt.cast("e1", "crash")
        await settle(20)
        second = rt.whereis("e1")
        assert second is not None and second != first
        assert await rt.call("e1", "ping") == "ping"


async def test_max_children_is_enforced() -> None:
    async with Runtime() as rt:
        await rt.start(DynamicSupervisor, DynamicSupervisorSpec(max_children=2), name="dyn")
        spec = ChildSpec(Echo, restart="temporary")
        await DynamicSupervisor.start_child("dyn", spec)
        await DynamicSupervisor.start_child("dyn", spec)
        with pytest.raises(MaxChildrenError) as ei:
            await DynamicSupervisor.start_child("dyn", spec)
        assert ei.value.max_children == 2


async def test_failed_child_start_is_reported_and_not_counted() -> None:
    async with Runtime() as rt:
        await rt.start(DynamicSupervisor, DynamicSupervisorSpec(max_children=1), name="dyn")
        with pytest.raises(StartError):
            await DynamicSupervisor.start_child("dyn", ChildSpec(Named), arg="not-a-pair")
        await settle()
        assert await DynamicSupervisor.start_child("dyn", ChildSpec(Echo)) is not None


async def test_dynamic_supervisor_shutdown_stops_all_children() -> None:
    events: list[Any] = []
    async with Runtime() as rt:
        sup = await rt.start(DynamicSupervisor, None)
        assert sup is not None
        for i in range(3):
            await DynamicSupervisor.start_child(sup, ChildSpec(Named), arg=(i, events))
        await rt.stop(sup, "shutdown")
        assert sorted(e for e in events if e[0] == "stop") == [
            ("stop", 0),
            ("stop", 1),
            ("stop", 2),
        ]
        assert rt.count_processes() == 2  # root and task supervisors


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="max_children"):
        DynamicSupervisorSpec(max_children=-1)
