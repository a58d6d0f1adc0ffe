from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from netsuke import (
    IGNORE,
    BadTargetError,
    CallSelfError,
    CallTimeoutError,
    From,
    NoProcessError,
    Process,
    ProcessExitedError,
    Runtime,
    StartError,
    call,
    cast,
    virtual_time,
    whereis,
)

from .helpers import Echo, settle


async def test_call_cast_and_send_reach_their_handlers() -> None:
    async with Runtime() as rt:
        pid = await rt.start(Echo, None, name="echo")
        assert await rt.call(pid, "hi") == "hi"
        assert await rt.call("echo", ("x", 1)) == ("x", 1)
        assert rt.cast("echo", "c1")
        assert rt.send("echo", "i1")
        assert await rt.call("echo", "infos") == [("cast", "c1"), "i1"]


async def test_module_level_functions_use_the_current_runtime() -> None:
    async with Runtime() as rt:
        pid = await rt.start(Echo, None, name="m")
        assert whereis("m") == pid
        assert await call("m", 7) == 7
        assert cast("m", "x")


async def test_messages_are_handled_in_order() -> None:
    class Seq(Process):
        def init(self, arg: object) -> None:
            self.seen: list[int] = []

        async def handle_cast(self, n: int) -> None:
            await asyncio.sleep(0)
            self.seen.append(n)

        def handle_call(self, req: object, from_: From) -> list[int]:
            return self.seen

    async with Runtime() as rt:
        pid = await rt.start(Seq)
        assert pid is not None
        for i in range(200):
            rt.cast(pid, i)
        assert await rt.call(pid, "get") == list(range(200))


async def test_call_to_unknown_name_or_dead_pid_fails_at_once() -> None:
    async with Runtime() as rt:
        with pytest.raises(NoProcessError):
            await rt.call("nobody", 1, timeout=100)
        pid = await rt.start(Echo)
        assert pid is not None
        await rt.stop(pid)
        t0 = asyncio.get_running_loop().time()
        with pytest.raises(NoProcessError):
            await rt.call(pid, 1, timeout=100)
        assert asyncio.get_running_loop().time() - t0 < 1
        assert rt.send(pid, "x") is False
        assert rt.cast(pid, "x") is False
        with pytest.raises(NoProcessError):
            rt.send("nobody", "x")


@virtual_time
async def test_call_to_process_that_crashes_while_handling_fails_at_once() -> None:
    async with Runtime() as rt:
        pid = await rt.start(Echo, None)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(ProcessExitedError) as ei:
            await rt.call(pid, "crash", timeout=60)
        assert loop.time() == t0
        assert isinstance(ei.value.reason, ValueError)
        assert isinstance(ei.value.__cause__, ValueError)
        assert not rt.alive(pid)


@virtual_time
async def test_calls_waiting_in_the_mailbox_fail_when_the_process_is_killed() -> None:
    async with Runtime() as rt:
        pid = await rt.start(Echo, None)
        loop = asyncio.get_running_loop()
        busy = asyncio.ensure_future(rt.call(pid, ("sleep", 100), timeout=1000))
        queued = asyncio.ensure_future(rt.call(pid, "next", timeout=1000))
        deferred = asyncio.ensure_future(rt.call(pid, "defer", timeout=1000))
        await settle()
        t0 = loop.time()
        rt.kill(pid)
        for fut in (busy, queued, deferred):
            with pytest.raises(ProcessExitedError) as ei:
                await fut
            assert ei.value.reason == "killed"
        assert loop.time() == t0


@virtual_time
async def test_deferred_calls_fail_when_process_exits() -> None:
    async with Runtime() as rt:
        pid = await rt.start(Echo, None)
        waiting = asyncio.ensure_future(rt.call(pid, "defer", timeout=1000))
        await settle()
        assert await rt.call(pid, ("stop", "shutdown")) == "stopping"
        with pytest.raises(ProcessExitedError):
            await waiting


async def test_deferred_reply_from_another_message() -> None:
    async with Runtime() as rt:
        pid = await rt.start(Echo, None)
        waiters = [asyncio.ensure_future(rt.call(pid, "defer")) for _ in range(3)]
        await settle()
        assert not any(w.done() for w in waiters)
        assert await rt.call(pid, ("release", 42)) == "released"
        assert await asyncio.gather(*waiters) == [42, 42, 42]


