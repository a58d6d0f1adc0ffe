from __future__ import annotations

import asyncio
from typing import Any

import pytest

from netsuke import (
    AlreadyStartedError,
    ChildInfo,
    ChildNotFoundError,
    ChildSpec,
    Process,
    Runtime,
    StartError,
    Supervisor,
    SupervisorSpec,
    virtual_time,
)

from .helpers import Named, settle


def specs(events: list[Any], *ids: str, **kw: Any) -> list[ChildSpec]:
    return [ChildSpec(Named, (i, events), id=i, name=f"child-{i}", **kw) for i in ids]


async def crash(rt: Runtime, ident: str) -> None:
    rt.cast(f"child-{ident}", "crash")
    await settle(20)


async def test_children_start_in_order_and_stop_in_reverse_order() -> None:
    events: list[Any] = []
    async with Runtime() as rt:
        sup = await rt.start(Supervisor, SupervisorSpec(children=specs(events, "a", "b", "c")))
        assert events == [("start", "a"), ("start", "b"), ("start", "c")]
        await rt.stop(sup, "shutdown")  # type: ignore[arg-type]
    assert events[3:] == [("stop", "c"), ("stop", "b"), ("stop", "a")]


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ("one_for_one", [("start", "b")]),
        (
            "one_for_all",
            [("stop", "c"), ("stop", "a"), ("start", "a"), ("start", "b"), ("start", "c")],
        ),
        ("rest_for_one", [("stop", "c"), ("start", "b"), ("start", "c")]),
    ],
)
async def test_strategy_restarts_exactly_the_right_siblings_in_order(
    strategy: str, expected: list[Any]
) -> None:
    events: list[Any] = []
    async with Runtime() as rt:
        await rt.start(
            Supervisor,
            SupervisorSpec(children=specs(events, "a", "b", "c"), strategy=strategy),  # type: ignore[arg-type]
        )
        before = {i: rt.whereis(f"child-{i}") for i in "abc"}
        events.clear()
        await crash(rt, "b")
        # the crashed child does not run terminate in a crash of a cast? it does: it traps.
        assert [e for e in events if e != ("stop", "b")] == expected
        after = {i: rt.whereis(f"child-{i}") for i in "abc"}
        restarted = {i for i in "abc" if before[i] != after[i]}
        assert restarted == {e[1] for e in expected if e[0] == "start"}
        assert all(after.values())


@virtual_time
async def test_crash_loop_trips_restart_intensity_exactly_at_the_limit() -> None:
    events: list[Any] = []
    async with Runtime() as rt:
        sup = await rt.start(
            Supervisor,
            SupervisorSpec(children=specs(events, "a"), max_restarts=3, max_seconds=5),
        )
        assert sup is not None
        for _ in range(3):
            await crash(rt, "a")
            await asyncio.sleep(1)
            assert rt.alive(sup), "3 restarts in 5 s are within the limit"
        await crash(rt, "a")
        assert await rt.wait_exit(sup, timeout=1) in ("shutdown", "noproc")
        assert not rt.alive(sup)
        assert rt.whereis("child-a") is None


@virtual_time
async def test_restarts_spaced_beyond_the_window_never_trip_intensity() -> None:
    events: list[Any] = []
    async with Runtime() as rt:
        sup = await rt.start(
            Supervisor,
            SupervisorSpec(children=specs(events, "a"), max_restarts=1, max_seconds=5),
        )
        assert sup is not None
        for _ in range(10):
            await crash(rt, "a")
            await asyncio.sleep(5.01)
        assert rt.alive(sup)
        assert rt.stats.restarts >= 10


async def test_transient_and_temporary_children() -> None:
    events: list[Any] = []
    async with Runtime() as rt:
        children = [
            ChildSpec(Named, ("t", events), id="t", name="child-t", restart="transient"),
            ChildSpec(Named, ("x", events), id="x", name="child-x", restart="temporary"),
            ChildSpec(Named, ("p", events), id="p", name="child-p"),
        ]
        sup = await rt.start(Supervisor, SupervisorSpec(children=children))
        assert sup is not None
        await rt.stop("child-t", "normal")
        await rt.stop("child-p", "normal")
        await settle(20)
        assert rt.whereis("child-t") is None, "transient + normal exit: not restarted"
        assert rt.whereis("child-p") is not None, "permanent: always restarted"
        await crash(rt, "t")  # not running; restart it by hand first
        assert await Supervisor.restart_child(sup, "t", runtime=rt) is not None
        await crash(rt, "t")
        assert rt.whereis("child-t") is not None, "transient + crash: restarted"
        await crash(rt, "x")
        assert rt.whereis("child-x") is None
        ids = [c.id for c in await Supervisor.which_children(sup, runtime=rt)]
        assert ids == ["t", "p"], "temporary children are removed when they exit"


