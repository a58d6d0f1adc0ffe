"""Supervisors under failure: group restarts count once, failed restarts are retried through the
mailbox, bad requests are refused without killing the supervisor, start order, IGNORE, owners."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from netsuke import (
    RESTARTING,
    AlreadyStartedError,
    ChildInfo,
    ChildSpec,
    ChildStateError,
    DynamicSupervisor,
    DynamicSupervisorSpec,
    InvalidChildSpecError,
    MaxChildrenError,
    Runtime,
    StartError,
    Supervisor,
    SupervisorSpec,
    UsageError,
    virtual_time,
)

from .conformance.workers import Ctl, Worker, terminate, watch
from .helpers import Echo, settle


def worker(cid: str, ctl: Ctl, **kw: Any) -> ChildSpec:
    return ChildSpec(Worker, ctl, id=cid, **kw)


@pytest.mark.parametrize("strategy", ["one_for_all", "rest_for_one"])
@virtual_time
async def test_a_group_restart_counts_once_against_the_intensity(strategy: str) -> None:
    ctls = [Ctl(tag=i) for i in range(3)]
    async with Runtime() as rt:
        sup = await rt.start(
            Supervisor,
            SupervisorSpec(
                children=[worker(f"c{i}", c) for i, c in enumerate(ctls)],
                strategy=strategy,  # type: ignore[arg-type]
                max_restarts=2,
                max_seconds=5,
            ),
        )
        first = (await Supervisor.which_children(sup, runtime=rt))[0].pid  # type: ignore[arg-type]
        await terminate(rt, first, "abnormal")
        assert rt.alive(sup), "one crash is one restart, not one per child of the group"
        assert [c.starts for c in ctls] == [2, 2, 2]
        assert rt.stats.restarts == 1
        rows = await Supervisor.which_children(sup, runtime=rt)  # type: ignore[arg-type]
        await terminate(rt, rows[0].pid, "abnormal")
        assert rt.alive(sup), "two restarts are within max_restarts=2"
        rows = await Supervisor.which_children(sup, runtime=rt)  # type: ignore[arg-type]
        gone = watch(rt, sup)
        await terminate(rt, rows[0].pid, "abnormal")
        assert await gone == "shutdown", "the third one exceeds it"


@virtual_time
async def test_a_failing_restart_is_retried_through_the_mailbox_and_the_supervisor_answers() -> (
    None
):
    ctl = Ctl(tag="a")
    async with Runtime() as rt:
        sup = await rt.start(
            Supervisor,
            SupervisorSpec(children=[worker("a", ctl)], max_restarts=1_000_000, max_seconds=5),
        )
        assert sup is not None
        pid = (await Supervisor.which_children(sup, runtime=rt))[0].pid
        ctl.fail = True
        loop_turns = 0

        async def ticker() -> None:
            nonlocal loop_turns
            while True:
                loop_turns += 1
                await asyncio.sleep(0)

        tick = asyncio.ensure_future(ticker())
        await terminate(rt, pid, "abnormal")
        # the supervisor keeps answering while the restart is retried
        assert await Supervisor.which_children(sup, runtime=rt) == [
            ChildInfo("a", RESTARTING, "worker", "permanent")
        ]
        assert await Supervisor.count_children(sup, runtime=rt) == {
            "specs": 1,
            "active": 0,
            "workers": 1,
            "supervisors": 0,
        }
        assert ctl.starts > 2, "retries happen"
        assert loop_turns > 2, "and the rest of the node runs between them"
        with pytest.raises(ChildStateError) as e:
            await Supervisor.restart_child(sup, "a", runtime=rt)
        assert e.value.reason == "restarting"
        with pytest.raises(ChildStateError) as e:
            await Supervisor.delete_child(sup, "a", runtime=rt)
        assert e.value.reason == "restarting"
        with pytest.raises(ChildStateError) as e:
            await Supervisor.start_child(sup, worker("a", ctl), runtime=rt)
        assert e.value.reason == "already_present"
        await Supervisor.terminate_child(sup, "a", runtime=rt)
        tries = ctl.starts
        await settle(50)
        assert ctl.starts == tries, "terminate_child ends the retries"
        assert (await Supervisor.which_child(sup, "a", runtime=rt)).pid is None
        ctl.fail = False
        assert await Supervisor.restart_child(sup, "a", runtime=rt) is not None
        tick.cancel()


@virtual_time
async def test_a_supervisor_retrying_a_restart_can_be_stopped() -> None:
    ctl = Ctl(tag="a")
    async with Runtime() as rt:
        sup = await rt.start(
            Supervisor,
            SupervisorSpec(children=[worker("a", ctl)], max_restarts=1_000_000, max_seconds=5),
        )
        assert sup is not None
        pid = (await Supervisor.which_children(sup, runtime=rt))[0].pid
        ctl.fail = True
        await terminate(rt, pid, "abnormal")
        await rt.stop(sup, "shutdown", timeout=5)
        assert not rt.alive(sup)


@virtual_time
async def test_retries_count_against_the_intensity_so_the_supervisor_gives_up() -> None:
    ctl = Ctl(tag="a", fail_restarts=True)
    async with Runtime() as rt:
        sup = await rt.start(
            Supervisor, SupervisorSpec(children=[worker("a", ctl)], max_restarts=10)
        )
        assert sup is not None
        pid = (await Supervisor.which_children(sup, runtime=rt))[0].pid
        gone = watch(rt, sup)
        await terminate(rt, pid, "abnormal")
        assert await gone == "shutdown"
        assert ctl.starts == 1 + 10, "ten restarts allowed, the eleventh is refused"


@virtual_time
async def test_one_for_all_sibling_failing_to_start_stops_the_restarted_and_retries_the_group() -> (
    None
):
    c1, c2, c3 = Ctl(tag=1), Ctl(tag=2), Ctl(tag=3)
    async with Runtime() as rt:
        sup = await rt.start(
            Supervisor,
            SupervisorSpec(
                children=[worker("c1", c1), worker("c2", c2), worker("c3", c3)],
                strategy="one_for_all",
                max_restarts=10,
            ),
        )
        assert sup is not None
        first = (await Supervisor.which_children(sup, runtime=rt))[0].pid
        c2.fail_next = 1
        c1.events.clear()
        await terminate(rt, first, "abnormal")
        rows = await Supervisor.which_children(sup, runtime=rt)
        assert all(isinstance(r.pid, type(first)) for r in rows)
        # c1 crashed, was restarted, was stopped when c2 failed, and started with the group
        assert c1.events == [("stop", 1), ("start", 1), ("stop", 1), ("start", 1)]
        assert c2.starts == 3, "started, failed to restart, restarted with the group"
        assert c3.starts == 2, "c3 was not started while c2 failed; once with the group"
        assert rt.alive(sup)


@virtual_time
async def test_bad_requests_leave_a_static_supervisor_alive() -> None:
    ctl = Ctl(tag="a")
    async with Runtime() as rt:
        sup = await rt.start(Supervisor, SupervisorSpec(children=[worker("a", ctl)]))
        assert sup is not None
        await rt.start(Echo, None, name="taken")
        with pytest.raises(InvalidChildSpecError) as bad:
            await Supervisor.start_child(sup, {"id": "x"}, runtime=rt)  # type: ignore[arg-type]
        assert bad.value.reason == "invalid_child_spec"
        with pytest.raises(AlreadyStartedError):
            await Supervisor.start_child(sup, ChildSpec(Echo, id="e", name="taken"), runtime=rt)
        with pytest.raises(StartError):
            await Supervisor.start_child(sup, worker("b", Ctl(fail=True)), runtime=rt)
        await Supervisor.terminate_child(sup, "a", runtime=rt)
        ctl.fail = True
        with pytest.raises(StartError):
            await Supervisor.restart_child(sup, "a", runtime=rt)
        with pytest.raises(UsageError):
            await rt.call(sup, ("no_such_request",))
        assert rt.alive(sup)
        assert [r.id for r in await Supervisor.which_children(sup, runtime=rt)] == ["a"]


@virtual_time
async def test_bad_requests_leave_a_dynamic_supervisor_alive_local_and_remote() -> None:
    async with Runtime() as rt:
        sup = await rt.start(DynamicSupervisor, DynamicSupervisorSpec(max_children=2))
        assert sup is not None
        await rt.start(Echo, None, name="taken")
        ok = await DynamicSupervisor.start_child(sup, ChildSpec(Echo))
        for via_call in (False, True):

            async def start(spec: Any, via_call: bool = via_call, **kw: Any) -> Any:
                if via_call:
                    return await rt.call(sup, ("start_child", spec, kw.get("arg"), kw.get("name")))
                return await DynamicSupervisor.start_child(sup, spec, **kw)

            with pytest.raises(InvalidChildSpecError):
                await start("not a spec")
            with pytest.raises(AlreadyStartedError):
                await start(ChildSpec(Echo), name="taken")
            with pytest.raises(StartError):
                await start(ChildSpec(Worker), arg=Ctl(fail=True))
            with pytest.raises(InvalidChildSpecError) as e:
                await start(ChildSpec(Worker, restart="transient", significant=True), arg=Ctl())
            assert e.value.reason == "invalid_significant"
        assert rt.alive(sup)
        assert await DynamicSupervisor.count_children(sup) == {
            "specs": 1,
            "active": 1,
            "workers": 1,
            "supervisors": 0,
        }
        assert rt.whereis(ok) is not None  # type: ignore[arg-type]


@virtual_time
async def test_dynamic_restart_failures_are_retried_and_counted_against_max_children() -> None:
    ctl = Ctl(tag="d")
    async with Runtime() as rt:
        sup = await rt.start(
            DynamicSupervisor, DynamicSupervisorSpec(max_children=1, max_restarts=100_000)
        )
        assert sup is not None
        pid = await DynamicSupervisor.start_child(sup, ChildSpec(Worker), arg=ctl)
        ctl.fail = True
        await terminate(rt, pid, "abnormal")
        assert await rt.call(sup, ("which_children",)) == [
            ChildInfo(None, RESTARTING, "worker", "permanent")
        ]
        assert await DynamicSupervisor.count_children(sup) == {
            "specs": 1,
            "active": 0,
            "workers": 1,
            "supervisors": 0,
        }
        with pytest.raises(MaxChildrenError):
            await DynamicSupervisor.start_child(sup, ChildSpec(Echo))
        await DynamicSupervisor.terminate_child(sup, pid)  # type: ignore[arg-type]
        assert await DynamicSupervisor.which_children(sup) == []
        assert await DynamicSupervisor.start_child(sup, ChildSpec(Echo)) is not None


@virtual_time
async def test_a_large_max_restarts_does_not_block_the_node() -> None:
    """The issue's reproduction: 100k allowed restarts of a child that never starts again used
    to be burnt in one turn of the event loop."""
    ctl = Ctl(tag="d")
    async with Runtime() as rt:
        sup = await rt.start(DynamicSupervisor, DynamicSupervisorSpec(max_restarts=100_000))
        echo = await rt.start(Echo, None)
        pid = await DynamicSupervisor.start_child(sup, ChildSpec(Worker), arg=ctl)  # type: ignore[arg-type]
        ctl.fail = True
        rt.send(pid, "die")  # type: ignore[arg-type]
        for _ in range(20):
            assert await rt.call(echo, "ping") == "ping"  # type: ignore[arg-type]
        assert rt.alive(sup)  # type: ignore[arg-type]
        assert 1 < ctl.starts < 1000, "a few retries so far, interleaved with the calls"
        ctl.fail = False
        await settle(20)
        [row] = await DynamicSupervisor.which_children(sup)  # type: ignore[arg-type]
        assert row.pid not in (None, RESTARTING, pid)


@virtual_time
async def test_dynamic_which_children_lists_start_order() -> None:
    async with Runtime() as rt:
        sup = await rt.start(DynamicSupervisor, DynamicSupervisorSpec(max_restarts=100))
        assert sup is not None
        started = [await DynamicSupervisor.start_child(sup, ChildSpec(Echo)) for _ in range(200)]
        assert [r.pid for r in await DynamicSupervisor.which_children(sup)] == started
        assert [r.pid for r in await rt.call(sup, ("which_children",))] == started


@virtual_time
async def test_a_temporary_child_whose_start_returns_ignore_is_dropped() -> None:
    async with Runtime() as rt:
        sup = await rt.start(
            Supervisor,
            SupervisorSpec(
                children=[
                    worker("t", Ctl(ignore=True), restart="temporary"),
                    worker("p", Ctl(ignore=True)),
                    worker("x", Ctl()),
                ]
            ),
        )
        assert sup is not None
        assert [(r.id, r.pid is None) for r in await Supervisor.which_children(sup)] == [
            ("p", True),
            ("x", False),
        ]


@pytest.mark.parametrize("how", ["exit_shutdown", "crash"])
@virtual_time
async def test_a_supervisor_started_with_link_treats_its_owner_as_parent(how: str) -> None:
    ctls = [Ctl(tag=i) for i in range(3)]
    events = ctls[0].events
    for c in ctls[1:]:
        c.events = events
    async with Runtime() as rt:
        owner = await rt.start(Echo, None)
        assert owner is not None
        await rt.call(owner, ("trap", True))  # or the supervisor's exit would take it down
        sup = await rt.start(
            Supervisor,
            SupervisorSpec(children=[worker(f"c{i}", c) for i, c in enumerate(ctls)]),
            link=owner,
        )
        assert sup is not None
        if how == "exit_shutdown":
            rt.exit(sup, "shutdown", sender=owner)
            assert await rt.wait_exit(sup, timeout=10) == "shutdown"
            assert rt.alive(owner)
        else:
            rt.cast(owner, "crash")
            reason = await rt.wait_exit(sup, timeout=10)
            assert isinstance(reason, RuntimeError)
        assert events[3:] == [("stop", 2), ("stop", 1), ("stop", 0)], "in reverse order"
        assert rt.count_processes() == 2 + (how == "exit_shutdown")
        if how == "exit_shutdown":
            infos = await rt.call(owner, "infos")
            assert [(i.pid, i.reason) for i in infos] == [(sup, "shutdown")]


@virtual_time
async def test_start_info_reaches_start_child_and_restart_child_but_not_rt_start() -> None:
    async with Runtime() as rt:
        assert isinstance(await rt.start(Worker, Ctl(info="x")), type(rt.root))
        sup = await rt.start(Supervisor, SupervisorSpec())
        assert sup is not None
        spec = worker("a", Ctl(info="x"))
        r = await Supervisor.start_child(sup, spec, with_info=True)
        assert r.info == "x" and r.pid == (await Supervisor.which_child(sup, "a")).pid
        assert await Supervisor.get_childspec(sup, r.pid) is spec
        await Supervisor.terminate_child(sup, "a")
        r1 = await Supervisor.restart_child(sup, "a", with_info=True)
        assert r1.info == "x" and r1.pid not in (None, r.pid)
        r2 = await Supervisor.start_child(sup, worker("b", Ctl()), with_info=True)
        assert r2.info is None and r2.pid is not None
        dyn = await rt.start(DynamicSupervisor, None)
        assert dyn is not None
        r3 = await DynamicSupervisor.start_child(
            dyn, ChildSpec(Worker), arg=Ctl(info="y"), with_info=True
        )
        assert r3.info == "y"
        assert (
            await rt.call(dyn, ("start_child", ChildSpec(Worker), Ctl(info="z"), None))
        ).info == "z"