@virtual_time
async def test_call_times_out_exactly_and_process_keeps_running() -> None:
    async with Runtime() as rt:
        pid = await rt.start(Echo, None)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(CallTimeoutError) as ei:
            await rt.call(pid, ("sleep", 10), timeout=2.5)
        assert 2.5 <= loop.time() - t0 <= 2.5 + rt.timer_resolution
        assert ei.value.timeout == 2.5
        assert await rt.call(pid, "after", timeout=None) == "after"


async def test_crash_exits_with_exception_and_spares_unrelated_processes() -> None:
    async with Runtime() as rt:
        a = await rt.start(Echo, None)
        b = await rt.start(Echo, None)
        with capture_logs() as logs:
            rt.cast(a, "crash")
            reason = await rt.wait_exit(a, timeout=5)
        assert isinstance(reason, RuntimeError)
        assert rt.alive(b)
        assert await rt.call(b, "still") == "still"
        crash = [e for e in logs if e["event"] == "process_crashed"]
        assert crash and "cast crash" in crash[0]["error"]


async def test_terminate_runs_on_stop_and_on_crash() -> None:
    async with Runtime() as rt:
        log: list[object] = []
        pid = await rt.start(Echo, log)
        await rt.stop(pid, "shutdown")
        assert log[-1] == ("terminate", "shutdown")
        pid = await rt.start(Echo, log)
        with pytest.raises(ProcessExitedError):
            await rt.call(pid, "crash")
        assert log[-1][0] == "terminate" and isinstance(log[-1][1], ValueError)


async def test_stop_from_a_handler_replies_first() -> None:
    async with Runtime() as rt:
        pid = await rt.start(Echo, None)
        assert await rt.call(pid, ("stop", "normal")) == "stopping"
        assert await rt.wait_exit(pid) in ("normal", "noproc")
        assert not rt.alive(pid)


async def test_calling_self_is_refused() -> None:
    class Selfish(Process):
        async def handle_call(self, req: object, from_: From) -> object:
            return await self.runtime.call(self.pid, "again")

    async with Runtime() as rt:
        pid = await rt.start(Selfish)
        with pytest.raises(ProcessExitedError) as ei:
            await rt.call(pid, "go")
        assert isinstance(ei.value.reason, CallSelfError)


async def test_bad_targets_are_usage_errors() -> None:
    async with Runtime() as rt:
        with pytest.raises(BadTargetError):
            await rt.call(123, "x")  # type: ignore[arg-type]
        with pytest.raises(BadTargetError):
            rt.cast(object(), "x")  # type: ignore[arg-type]


async def test_init_failure_ignore_and_async_init() -> None:
    class Failing(Process):
        def init(self, arg: object) -> None:
            raise KeyError("nope")

    class Ignored(Process):
        def init(self, arg: object) -> object:
            return IGNORE

    class Slow(Process):
        async def init(self, arg: object) -> None:
            await asyncio.sleep(0.01)
            self.ready = True

        def handle_call(self, req: object, from_: From) -> object:
            return self.ready

    async with Runtime() as rt:
        with pytest.raises(StartError) as ei:
            await rt.start(Failing, name="f")
        assert isinstance(ei.value.reason, KeyError)
        assert rt.whereis("f") is None
        assert await rt.start(Ignored) is None
        pid = await rt.start(Slow, name="slow")
        assert await rt.call(pid, "ready?") is True


async def test_messages_sent_during_async_init_wait_for_it() -> None:
    class SlowInit(Process):
        async def init(self, arg: object) -> None:
            await asyncio.sleep(0.02)
            self.ready = True

        def handle_call(self, req: object, from_: From) -> object:
            return self.ready

    async with Runtime() as rt:
        starting = asyncio.ensure_future(rt.start(SlowInit, name="s"))
        await settle(3)
        # the name is taken from the start, and calls queue until init is done
        assert await rt.call("s", "ready?") is True
        await starting


