"""Elixir's ``lib/elixir/test/elixir/supervisor_test.exs``, ported: one test per upstream test,
named ``test_supervisor_<test>``, on the virtual clock.

``Stack`` is the upstream stack server. Tests of Elixir's child-spec shapes (``child_spec/1``,
``child_spec/2``, ``init/2``, old tuple specs) and ``:global`` names are listed as not ported in
docs/kernel.md.
"""

from __future__ import annotations

from typing import Any

import pytest

from netsuke import (
    AlreadyStartedError,
    BadTargetError,
    ChildInfo,
    ChildSpec,
    ChildStateError,
    From,
    InvalidChildSpecError,
    Pid,
    Process,
    Registry,
    Runtime,
    Supervisor,
    SupervisorSpec,
    Via,
    virtual_time,
)

from ..helpers import settle
from .workers import Ctl, Worker, terminate

pytestmark = pytest.mark.timeout(60)


class Stack(Process):
    def init(self, state: list[Any]) -> None:
        self.stack = list(state)

    def handle_call(self, request: Any, from_: From) -> Any:
        if request == "pop":
            return self.stack.pop(0)
        if request == "stop":
            self.stop("normal")
            return "ok"
        raise ValueError(request)

    def handle_cast(self, request: Any) -> None:
        self.stack.insert(0, request[1])


class StackSup(Supervisor):
    def supervise(self, arg: Any) -> SupervisorSpec:
        state, name = arg
        return SupervisorSpec([ChildSpec(Stack, state, name=name)], strategy="one_for_one")


@virtual_time
async def test_supervisor_start_link_2_with_via() -> None:
    async with Runtime() as rt:
        via = Via(Registry(rt, keys="unique"), "via_sup")
        await rt.start(Supervisor, SupervisorSpec(), name=via)
        assert await Supervisor.which_children(via) == []


@virtual_time
async def test_supervisor_start_link_3_with_local() -> None:
    async with Runtime() as rt:
        await rt.start(Supervisor, SupervisorSpec(), name="my_sup")
        assert await Supervisor.which_children("my_sup") == []


@virtual_time
async def test_supervisor_start_link_2() -> None:
    async with Runtime() as rt:
        children = [ChildSpec(Stack, ["hello"], name="dyn_stack")]
        pid = await rt.start(Supervisor, SupervisorSpec(children, strategy="one_for_one"))
        assert await rt.call("dyn_stack", "pop") == "hello"
        assert await rt.call("dyn_stack", "stop") == "ok"
        await settle()  # wait_until_registered
        assert await rt.call("dyn_stack", "pop") == "hello"
        await rt.stop(pid)  # type: ignore[arg-type]
        for bad in (42, ("invalid_tuple", "my_gen_server_name")):
            with pytest.raises(BadTargetError):
                await rt.start(Supervisor, SupervisorSpec(children), name=bad)  # type: ignore[arg-type]


@virtual_time
async def test_supervisor_start_link_3() -> None:
    async with Runtime() as rt:
        pid = await rt.start(StackSup, (["hello"], "stat_stack"))
        assert await rt.call("stat_stack", "pop") == "hello"
        await rt.stop(pid)  # type: ignore[arg-type]


@virtual_time
async def test_supervisor_start_child_supports_new_child_spec() -> None:
    """``supports old child spec``, ``... new child spec as tuple``, ``... new child spec``:
    one ``ChildSpec`` shape here."""
    async with Runtime() as rt:
        sup = await rt.start(Supervisor, SupervisorSpec())
        spec = ChildSpec(Worker, Ctl(), id="Task", restart="temporary")
        assert isinstance(await Supervisor.start_child(sup, spec), Pid)  # type: ignore[arg-type]


@virtual_time
async def test_supervisor_start_child_with_invalid_child_spec() -> None:
    async with Runtime() as rt:
        sup = await rt.start(Supervisor, SupervisorSpec())
        assert sup is not None
        with pytest.raises(InvalidChildSpecError) as e:
            await Supervisor.start_child(sup, {})  # type: ignore[arg-type]
        assert e.value.reason == "invalid_child_spec"
        with pytest.raises(InvalidChildSpecError) as e:
            ChildSpec((1, 2, 3, 4, 5, 6))  # type: ignore[arg-type]
        assert e.value.reason == "invalid_start"
        with pytest.raises(InvalidChildSpecError) as e:
            ChildSpec(Worker, id=1, shutdown=-1)
        assert e.value.reason == "invalid_shutdown"
        assert rt.alive(sup)


@virtual_time
async def test_supervisor_start_child_with_valid_child_spec() -> None:
    async with Runtime() as rt:
        sup = await rt.start(Supervisor, SupervisorSpec())
        for n in (0, 1):
            spec = ChildSpec(Worker, Ctl(), id=n, shutdown=n)
            child = await Supervisor.start_child(sup, spec)  # type: ignore[arg-type]
            await terminate(rt, child, "shutdown")


@virtual_time
async def test_supervisor_child_life_cycle() -> None:
    async with Runtime() as rt:
        sup = await rt.start(Supervisor, SupervisorSpec())
        assert sup is not None
        assert await Supervisor.which_children(sup) == []
        assert await Supervisor.count_children(sup) == {
            "specs": 0,
            "active": 0,
            "workers": 0,
            "supervisors": 0,
        }
        spec = ChildSpec(Stack, ["hello"])
        stack = await Supervisor.start_child(sup, spec)
        assert await rt.call(stack, "pop") == "hello"  # type: ignore[arg-type]
        assert await Supervisor.which_children(sup) == [
            ChildInfo("Stack", stack, "worker", "permanent")
        ]
        assert await Supervisor.count_children(sup) == {
            "specs": 1,
            "active": 1,
            "workers": 1,
            "supervisors": 0,
        }
        with pytest.raises(ChildStateError) as e:
            await Supervisor.delete_child(sup, "Stack")
        assert e.value.reason == "running"
        await Supervisor.terminate_child(sup, "Stack")
        stack = await Supervisor.restart_child(sup, "Stack")
        assert await rt.call(stack, "pop") == "hello"  # type: ignore[arg-type]
        with pytest.raises(AlreadyStartedError):
            await Supervisor.start_child(sup, spec)
        await Supervisor.terminate_child(sup, "Stack")
        await Supervisor.delete_child(sup, "Stack")
        await rt.stop(sup)
