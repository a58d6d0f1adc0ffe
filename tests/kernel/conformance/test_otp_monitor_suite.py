"""OTP's erts/emulator/test/monitor_SUITE.erl, ported to Netsuke on the virtual clock.

One test per upstream test case, named after it. Not ported (BEAM-only, listed in
docs/kernel.md): demon_3, remote_remove_monitor, mixer (distribution), otp_5827 (pid creation
numbers), monitor_time_offset (``erlang:monitor(time_offset, ...)``). mon_2 runs between two
nodes joined by a ``LocalTransport``, without its node-down cases (``noconnection`` belongs to
the cluster transport).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from netsuke import (
    ArgumentError,
    BadTargetError,
    Down,
    Exit,
    From,
    LocalTransport,
    Process,
    Ref,
    Registry,
    Runtime,
    Via,
    virtual_time,
)


class Jeeves(Process):
    """The suite's butler: monitors, demonitors, stops or exits on request."""

    def init(self, arg: Any) -> None:
        self.downs: list[Down] = []

    def handle_call(self, request: Any, from_: From) -> Any:
        match request:
            case ("monitor_process", target):
                return self.monitor(target)
            case ("demonitor", ref):
                return self.demonitor(ref)
            case "stop":
                self.stop()
                return "ok"
            case ("exit", reason):
                self.exit(reason)
            case "monitors":
                ext = self._ext
                return (
                    len(ext.monitoring or {}) if ext else 0,
                    len(ext.monitored_by or {}) if ext else 0,
                )
        raise ValueError(request)

    def handle_info(self, message: Any) -> None:
        if isinstance(message, Down):
            self.downs.append(message)


def _monitors(p: Process) -> tuple[int, int]:
    ext = p._ext
    return (len(ext.monitoring or {}), len(ext.monitored_by or {})) if ext else (0, 0)


@virtual_time
async def test_monitor_SUITE_case_1() -> None:
    """A monitors B, B kills A and then exits."""
    async with Runtime() as rt, rt.scope(trap_exit=True) as me:
        a = await rt.start(Jeeves, None, link=me.pid)
        b = await rt.start(Jeeves, None)
        await rt.call(a, ("monitor_process", b))
        rt.exit(a, "foo", sender=b)
        await rt.stop(b)
        assert await me.receive(timeout=1) == Exit(a, "foo")


@virtual_time
async def test_monitor_SUITE_case_2() -> None:
    """A monitors B, B demonitors A's ref: nothing happens; A gets B's normal DOWN."""
    async with Runtime() as rt, rt.scope() as me:
        b = await rt.start(Jeeves, None)
        ref = me.monitor(b)
        assert await rt.call(b, ("demonitor", ref)) is False  # not B's monitor
        await rt.call(b, "stop")
        assert await me.receive(timeout=1) == Down(ref, b, "normal")


@virtual_time
async def test_monitor_SUITE_mon_e_1() -> None:
    async with Runtime() as rt, rt.scope() as me:
        for bad in ([b"bingo"], ("rex", "node", "junk"), 1):
            with pytest.raises(BadTargetError):
                me.monitor(bad)  # type: ignore[arg-type]


@virtual_time
async def test_monitor_SUITE_demon_e_1() -> None:
    async with Runtime() as rt, rt.scope() as me:
        for bad in ("plutt", 1):
            with pytest.raises(ArgumentError):
                me.demonitor(bad)  # type: ignore[arg-type]
        # a ref taken by another process is not ours to remove
        p2 = await rt.start(Jeeves, None)
        r2 = await rt.call(p2, ("monitor_process", me.pid))
        assert me.demonitor(r2) is False
        assert _monitors(me) == (0, 1)


@virtual_time
async def test_monitor_SUITE_demon_1() -> None:
    async with Runtime() as rt, rt.scope() as me:
        assert me.demonitor(Ref(rt.node, 10**9)) is False  # an unknown ref: a no-op


@virtual_time
async def test_monitor_SUITE_demon_2() -> None:
    async with Runtime() as rt, rt.scope() as me:
        r1 = me.monitor(me.pid)
        assert me.demonitor(r1) is True
        assert me.demonitor(r1) is False  # extra demonitor
        with pytest.raises(TimeoutError):
            await me.receive(timeout=0)
        # normal DOWN
        p2 = await rt.start(Jeeves, None)
        r2 = me.monitor(p2)
        await rt.call(p2, "stop")
        assert await me.receive(timeout=1) == Down(r2, p2, "normal")
        # demonitor before DOWN
        p4 = await rt.start(Jeeves, None)
        r4 = me.monitor(p4)
        me.demonitor(r4)
        rt.exit(p4, "frop")
        with pytest.raises(TimeoutError):
            await me.receive(timeout=0.1)


@virtual_time
async def test_monitor_SUITE_demonitor_flush() -> None:
    async with Runtime() as rt, rt.scope() as me:
        p = await rt.start(Jeeves, None)
        m1, m2, m3, m4 = (me.monitor(p) for _ in range(4))
        assert me.demonitor(m1, flush=True) is True
        rt.exit(p, "bang")
        assert await me.receive(timeout=1) == Down(m2, p, "bang")
        await asyncio.sleep(0.1)
        assert me.demonitor(m3, flush=True) is False  # already fired: its Down is flushed
        assert me.demonitor(m4) is False
        assert await me.receive(timeout=1) == Down(m4, p, "bang")
        with pytest.raises(TimeoutError):
            await me.receive(timeout=0.1)


