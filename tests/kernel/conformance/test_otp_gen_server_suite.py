"""OTP's lib/stdlib/test/gen_server_SUITE.erl, ported to Netsuke on the virtual clock.

One test per upstream test case, named after it. Not ported (BEAM-only, listed in
docs/kernel.md): call_remote*, call_remote_n*, cast_fast, abcast, multicall, multicall_down
(the distribution protocol), spec_init* and otp_5854 (``gen_server:enter_loop`` and proc_lib),
call_format_status, error_format_status, get_state, replace_state (``sys``),
stop8..stop10 (remote nodes). call_with_huge_message_queue is ported without its wall-clock
ratio: a reply goes to a future, so the caller's mailbox is never scanned.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from structlog.testing import capture_logs

from netsuke import (
    AlreadyStartedError,
    ArgumentError,
    CallTimeoutError,
    Exit,
    NoProcessError,
    ProcessExitedError,
    Registry,
    Runtime,
    Shutdown,
    StartError,
    Via,
    virtual_time,
)

from .gen import GS


@virtual_time
async def test_gen_server_SUITE_start() -> None:
    async with Runtime() as rt, rt.scope(trap_exit=True) as me:
        # anonymous
        pid0 = await rt.start(GS, [])
        assert await rt.call(pid0, "started_p") == "ok"
        assert await rt.call(pid0, "stop") == "ok"
        await rt.wait_exit(pid0)
        with pytest.raises(NoProcessError):
            await rt.call(pid0, "started_p", timeout=0.001)
        # anonymous with ignore / with stop
        assert await rt.start(Ignoring, None) is None
        with pytest.raises(StartError) as ei:
            await rt.start(GS, "stop")
        assert ei.value.reason == "stopped"
        # anonymous linked
        pid1 = await rt.start(GS, [], link=me.pid)
        assert await rt.call(pid1, "stop") == "ok"
        assert await me.receive(timeout=5) == Exit(pid1, "stopped")
        # local register (and linked)
        pid2 = await rt.start(GS, [], name="my_test_name", link=me.pid)
        assert await rt.call("my_test_name", "started_p") == "ok"
        with pytest.raises(AlreadyStartedError) as ae:
            await rt.start(GS, [], name="my_test_name")
        assert ae.value.pid == pid2
        assert await rt.call("my_test_name", "stop") == "ok"
        assert await me.receive(timeout=5) == Exit(pid2, "stopped")
        with pytest.raises(NoProcessError):
            await rt.call(pid2, "started_p", timeout=0.01)
        # via register (and linked)
        reg = Registry(rt, name="dummy_via")
        pid6 = await rt.start(GS, [], name=Via(reg, "my_test_name"), link=me.pid)
        with pytest.raises(AlreadyStartedError) as ae:
            await rt.start(GS, [], name=Via(reg, "my_test_name"))
        assert ae.value.pid == pid6
        assert await rt.call(Via(reg, "my_test_name"), "stop") == "ok"
        assert await me.receive(timeout=5) == Exit(pid6, "stopped")
        with pytest.raises(TimeoutError):
            await me.receive(timeout=0.001)


@virtual_time
async def test_gen_server_SUITE_stop1() -> None:
    async with Runtime() as rt:
        pid = await rt.start(GS, [])
        await rt.stop(pid)
        assert not rt.alive(pid)
        with pytest.raises(NoProcessError):
            await rt.stop(pid)


@virtual_time
async def test_gen_server_SUITE_stop2() -> None:
    async with Runtime() as rt:
        pid = await rt.start(GS, [])
        await rt.stop(pid, "other_reason", None)
        assert not rt.alive(pid)
        assert await rt.wait_exit(pid) == "noproc"


@virtual_time
async def test_gen_server_SUITE_stop3() -> None:
    """Anonymous, invalid timeout: the stop fails and the server keeps running."""
    async with Runtime() as rt:
        pid = await rt.start(GS, [])
        for bad in ("invalid_timeout", -1, float("nan"), True):
            with pytest.raises(ArgumentError):
                await rt.stop(pid, "other_reason", bad)  # type: ignore[arg-type]
        await asyncio.sleep(1)
        assert rt.alive(pid)
        assert await rt.call(pid, "started_p") == "ok"
        await rt.stop(pid)
        assert not rt.alive(pid)


@virtual_time
async def test_gen_server_SUITE_stop4() -> None:
    async with Runtime() as rt:
        pid = await rt.start(GS, [], name="to_stop")
        await rt.stop("to_stop")
        assert not rt.alive(pid)
        with pytest.raises(NoProcessError):
            await rt.stop("to_stop")


@virtual_time
async def test_gen_server_SUITE_stop7() -> None:
    async with Runtime() as rt:
        reg = Registry(rt, name="dummy_via")
        pid = await rt.start(GS, [], name=Via(reg, "to_stop"))
        await rt.stop(Via(reg, "to_stop"))
        assert not rt.alive(pid)
        with pytest.raises(NoProcessError):
            await rt.stop(Via(reg, "to_stop"))


@virtual_time
async def test_gen_server_SUITE_crash() -> None:
    async with Runtime() as rt, rt.scope(trap_exit=True) as me:
        cases: list[tuple[str, Any]] = [
            ("shutdown_reason", Shutdown("reason")),
            ("stop_shutdown_reason", Shutdown("stop_reason")),
            ("exit_shutdown", "shutdown"),
            ("stop_shutdown", "shutdown"),
        ]
        with capture_logs() as logs:
            for request, reason in cases:
                pid = await rt.start(GS, ("state", request), link=me.pid)
                with pytest.raises(ProcessExitedError) as ei:
                    await rt.call(pid, request)
                assert ei.value.reason == reason
                assert await me.receive(timeout=5) == Exit(pid, reason)
        # none of these is a crash report
        assert not [e for e in logs if e["event"] == "process_crashed"]
        pid4 = await rt.start(GS, ("state", "state4"))
        with capture_logs() as logs, pytest.raises(ProcessExitedError) as ei:
            await rt.call(pid4, "crash")
        assert ei.value.reason == "crashed"
        # this one is a crash report
        (report,) = [e for e in logs if e["event"] == "process_crashed"]
        assert report["pid"] == repr(pid4) and report["error"] == repr("crashed")


@virtual_time
async def test_gen_server_SUITE_call() -> None:
    """Every return shape of handle_call, with callback timeouts on the virtual clock."""
    async with Runtime() as rt:
        loop = asyncio.get_running_loop()
        await rt.start(GS, [], name="my_test_name")
        assert await rt.call("my_test_name", "started_p") == "ok"
        t0 = loop.time()
        assert await rt.call("my_test_name", ("delayed_answer", 1)) == "delayed"
        assert loop.time() - t0 == pytest.approx(1, abs=0.01)
        # two requests within a specified time
        assert await rt.call("my_test_name", ("call_within", 1)) == "ok"
        await asyncio.sleep(0.5)
        assert await rt.call("my_test_name", "next_call") == "ok"
        assert await rt.call("my_test_name", ("call_within", 1)) == "ok"
        await asyncio.sleep(1.5)
        assert await rt.call("my_test_name", "next_call") is False
        # timeout call
        assert await rt.call("my_test_name", ("delayed_answer", 0.001), timeout=0.03) == "delayed"
        with pytest.raises(CallTimeoutError):
            await rt.call("my_test_name", ("delayed_answer", 0.03), timeout=0.001)


@virtual_time
async def test_gen_server_SUITE_cast() -> None:
    async with Runtime() as rt, rt.scope() as me:
        pid = await rt.start(GS, [], name="my_test_name")
        assert rt.cast("my_test_name", (me.pid, "handle_cast"))
        assert await me.receive(timeout=1) == (pid, "handled_cast")
        assert rt.cast("my_test_name", (me.pid, "delayed_cast", 0.001))
        assert await me.receive(timeout=1) == (pid, "delayed")
        assert rt.cast("my_test_name", (me.pid, "stop"))
        assert await me.receive(timeout=1) == (pid, "stopped")


@virtual_time
async def test_gen_server_SUITE_info() -> None:
    async with Runtime() as rt, rt.scope() as me:
        pid = await rt.start(GS, [], name="my_test_name")
        rt.send(pid, (me.pid, "handle_info"))
        assert await me.receive(timeout=1) == (pid, "handled_info")
        rt.send(pid, (me.pid, "delayed_info", 0.001))
        assert await me.receive(timeout=1) == (pid, "delayed_info")
        rt.send(pid, (me.pid, "stop"))
        assert await me.receive(timeout=1) == (pid, "stopped_info")


@virtual_time
async def test_gen_server_SUITE_hibernate() -> None:
    async with Runtime() as rt, rt.scope(trap_exit=True) as me:
        pid0 = await rt.start(GS, "hibernate", name="h0", link=me.pid)
        p0 = rt.process(pid0)
        assert p0 is not None
        await asyncio.sleep(0.01)
        assert p0.hibernating
        assert await rt.call("h0", "stop") == "ok"
        assert await me.receive(timeout=5) == Exit(pid0, "stopped")

        pid = await rt.start(GS, [], name="h", link=me.pid)
        p = rt.process(pid)
        assert p is not None
        assert await rt.call("h", "started_p") == "ok"
        assert not p.hibernating  # hibernate_after=None: the task stays
        assert await rt.call("h", "hibernate") is True
        await asyncio.sleep(0.01)
        assert p.hibernating
        assert await rt.call("h", "started_p") == "ok"
        assert not p.hibernating
        rt.cast("h", "hibernate_now")
        await asyncio.sleep(0.01)
        assert p.hibernating
        rt.send(pid, "hibernate_now")  # a message wakes it, then it hibernates again
        await asyncio.sleep(0.01)
        assert p.hibernating
        assert await rt.call("h", "stop") == "ok"
        assert await me.receive(timeout=5) == Exit(pid, "stopped")


@virtual_time
async def test_gen_server_SUITE_otp_7669() -> None:
    """If init fails (ignore or stop), the name is free when start returns."""
    async with Runtime() as rt:
        reg = Registry(rt, name="glob")
        for _ in range(100):
            assert await rt.start(Ignoring, None, name="gen_server_SUITE") is None
            assert rt.whereis("gen_server_SUITE") is None
            assert await rt.start(Ignoring, None, name=Via(reg, "gen_server_SUITE")) is None
            assert reg.whereis("gen_server_SUITE") is None
        for _ in range(10):
            with pytest.raises(StartError):
                await rt.start(GS, "stop", name="gen_server_SUITE")
            assert rt.whereis("gen_server_SUITE") is None
            with pytest.raises(StartError):
                await rt.start(GS, "stop", name=Via(reg, "gen_server_SUITE"))
            assert reg.whereis("gen_server_SUITE") is None


@virtual_time
async def test_gen_server_SUITE_terminate_crash_format() -> None:
    """terminate may exit with its own reason: the process exits {crash, terminate}."""
    async with Runtime() as rt, rt.scope(trap_exit=True) as me:
        pid = await rt.start(GS, ("state", "crash_terminate"), link=me.pid)
        assert await rt.call(pid, "stop") == "ok"
        assert await me.receive(timeout=5) == Exit(pid, ("crash", "terminate"))


@virtual_time
async def test_gen_server_SUITE_call_with_huge_message_queue() -> None:
    async with Runtime() as rt, rt.scope() as me:
        pid = await rt.start(GS, [])
        for n in range(100_000):
            rt.send(me.pid, ("msg", n))
        for _ in range(1000):
            assert await rt.call(pid, "started_p", timeout=None) == "ok"
        assert me._mailbox is not None and len(me._mailbox) == 100_000
        assert await me.receive(timeout=0) == ("msg", 0)


class Ignoring(GS):
    def init(self, arg: Any) -> Any:
        from netsuke import IGNORE

        return IGNORE
