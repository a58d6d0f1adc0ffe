from __future__ import annotations

import asyncio
from typing import Any

import pytest

from netsuke import (
    ChildSpec,
    DynamicSupervisor,
    LocalTransport,
    NoProcessError,
    NotInProcessError,
    Runtime,
    Supervisor,
    SupervisorSpec,
    VirtualClockLoop,
    current_runtime,
    run_virtual,
)
from netsuke.observability import render_metrics

from .helpers import Echo, Named


async def test_no_asyncio_task_is_left_after_the_runtime_exits() -> None:
    before = asyncio.all_tasks()
    events: list[Any] = []
    async with Runtime() as rt:
        for i in range(50):
            await rt.start_child(ChildSpec(Named, (i, events), id=i))
        busy = await rt.start(Echo, None)
        pending = asyncio.ensure_future(rt.call(busy, ("sleep", 3600), timeout=None))  # type: ignore[arg-type]
        await rt.tasks.start(lambda: asyncio.sleep(3600))
        await rt.start(DynamicSupervisor, None, name="dyn")
        for _ in range(20):
            await DynamicSupervisor.start_child("dyn", ChildSpec(Echo))
        await asyncio.sleep(0.01)
    with pytest.raises(Exception):  # noqa: B017 - the busy process was shut down mid-call
        await pending
    assert asyncio.all_tasks() == before
    assert rt.count_processes() == 0
    assert next(e for e in events if e[0] == "stop") == ("stop", 49), "reverse order"


async def test_shutdown_kills_processes_that_ignore_it_within_the_timeout() -> None:
    class Stubborn(Echo):
        def init(self, arg: Any) -> None:
            super().init(arg)
            self.trap_exit = True

        async def terminate(self, reason: Any) -> None:
            await asyncio.sleep(3600)

    loop = asyncio.get_running_loop()
    t0 = loop.time()
    async with Runtime(shutdown_timeout=0.2) as rt:
        await rt.start(Stubborn, None)
    assert loop.time() - t0 < 5
    assert rt.count_processes() == 0


async def test_pids_are_location_transparent_across_nodes_of_a_local_transport() -> None:
    hub = LocalTransport()
    async with Runtime("a", transport=hub) as a, Runtime("b", transport=hub) as b:
        pid = await a.start(Echo, None)
        assert pid is not None and pid.node == "a"
        assert await b.call(pid, "from b") == "from b"
        assert b.send(pid, "info")
        other = await b.start(Echo, None)
        b.link(pid, other)  # type: ignore[arg-type]
        a.kill(pid)
        assert not b.alive(other), "links work across nodes"
        assert hub.nodes() == ["a", "b"]
    assert hub.nodes() == []


async def test_name_node_tuple_addresses_a_registered_name_on_that_node() -> None:
    """Erlang's {Name, Node}: resolved in that node's registry (this one or another)."""
    hub = LocalTransport()
    async with Runtime("a", transport=hub) as a, Runtime("b", transport=hub) as b:
        pid = await b.start(Echo, None, name="svc")
        assert await a.call(("svc", "b"), "by name") == "by name"
        assert await b.call(("svc", "b"), "own node") == "own node"
        assert a.whereis(("svc", "b")) == pid
        assert a.whereis(("nobody", "b")) is None
        assert a.whereis(("svc", "c")) is None
        with pytest.raises(NoProcessError):
            await a.call(("svc", "a"), "not registered on a")


def test_current_runtime_outside_a_runtime_is_a_usage_error() -> None:
    with pytest.raises(NotInProcessError):
        current_runtime()


def test_virtual_clock_jumps_to_the_next_timer() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualClockLoop)
        await asyncio.sleep(3600)
        return loop.time()

    assert run_virtual(main()) == pytest.approx(3600)


async def test_metrics_count_processes_restarts_and_exits() -> None:
    async with Runtime(node="metrics-node") as rt:
        sup = await rt.start(Supervisor, SupervisorSpec(children=[ChildSpec(Echo, name="m")]))
        rt.cast("m", "crash")
        await asyncio.sleep(0.01)
        text = render_metrics().decode()
        assert 'netsuke_processes{node="metrics-node",state="hibernated"}' in text
        assert 'netsuke_supervisor_restarts_total{node="metrics-node"} 1.0' in text
        assert 'netsuke_process_exits_total{kind="crash",node="metrics-node"} 1.0' in text
        assert sup


async def test_runtime_refuses_bad_options() -> None:
    with pytest.raises(ValueError, match="node"):
        Runtime("")
    with pytest.raises(ValueError, match="hibernate_sweep"):
        Runtime(hibernate_sweep=0)