@virtual_time
async def test_monitor_SUITE_local_remove_monitor() -> None:
    """demonitor with info: true when it removed a live monitor (no Down then), false when
    the Down was already delivered."""
    async with Runtime() as rt, rt.scope() as me:
        trues = falses = 0
        for i in range(100):
            p = await rt.start(Jeeves, None)
            ref = me.monitor(p)
            if i % 2:
                await rt.stop(p)
            if me.demonitor(ref):
                trues += 1
                with pytest.raises(TimeoutError):
                    await me.receive(timeout=0)
            else:
                falses += 1
                assert (await me.receive(timeout=0)).ref == ref
            if rt.alive(p):
                await rt.stop(p)
        assert (trues, falses) == (50, 50)


@virtual_time
async def test_monitor_SUITE_mon_1() -> None:
    async with Runtime() as rt, rt.scope() as me:
        p2 = await rt.start(Jeeves, None)
        r2 = me.monitor(p2)
        await rt.call(p2, "stop")
        assert await me.receive(timeout=1) == Down(r2, p2, "normal")
        # DOWN with another reason
        p3 = await rt.start(Jeeves, None)
        r3 = me.monitor(p3)
        rt.exit(p3, "frop")
        assert await me.receive(timeout=1) == Down(r3, p3, "frop")
        # monitor fails because the process is dead
        r4 = me.monitor(p3)
        assert await me.receive(timeout=1) == Down(r4, p3, "noproc")
        # named process: the DOWN carries {Name, Node}
        p5 = await rt.start(Jeeves, None, name="jeeves")
        r5 = me.monitor("jeeves")
        await rt.call(p5, "stop")
        assert await me.receive(timeout=1) == Down(r5, ("jeeves", rt.node), "normal")
        p6 = await rt.start(Jeeves, None, name="jeeves")
        r6 = me.monitor("jeeves")
        with pytest.raises(Exception):  # noqa: B017 - the call fails as the server exits
            await rt.call(p6, ("exit", "frop"))
        assert await me.receive(timeout=1) == Down(r6, ("jeeves", rt.node), "frop")
        # named monitor fails because the process is gone: the name, not a made-up pid
        r7 = me.monitor("jeeves")
        assert await me.receive(timeout=1) == Down(r7, ("jeeves", rt.node), "noproc")
        # the same through a Via: the Down carries the Via
        reg = Registry(rt, name="butlers")
        p8 = await rt.start(Jeeves, None, name=Via(reg, "jeeves"))
        r8 = me.monitor(Via(reg, "jeeves"))
        rt.exit(p8, "frop")
        assert await me.receive(timeout=1) == Down(r8, Via(reg, "jeeves"), "frop")
        r9 = me.monitor(Via(reg, "jeeves"))
        assert await me.receive(timeout=1) == Down(r9, Via(reg, "jeeves"), "noproc")


@virtual_time
async def test_monitor_SUITE_mon_2() -> None:
    """Distributed cases for monitor/2, between two nodes of one Python process."""
    transport = LocalTransport()
    async with (
        Runtime("n0", transport=transport) as rt,
        Runtime("hej1", transport=transport) as n1,
        rt.scope() as me,
    ):
        p2 = await n1.start(Jeeves, None)
        assert p2 is not None and p2.node == "hej1"
        r2 = me.monitor(p2)
        await rt.call(p2, "stop")
        assert await me.receive(timeout=1) == Down(r2, p2, "normal")
        p3 = await n1.start(Jeeves, None)
        r3 = me.monitor(p3)  # type: ignore[arg-type]
        rt.exit(p3, "frop")  # type: ignore[arg-type]
        assert await me.receive(timeout=1) == Down(r3, p3, "frop")
        r4 = me.monitor(p3)  # type: ignore[arg-type]
        assert await me.receive(timeout=1) == Down(r4, p3, "noproc")


@virtual_time
async def test_monitor_SUITE_large_exit() -> None:
    async with Runtime() as rt, rt.scope() as me:
        s0 = ("big", "tuple", "with", ["list", 4563784278])
        s = (s0, repr(s0).encode() * 1000)
        for _ in range(100):
            p = await rt.start(Jeeves, None)
            r = me.monitor(p)
            rt.exit(p, s)
            assert await me.receive(timeout=1) == Down(r, p, s)


@virtual_time
async def test_monitor_SUITE_list_cleanup() -> None:
    async with Runtime() as rt, rt.scope() as me:
        p1 = await rt.start(Jeeves, None, name="jeeves")
        j1 = rt.process(p1)
        assert j1 is not None
        assert _monitors(me) == (0, 0) and _monitors(j1) == (0, 0)
        r1a = me.monitor(p1)
        assert _monitors(me) == (1, 0) and _monitors(j1) == (0, 1)
        assert me.demonitor(r1a)
        assert _monitors(me) == (0, 0) and _monitors(j1) == (0, 0)
        r1b = me.monitor("jeeves")
        assert _monitors(j1) == (0, 1)
        await rt.call(p1, "stop")
        assert await me.receive(timeout=1) == Down(r1b, ("jeeves", rt.node), "normal")
        assert _monitors(me) == (0, 0)
        # the monitoring process crashes: our monitored_by is cleaned up
        p2 = await rt.start(Jeeves, None)
        await rt.call(p2, ("monitor_process", me.pid))
        assert _monitors(me) == (0, 1)
        rt.exit(p2, "frop")
        assert _monitors(me) == (0, 0)


@virtual_time
async def test_monitor_SUITE_named_down() -> None:
    """The DOWN of a named monitor arrives after the name is free."""
    async with Runtime() as rt, rt.scope() as me:
        p = await rt.start(Jeeves, None, name="named_down")
        rt.exit(p, "bang")
        mon = me.monitor("named_down")
        down = await me.receive(timeout=1)
        assert down.ref == mon
        assert rt.whereis("named_down") is None
        await rt.start(Jeeves, None, name="named_down")  # the name can be taken again