async def test_continue_runs_before_other_messages() -> None:
    class Cont(Process):
        def init(self, arg: object) -> None:
            self.steps = ["init"]
            self.continue_with("load")

        async def handle_continue(self, arg: object) -> None:
            await asyncio.sleep(0.01)
            self.steps.append(f"continue:{arg}")

        def handle_call(self, req: object, from_: From) -> object:
            return self.steps

    async with Runtime() as rt:
        pid = await rt.start(Cont)
        assert await rt.call(pid, "steps") == ["init", "continue:load"]


def test_overriding_init_dunder_is_refused() -> None:
    with pytest.raises(TypeError, match="__init__"):

        class Bad(Process):
            def __init__(self) -> None:
                pass


async def test_send_after_delivers_later_and_can_be_cancelled() -> None:
    class Timer(Process):
        def init(self, arg: object) -> None:
            self.got: list[object] = []
            self.send_after(0.01, "tick")
            self.send_after(0.01, "never").cancel()

        def handle_info(self, m: object) -> None:
            self.got.append(m)

        def handle_call(self, req: object, from_: From) -> object:
            return self.got

    async with Runtime() as rt:
        pid = await rt.start(Timer)
        await asyncio.sleep(0.05)
        assert await rt.call(pid, "got") == ["tick"]


class _Leaver(Process):
    """Traps exits; its terminate exits with ``arg`` instead of the reason it was given."""

    def init(self, arg: object) -> None:
        self.trap_exit = True
        self.reason = arg

    def handle_call(self, request: object, from_: From) -> object:
        if request == "exit":
            self.exit(("left", "by", "exit"))
        return request

    def terminate(self, reason: object) -> None:
        if self.reason is not None:
            self.exit(self.reason)


@virtual_time
async def test_terminate_chooses_the_exit_reason_also_when_its_supervisor_stops_it() -> None:
    from netsuke import ChildSpec, Down, Shutdown, Supervisor, SupervisorSpec

    async with Runtime() as rt, rt.scope() as me:
        spec = SupervisorSpec([ChildSpec(_Leaver, Shutdown("drained"), id="w")])
        sup = await rt.start(Supervisor, spec)
        assert sup is not None
        (child,) = await Supervisor.which_children(sup, runtime=rt)
        assert child.pid is not None
        ref = me.monitor(child.pid)
        await Supervisor.terminate_child(sup, "w", runtime=rt)
        assert await me.receive(timeout=1) == Down(ref, child.pid, Shutdown("drained"))
        # from a handle_* callback: terminate(reason) runs, then the process exits with it
        pid = await rt.start(_Leaver, None)
        with pytest.raises(ProcessExitedError) as ei:
            await rt.call(pid, "exit")
        assert ei.value.reason == ("left", "by", "exit")
        # from init: the start fails with that reason
        with pytest.raises(StartError) as se:
            await rt.start(_Exiting, None)
        assert se.value.reason == "no thanks"


class _Exiting(Process):
    def init(self, arg: object) -> None:
        self.exit("no thanks")


@virtual_time
async def test_a_bad_call_timeout_raises_before_the_request_is_sent() -> None:
    from netsuke import ArgumentError

    async with Runtime() as rt:
        pid = await rt.start(Echo, None)
        for bad in (-1, "5", float("nan"), float("inf"), True):
            with pytest.raises(ArgumentError):
                await rt.call(pid, ("stop", "normal"), timeout=bad)  # type: ignore[arg-type]
        await settle()
        assert rt.alive(pid)  # type: ignore[arg-type]
        assert await rt.call(pid, "infos", timeout=1) == []
        assert await rt.call(pid, "x", timeout=1) == "x"  # an int timeout is fine


@virtual_time
async def test_a_scope_that_raises_exit_now_exits_with_its_reason() -> None:
    from netsuke import ExitNow

    async with Runtime() as rt, rt.scope() as watcher:
        with pytest.raises(ExitNow):
            async with rt.scope() as me:
                ref = watcher.monitor(me.pid)
                raise ExitNow(("done", 1))
        down = await watcher.receive(timeout=1)
        assert (down.ref, down.reason) == (ref, ("done", 1))
