"""Elixir's ``lib/elixir/test/elixir/dynamic_supervisor_test.exs``, ported: one test per upstream
test, named ``test_dynamic_supervisor_<test>``, on the virtual clock.

``current_module_worker([...])`` is ``Worker`` driven by a ``Ctl``; ``{:error, r}`` results are
the kernel's typed exceptions; ``Process.exit(pid, reason)`` from the test is an exit signal
from outside the supervisor (``Worker`` stops with it). Tests of Elixir's child-spec formats,
``use``-generated ``child_spec/1``, ``spawn_opt``, ``:proc_lib`` initial calls and code change
are listed as not ported in docs/kernel.md.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from netsuke import (
    RESTARTING,
    AlreadyStartedError,
    ChildInfo,
    ChildNotFoundError,
    ChildSpec,
    DynamicSupervisor,
    DynamicSupervisorSpec,
    InvalidChildSpecError,
    MaxChildrenError,
    Pid,
    Registry,
    Runtime,
    Shutdown,
    StartError,
    Supervisor,
    SupervisorSpec,
    Via,
    virtual_time,
)

from .workers import Ctl, Exits, ExitsInTerminate, Worker, pids, terminate, watch

pytestmark = pytest.mark.timeout(60)

SPEC = ChildSpec(Worker)


async def dyn(rt: Runtime, **kw: Any) -> Pid:
    pid = await rt.start(DynamicSupervisor, DynamicSupervisorSpec(**kw))
    assert pid is not None
    return pid


async def counts(sup: Pid) -> tuple[int, int]:
    c = await DynamicSupervisor.count_children(sup)
    return c["workers"], c["active"]


async def assert_kill(rt: Runtime, pid: Any, reason: Any) -> None:
    await terminate(rt, pid, reason)


@virtual_time
async def test_dynamic_supervisor_can_be_supervised_directly() -> None:
    async with Runtime() as rt:
        spec = ChildSpec(DynamicSupervisor, None, id="dyn", name="dyn_sup_spec_test")
        await rt.start(Supervisor, SupervisorSpec(children=[spec]))
        assert await DynamicSupervisor.which_children("dyn_sup_spec_test") == []


@virtual_time
async def test_dynamic_supervisor_multiple_supervisors_can_be_supervised_and_identified_with_simple_child_spec() -> (
    None
):
    async with Runtime() as rt:
        reg = Registry(rt, keys="unique")
        via = Via(reg, "via_name")
        children = [
            ChildSpec(DynamicSupervisor, None, id="simple", name="simple_name"),
            ChildSpec(DynamicSupervisor, None, id="via", name=via),
        ]
        supsup = await rt.start(Supervisor, SupervisorSpec(children=children))
        assert supsup is not None
        no_name = await Supervisor.start_child(supsup, ChildSpec(DynamicSupervisor))
        assert await DynamicSupervisor.which_children("simple_name") == []
        assert await DynamicSupervisor.which_children(via) == []
        assert await DynamicSupervisor.which_children(no_name) == []  # type: ignore[arg-type]
        with pytest.raises(AlreadyStartedError) as e:
            await Supervisor.start_child(supsup, ChildSpec(DynamicSupervisor))
        assert e.value.pid == no_name


def test_dynamic_supervisor_init_set_default_options() -> None:
    s = DynamicSupervisorSpec()
    assert (s.max_children, s.max_restarts, s.max_seconds, s.extra_arguments) == (
        None,
        3,
        5.0,
        (),
    )


@virtual_time
async def test_dynamic_supervisor_start_link_with_non_ok_init() -> None:
    for bad in ({"max_restarts": -1}, {"max_seconds": 0}, {"max_children": -1}):
        with pytest.raises(ValueError):
            DynamicSupervisorSpec(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="extra_arguments"):
        DynamicSupervisorSpec(extra_arguments=-1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        DynamicSupervisorSpec(auto_shutdown="any_significant")  # type: ignore[call-arg]
    async with Runtime() as rt:
        with pytest.raises(StartError):
            await rt.start(DynamicSupervisor, "unknown")


@virtual_time
async def test_dynamic_supervisor_start_link_with_registered_process() -> None:
    async with Runtime() as rt, rt.scope(trap_exit=True) as me:
        pid = await rt.start(DynamicSupervisor, None, name="DynamicSupervisorTest", link=me.pid)
        assert pid in rt.links(me.pid)
        assert rt.whereis("DynamicSupervisorTest") == pid
        await rt.stop("DynamicSupervisorTest")
        assert not rt.alive(pid)  # type: ignore[arg-type]


@virtual_time
async def test_dynamic_supervisor_start_child_supports_new_child_spec() -> None:
    async with Runtime() as rt:
        sup = await dyn(rt)
        assert isinstance(await DynamicSupervisor.start_child(sup, SPEC, arg=Ctl()), Pid)


@virtual_time
async def test_dynamic_supervisor_start_child_supports_extra_arguments() -> None:
    got: list[Any] = []

    class Task(Worker):
        async def init(self, arg: Any) -> Any:
            fun, ctl = arg
            fun()
            return await super().init(ctl)

    async with Runtime() as rt:
        sup = await dyn(rt, extra_arguments=(lambda: got.append("from_child"),))
        spec = ChildSpec(Task, restart="temporary")
        assert isinstance(await DynamicSupervisor.start_child(sup, spec, arg=Ctl()), Pid)
        assert got == ["from_child"]


@virtual_time
async def test_dynamic_supervisor_start_child_with_invalid_child_spec() -> None:
    async with Runtime() as rt:
        sup = await dyn(rt)
        with pytest.raises(InvalidChildSpecError) as e:
            await DynamicSupervisor.start_child(sup, {})  # type: ignore[arg-type]
        assert e.value.reason == "invalid_child_spec"
        with pytest.raises(InvalidChildSpecError) as e:
            ChildSpec(Worker, shutdown=-1)
        assert e.value.reason == "invalid_shutdown"
        with pytest.raises(InvalidChildSpecError) as e:
            await DynamicSupervisor.start_child(
                sup, ChildSpec(Worker, restart="transient", significant=True)
            )
        assert e.value.reason == "invalid_significant"


@virtual_time
async def test_dynamic_supervisor_start_child_with_different_returns() -> None:
    async with Runtime() as rt:
        sup = await dyn(rt)
        r = await DynamicSupervisor.start_child(sup, SPEC, arg=Ctl(info="extra"), with_info=True)
        assert isinstance(r.pid, Pid) and r.info == "extra"
        assert isinstance(await DynamicSupervisor.start_child(sup, SPEC, arg=Ctl()), Pid)
        assert await DynamicSupervisor.start_child(sup, SPEC, arg=Ctl(ignore=True)) is None
        with pytest.raises(StartError):
            await DynamicSupervisor.start_child(sup, SPEC, arg=Ctl(fail=True))
        with pytest.raises(StartError):
            await DynamicSupervisor.start_child(sup, SPEC, arg="unknown")


@virtual_time
async def test_dynamic_supervisor_start_child_with_throw_error_exit() -> None:
    class Raising(Worker):
        def init(self, arg: Any) -> Any:  # type: ignore[override]
            raise arg

    async with Runtime() as rt:
        sup = await dyn(rt)
        for exc in (RuntimeError("oops"), ValueError("oops"), SystemError("oops")):
            with pytest.raises(StartError) as e:
                await DynamicSupervisor.start_child(sup, ChildSpec(Raising), arg=exc)
            assert e.value.reason is exc
        assert await DynamicSupervisor.which_children(sup) == []


@virtual_time
async def test_dynamic_supervisor_start_child_with_max_children() -> None:
    async with Runtime() as rt:
        sup = await dyn(rt, max_children=0)
        with pytest.raises(MaxChildrenError):
            await DynamicSupervisor.start_child(sup, SPEC, arg=Ctl())


@virtual_time
async def test_dynamic_supervisor_temporary_child_is_not_restarted_regardless_of_reason() -> None:
    async with Runtime() as rt:
        sup = await dyn(rt)
        spec = ChildSpec(Worker, restart="temporary")
        for reason in ("shutdown", "whatever"):
            p = await DynamicSupervisor.start_child(sup, spec, arg=Ctl())
            await assert_kill(rt, p, reason)
            assert await counts(sup) == (0, 0)


@virtual_time
async def test_dynamic_supervisor_transient_child_is_restarted_unless_normal_shutdown_shutdown_() -> (
    None
):
    async with Runtime() as rt:
        sup = await dyn(rt)
        spec = ChildSpec(Worker, restart="transient")
        for reason in ("shutdown", Shutdown("signal")):
            p = await DynamicSupervisor.start_child(sup, spec, arg=Ctl())
            await assert_kill(rt, p, reason)
            assert await counts(sup) == (0, 0)
        p = await DynamicSupervisor.start_child(sup, spec, arg=Ctl())
        await assert_kill(rt, p, "whatever")
        assert await counts(sup) == (1, 1)


@virtual_time
async def test_dynamic_supervisor_permanent_child_is_restarted_regardless_of_reason() -> None:
    async with Runtime() as rt:
        sup = await dyn(rt, max_restarts=100_000)
        for n, reason in enumerate(("shutdown", Shutdown("signal"), "whatever"), 1):
            p = await DynamicSupervisor.start_child(sup, SPEC, arg=Ctl())
            await assert_kill(rt, p, reason)
            assert await counts(sup) == (n, n)


@virtual_time
async def test_dynamic_supervisor_child_is_restarted_with_different_values() -> None:
    async with Runtime() as rt:
        sup = await dyn(rt, max_restarts=100_000)
        child1 = await DynamicSupervisor.start_child(sup, SPEC, arg=Ctl(info="ok3"))
        assert await DynamicSupervisor.which_children(sup) == [
            ChildInfo(None, child1, "worker", "permanent")
        ]
        await assert_kill(rt, child1, "shutdown")
        assert await counts(sup) == (1, 1)
        child2 = await DynamicSupervisor.start_child(sup, SPEC, arg=Ctl())
        assert pids(await DynamicSupervisor.which_children(sup))[1] == child2
        await assert_kill(rt, child2, "shutdown")
        assert await counts(sup) == (2, 2)
        child3 = await DynamicSupervisor.start_child(sup, SPEC, arg=Ctl(ignore_restarts=True))
        assert len(await DynamicSupervisor.which_children(sup)) == 3
        await assert_kill(rt, child3, "shutdown")
        assert await counts(sup) == (2, 2), "a restart that returns IGNORE drops the child"
        child4 = await DynamicSupervisor.start_child(
            sup, SPEC, arg=Ctl(fail_restarts=True, fail_delay=1.0)
        )
        assert len(await DynamicSupervisor.which_children(sup)) == 3
        await assert_kill(rt, child4, "shutdown")
        assert await counts(sup) == (3, 2)
        child5 = await DynamicSupervisor.start_child(
            sup, SPEC, arg=Ctl(fail_restarts=True, fail_delay=1.0)
        )
        rows = await DynamicSupervisor.which_children(sup)
        assert pids(rows)[2] == RESTARTING and pids(rows)[3] == child5
        await assert_kill(rt, child5, "shutdown")
        assert await counts(sup) == (4, 2)


@pytest.mark.parametrize("on", ["init", "exit"])
@virtual_time
async def test_dynamic_supervisor_restarting_on_init_and_on_exit_children_counted_in_max_children(
    on: str,
) -> None:
    """``restarting on init children counted in max_children`` and ``... on exit ...``."""
    async with Runtime() as rt:
        sup = await dyn(rt, max_children=1, max_restarts=100_000)
        ctl = Ctl(fail_restarts=on == "init", fail_delay=1.0)
        p = await DynamicSupervisor.start_child(sup, SPEC, arg=ctl)
        await assert_kill(rt, p, "shutdown")
        assert await counts(sup) == ((1, 0) if on == "init" else (1, 1))
        with pytest.raises(MaxChildrenError):
            await DynamicSupervisor.start_child(sup, SPEC, arg=Ctl())


@virtual_time
async def test_dynamic_supervisor_restarting_a_child_with_extra_arguments_successfully_restarts_child() -> (
    None
):
    got: list[Any] = []

    class Task(Worker):
        async def init(self, arg: Any) -> Any:
            fun, ctl = arg
            fun()
            return await super().init(ctl)

    async with Runtime() as rt:
        sup = await dyn(rt, extra_arguments=(lambda: got.append("from_child"),))
        p = await DynamicSupervisor.start_child(
            sup, ChildSpec(Task, restart="transient"), arg=Ctl()
        )
        assert got == ["from_child"] and await counts(sup) == (1, 1)
        await assert_kill(rt, p, "oops")
        assert got == ["from_child", "from_child"] and await counts(sup) == (1, 1)


@virtual_time
async def test_dynamic_supervisor_child_is_restarted_when_trying_again() -> None:
    async with Runtime() as rt:
        sup = await dyn(rt, max_restarts=2)
        ctl = Ctl()
        p = await DynamicSupervisor.start_child(sup, SPEC, arg=ctl)
        ctl.fail_next = 1
        await assert_kill(rt, p, "shutdown")
        assert ctl.starts == 3, "started, failed to restart, restarted when trying again"
        assert await counts(sup) == (1, 1)


@pytest.mark.parametrize("max_restarts", [1, 10])
@virtual_time
async def test_dynamic_supervisor_child_triggers_maximum_restarts_and_intensity_when_trying_again(
    max_restarts: int,
) -> None:
    """``child triggers maximum restarts`` (1) and ``... maximum intensity when trying again``
    (10)."""
    async with Runtime() as rt:
        sup = await dyn(rt, max_restarts=max_restarts)
        p = await DynamicSupervisor.start_child(sup, SPEC, arg=Ctl(fail_restarts=True))
        gone = watch(rt, sup)
        await assert_kill(rt, p, "shutdown")
        assert await gone == "shutdown"


@virtual_time
async def test_dynamic_supervisor_start_child_with_valid_shutdown() -> None:
    async with Runtime() as rt:
        sup = await dyn(rt)
        for n in (0, 1):
            p = await DynamicSupervisor.start_child(sup, ChildSpec(Worker, shutdown=n), arg=Ctl())
            await assert_kill(rt, p, "shutdown")


def test_dynamic_supervisor_start_child_with_invalid_valid_shutdown() -> None:
    with pytest.raises(InvalidChildSpecError) as e:
        ChildSpec(Worker, shutdown=-1)
    assert (e.value.reason, e.value.value) == ("invalid_shutdown", -1)


async def _stop_and_collect(rt: Runtime, sup: Pid, children: list[Any]) -> list[Any]:
    ws = [watch(rt, c) for c in children]
    await rt.stop(sup, "shutdown")
    return [await w for w in ws]


@pytest.mark.parametrize(
    ("shutdown", "expected"),
    [("brutal_kill", "killed"), ("infinity", "shutdown"), (1.0, "shutdown")],
)
@virtual_time
async def test_dynamic_supervisor_terminates_children_with_brutal_kill_infinity_integer_shutdown(
    shutdown: Any, expected: str
) -> None:
    """``terminates children with brutal kill``, ``... with infinity shutdown``, ``... with
    integer shutdown``."""
    async with Runtime() as rt:
        sup = await dyn(rt)
        spec = ChildSpec(Worker, shutdown=shutdown)
        cs = [await DynamicSupervisor.start_child(sup, spec, arg=Ctl()) for _ in range(3)]
        assert await _stop_and_collect(rt, sup, cs) == [expected] * 3


@virtual_time
async def test_dynamic_supervisor_terminates_children_with_expired_integer_shutdown() -> None:
    class Sleeper(Worker):
        async def init(self, ctl: Ctl) -> Any:
            r = await super().init(ctl)
            self.trap_exit = ctl.tag == "tmt"
            return r

    async with Runtime() as rt:
        sup = await dyn(rt)
        spec = ChildSpec(Sleeper, shutdown=1.0)
        c1 = await DynamicSupervisor.start_child(sup, spec, arg=Ctl(tag="fun"))
        c2 = await DynamicSupervisor.start_child(sup, spec, arg=Ctl(tag="tmt", stop_delay=3600))
        c3 = await DynamicSupervisor.start_child(sup, spec, arg=Ctl(tag="fun"))
        assert await _stop_and_collect(rt, sup, [c1, c2, c3]) == ["shutdown", "killed", "shutdown"]


@pytest.mark.parametrize("shutdown", ["infinity", 1.0])
@virtual_time
async def test_dynamic_supervisor_terminates_children_with_infinity_integer_shutdown_and_abnormal_reason(
    shutdown: Any,
) -> None:
    """``terminates children with infinity shutdown and abnormal reason`` and ``terminates
    children with integer shutdown and abnormal reason``: each child's ``Down`` carries the
    ``{:shutdown, :oops}`` it exited with, not the supervisor's ``shutdown``. (A ``Task``'s
    default restart is ``temporary``.)"""
    async with Runtime() as rt:
        sup = await dyn(rt)
        spec = ChildSpec(ExitsInTerminate, restart="temporary", shutdown=shutdown)
        arg = Exits(Shutdown("oops"))
        cs = [await DynamicSupervisor.start_child(sup, spec, arg=arg) for _ in range(3)]
        assert await _stop_and_collect(rt, sup, cs) == [Shutdown("oops")] * 3
        assert arg.started == cs


@virtual_time
async def test_dynamic_supervisor_terminates_children_with_permanent_restart_and_normal_reason() -> (
    None
):
    """``terminates children with permanent restart and normal reason``: permanent children
    that exit ``normal`` when shut down report ``normal`` and are not restarted."""
    async with Runtime() as rt:
        sup = await dyn(rt)
        spec = ChildSpec(ExitsInTerminate, restart="permanent", shutdown="infinity")
        arg = Exits("normal")
        cs = [await DynamicSupervisor.start_child(sup, spec, arg=arg) for _ in range(3)]
        assert await _stop_and_collect(rt, sup, cs) == ["normal"] * 3
        assert arg.started == cs  # none restarted: the supervisor was shutting down


@virtual_time
async def test_dynamic_supervisor_terminates_with_mixed_children() -> None:
    async with Runtime() as rt:
        sup = await dyn(rt)
        c1 = await DynamicSupervisor.start_child(
            sup, ChildSpec(Worker, shutdown="infinity"), arg=Ctl()
        )
        c2 = await DynamicSupervisor.start_child(
            sup, ChildSpec(Worker, shutdown="brutal_kill"), arg=Ctl()
        )
        assert await _stop_and_collect(rt, sup, [c1, c2]) == ["shutdown", "killed"]


@pytest.mark.parametrize(("shutdown", "expected"), [("brutal_kill", "killed"), (1.0, "shutdown")])
@virtual_time
async def test_dynamic_supervisor_terminates_child_with_brutal_kill_and_integer_shutdown(
    shutdown: Any, expected: str
) -> None:
    """``terminates child with brutal kill`` and ``terminates child with integer shutdown``."""
    async with Runtime() as rt:
        sup = await dyn(rt)
        p = await DynamicSupervisor.start_child(
            sup, ChildSpec(Worker, shutdown=shutdown), arg=Ctl()
        )
        w = watch(rt, p)
        await DynamicSupervisor.terminate_child(sup, p)  # type: ignore[arg-type]
        assert await w == expected
        with pytest.raises(ChildNotFoundError):
            await DynamicSupervisor.terminate_child(sup, p)  # type: ignore[arg-type]
        assert await counts(sup) == (0, 0)


@virtual_time
async def test_dynamic_supervisor_terminates_restarting_child() -> None:
    async with Runtime() as rt:
        sup = await dyn(rt, max_restarts=100_000)
        p = await DynamicSupervisor.start_child(
            sup, SPEC, arg=Ctl(fail_restarts=True, fail_delay=1.0)
        )
        await assert_kill(rt, p, "shutdown")
        await asyncio.sleep(0.5)
        await DynamicSupervisor.terminate_child(sup, p)  # type: ignore[arg-type]
        with pytest.raises(ChildNotFoundError):
            await DynamicSupervisor.terminate_child(sup, p)  # type: ignore[arg-type]
        assert await counts(sup) == (0, 0)
        await asyncio.sleep(5)
        assert await counts(sup) == (0, 0), "the attempt in progress did not bring it back"
