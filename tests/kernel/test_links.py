from __future__ import annotations

import asyncio
import itertools

import pytest

from netsuke import Down, Exit, Exited, NoProcessError, Process, Runtime, virtual_time

from .helpers import Echo, settle


async def test_abnormal_exit_propagates_through_a_link_and_normal_does_not() -> None:
    async with Runtime() as rt:
        a = await rt.start(Echo, None)
        b = await rt.start(Echo, None)
        c = await rt.start(Echo, None)
        assert a and b and c
        rt.link(a, b)
        rt.link(b, c)
        await rt.stop(a, "normal")
        assert rt.alive(b) and rt.alive(c)
        rt.exit(b, "boom")
        assert not rt.alive(b)
        assert not rt.alive(c)


async def test_long_link_chain_dies_without_recursion() -> None:
    async with Runtime() as rt:
        pids = [await rt.start(Echo, None) for _ in range(5000)]
        for x, y in itertools.pairwise(pids):
            rt.link(x, y)
        rt.kill(pids[0])
        assert not any(rt.alive(p) for p in pids)  # type: ignore[arg-type]


async def test_trap_exit_turns_signals_into_messages() -> None:
    async with Runtime() as rt:
        watcher = await rt.start(Echo, None)
        worker = await rt.start(Echo, None)
        assert watcher and worker
        await rt.call(watcher, ("trap", True))
        await rt.call(watcher, ("link", worker))
        rt.exit(worker, "boom")
        await settle()
        infos = await rt.call(watcher, "infos")
        assert infos == [Exit(worker, "boom")]
        assert rt.alive(watcher)


async def test_kill_cannot_be_trapped_but_killed_can() -> None:
    async with Runtime() as rt:
        trapper = await rt.start(Echo, None)
        linked = await rt.start(Echo, None)
        assert trapper and linked
        await rt.call(trapper, ("trap", True))
        await rt.call(linked, ("trap", True))
        await rt.call(trapper, ("link", linked))
        rt.kill(trapper)
        assert not rt.alive(trapper)
        await settle()
        # the linked process traps exits and sees the reason "killed", not "kill"
        assert await rt.call(linked, "infos") == [Exit(trapper, "killed")]


async def test_exit_signal_from_outside_is_trapped_as_message() -> None:
    async with Runtime() as rt:
        p = await rt.start(Echo, None)
        assert p
        await rt.call(p, ("trap", True))
        rt.exit(p, "please")
        await settle()
        assert await rt.call(p, "infos") == [Exit(None, "please")]


async def test_monitor_delivers_down_with_reason_and_noproc() -> None:
    async with Runtime() as rt:
        watcher = await rt.start(Echo, None)
        target = await rt.start(Echo, None)
        assert watcher and target
        ref = await rt.call(watcher, ("monitor", target))
        rt.exit(target, "bye")
        await settle()
        assert await rt.call(watcher, "infos") == [Down(ref, target, "bye")]
        ref2 = await rt.call(watcher, ("monitor", target))
        await settle()
        infos = await rt.call(watcher, "infos")
        assert infos[-1] == Down(ref2, target, "noproc")
        # a monitor is one-way: the watcher's death does not touch the target
        other = await rt.start(Echo, None)
        await rt.call(watcher, ("monitor", other))
        rt.kill(watcher)
        assert rt.alive(other)


async def test_demonitor_stops_down_messages() -> None:
    class W(Echo):
        async def handle_call(self, request: object, from_: object) -> object:  # type: ignore[override]
            if isinstance(request, tuple) and request[0] == "mon_demon":
                ref = self.monitor(request[1])
                self.demonitor(ref)
                return ref
            return await super().handle_call(request, from_)  # type: ignore[arg-type]

    async with Runtime() as rt:
        w = await rt.start(W, None)
        t = await rt.start(Echo, None)
        await rt.call(w, ("mon_demon", t))
        rt.kill(t)
        await settle()
        assert await rt.call(w, "infos") == []


async def test_process_linked_to_an_owner_dies_when_the_owner_dies() -> None:
    async with Runtime() as rt:
        owner = await rt.start(Echo, None)
        agent = await rt.start(Echo, None, link=owner)
        assert owner and agent
        rt.kill(owner)
        assert not rt.alive(agent)
        assert await rt.wait_exit(agent) == "noproc"


async def test_scope_owner_takes_linked_agent_down_on_error() -> None:
    async with Runtime() as rt:
        agent = None
        with pytest.raises(RuntimeError):
            async with rt.scope() as me:
                agent = await rt.start(Echo, None, link=me.pid)
                assert rt.alive(agent)  # type: ignore[arg-type]
                raise RuntimeError("socket closed")
        assert agent is not None and not rt.alive(agent)


@virtual_time
async def test_scope_is_cancelled_with_exited_when_a_linked_process_crashes() -> None:
    async with Runtime() as rt:
        with pytest.raises(Exited) as ei:
            async with rt.scope() as me:
                worker = await rt.start(Echo, None, link=me.pid)
                rt.cast(worker, "crash")  # type: ignore[arg-type]
                await asyncio.sleep(3600)
        assert isinstance(ei.value.reason, RuntimeError)
        assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_scope_receives_messages_and_traps() -> None:
    async with Runtime() as rt, rt.scope(trap_exit=True) as me:
        w = await rt.start(Echo, None, link=me.pid)
        rt.exit(w, "bye")  # type: ignore[arg-type]
        assert await me.receive(timeout=1) == Exit(w, "bye")
        rt.send(me.pid, "hello")
        assert await me.receive(timeout=1) == "hello"
        with pytest.raises(TimeoutError):
            await me.receive(timeout=0.01)


async def test_link_to_dead_process_sends_noproc() -> None:
    async with Runtime() as rt:
        a = await rt.start(Echo, None)
        b = await rt.start(Echo, None)
        assert a and b
        await rt.stop(b)
        rt.link(a, b)
        assert not rt.alive(a)
        with pytest.raises(NoProcessError):
            rt.link(a, b)


async def test_unlink_breaks_the_link() -> None:
    async with Runtime() as rt:
        a = await rt.start(Echo, None)
        b = await rt.start(Echo, None)
        assert a and b
        rt.link(a, b)
        assert rt.links(a) == [b]
        rt.unlink(a, b)
        rt.kill(a)
        assert rt.alive(b)


def test_exit_reasons_helpers() -> None:
    from netsuke import Shutdown, is_abnormal, is_normal_or_shutdown

    assert is_normal_or_shutdown("normal") and is_normal_or_shutdown(Shutdown("x"))
    assert is_abnormal(ValueError()) and is_abnormal("killed")
    assert not is_abnormal("shutdown")
    _ = Process