async def test_shutdown_timeout_then_kill_and_brutal_kill() -> None:
    class Stubborn(Process):
        def init(self, arg: Any) -> None:
            self.trap_exit = True
            self.events = arg

        async def terminate(self, reason: Any) -> None:
            self.events.append("terminating")
            await asyncio.sleep(3600)
            self.events.append("never")

    events: list[Any] = []
    async with Runtime() as rt:
        sup = await rt.start(
            Supervisor,
            SupervisorSpec(
                children=[
                    ChildSpec(Stubborn, events, id="slow", shutdown=0.05),
                    ChildSpec(Stubborn, events, id="brutal", shutdown="brutal_kill"),
                ]
            ),
        )
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await rt.stop(sup, "shutdown")  # type: ignore[arg-type]
        assert loop.time() - t0 < 2
        assert events == ["terminating"], "brutal_kill skips terminate; slow one is killed"


@virtual_time
async def test_nested_supervisor_that_gives_up_is_restarted_by_its_parent() -> None:
    events: list[Any] = []
    async with Runtime() as rt:
        inner = ChildSpec(
            Supervisor,
            SupervisorSpec(children=specs(events, "leaf"), max_restarts=0, max_seconds=5),
            id="inner",
        )
        outer = await rt.start(Supervisor, SupervisorSpec(children=[inner], max_restarts=3))
        assert outer is not None
        [info] = await Supervisor.which_children(outer, runtime=rt)
        assert info.type == "supervisor"
        first_inner = info.pid
        await crash(rt, "leaf")  # inner allows 0 restarts: it exits with shutdown
        await settle(50)
        [info2] = await Supervisor.which_children(outer, runtime=rt)
        assert info2.pid is not None and info2.pid != first_inner
        assert rt.whereis("child-leaf") is not None


async def test_supervisor_api_start_terminate_delete_count() -> None:
    events: list[Any] = []
    async with Runtime() as rt:
        sup = await rt.start(Supervisor, SupervisorSpec(children=specs(events, "a")))
        assert sup is not None
        pid = await Supervisor.start_child(sup, specs(events, "b")[0], runtime=rt)
        assert pid == rt.whereis("child-b")
        with pytest.raises(AlreadyStartedError) as started:
            await Supervisor.start_child(sup, specs(events, "b")[0], runtime=rt)
        assert started.value.pid == pid, "a running id answers already_started with its pid"
        counts = await Supervisor.count_children(sup, runtime=rt)
        assert counts == {"specs": 2, "active": 2, "workers": 2, "supervisors": 0}
        await Supervisor.terminate_child(sup, "b", runtime=rt)
        which = await Supervisor.which_children(sup, runtime=rt)
        assert which[1] == ChildInfo("b", None, "worker", "permanent")
        await Supervisor.delete_child(sup, "b", runtime=rt)
        with pytest.raises(ChildNotFoundError):
            await Supervisor.terminate_child(sup, "b", runtime=rt)


async def test_supervisor_fails_to_start_when_a_child_fails_and_stops_the_started_ones() -> None:
    class Bad(Process):
        def init(self, arg: Any) -> None:
            raise ValueError("bad child")

    events: list[Any] = []
    async with Runtime() as rt:
        children = [*specs(events, "a"), ChildSpec(Bad, id="bad")]
        with pytest.raises(StartError):
            await rt.start(Supervisor, SupervisorSpec(children=children), name="sup")
        assert events == [("start", "a"), ("stop", "a")]
        assert rt.whereis("sup") is None


def test_bad_specs_are_refused() -> None:
    with pytest.raises(TypeError):
        ChildSpec(int)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="restart"):
        ChildSpec(Named, restart="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shutdown"):
        ChildSpec(Named, shutdown=-1)
    with pytest.raises(ValueError, match="strategy"):
        SupervisorSpec(strategy="all_for_none")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="duplicate"):
        SupervisorSpec(children=[ChildSpec(Named, id="x"), ChildSpec(Named, id="x")])


async def test_root_supervisor_children_via_runtime_start_child() -> None:
    events: list[Any] = []
    async with Runtime() as rt:
        for s in specs(events, "r1", "r2"):
            await rt.start_child(s)
        assert rt.whereis("child-r1") and rt.whereis("child-r2")
    assert events[-2:] == [("stop", "r2"), ("stop", "r1")]
