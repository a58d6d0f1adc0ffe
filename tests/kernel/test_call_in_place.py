"""``Process._call_in_place``: a call answered in the receiving task (the NATS transport's path
for calls from other nodes) keeps every semantic of a call handled by the process's own task."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from netsuke import NOREPLY, TIMEOUT, From, Process, ProcessExitedError, Runtime
from netsuke.kernel._process import F_DEAD


class Echo(Process):
    def init(self, arg: Any) -> None:
        self.seen: list[Any] = []
        self.terminated: Any = None
        self.pending: From | None = None

    def handle_call(self, request: Any, from_: From) -> Any:
        self.seen.append(request)
        if request == "crash":
            raise ValueError("boom")
        if request == "stop":
            self.stop("done")
            return "stopping"
        if request == "exit":
            self.exit("bye")
        if request == "self-kill":
            self.runtime.exit(self.pid, "kill")
        if request == "later":
            self.pending = from_
            return NOREPLY
        if request == "timeout":
            self.set_timeout(0)
            return "armed"
        if request == "hibernate":
            self.hibernate()
            return "ok"
        return request

    def handle_cast(self, request: Any) -> None:
        self.seen.append(("cast", request))
        if request == "answer" and self.pending is not None:
            self.reply(self.pending, "answered")

    def handle_info(self, message: Any) -> None:
        self.seen.append(("info", message))

    def terminate(self, reason: Any) -> None:
        self.terminated = reason


class AsyncEcho(Process):
    async def handle_call(self, request: Any, from_: From) -> Any:
        return request


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def in_place(rt: Runtime, p: Process, request: Any) -> tuple[bool, asyncio.Future[Any]]:
    fut: asyncio.Future[Any] = rt._loop.create_future()
    return p._call_in_place(From(request, fut)), fut


async def test_idle_process_answers_in_place_parked_or_hibernated() -> None:
    async with Runtime() as rt:
        pid = await rt.start(Echo)
        p = rt.process(pid)
        assert isinstance(p, Echo)
        assert p.hibernating  # never had a message: no task
        done, fut = in_place(rt, p, 1)
        assert done and fut.result() == 1
        assert p.hibernating  # answered without a task
        rt.cast(pid, "wake")
        await settle()
        assert not p.hibernating and p._waiter is not None  # parked on its mailbox
        done, fut = in_place(rt, p, 2)
        assert done and fut.result() == 2
        assert await rt.call(pid, 3) == 3  # the parked task still serves the mailbox
        assert p.seen == [1, ("cast", "wake"), 2, 3]


async def test_not_in_place_when_busy_async_or_messages_wait() -> None:
    async with Runtime() as rt:
        pid = await rt.start(Echo)
        p = rt.process(pid)
        assert isinstance(p, Echo)
        rt.cast(pid, "queued")  # a message waits: the call must come after it
        done, _ = in_place(rt, p, "x")
        assert not done
        await settle()
        apid = await rt.start(AsyncEcho)
        ap = rt.process(apid)
        assert ap is not None
        done, _ = in_place(rt, ap, "x")
        assert not done  # an async handle_call needs the process's task


async def test_crash_in_place_fails_the_caller_and_runs_terminate() -> None:
    async with Runtime() as rt:
        pid = await rt.start(Echo)
        p = rt.process(pid)
        assert isinstance(p, Echo)
        done, fut = in_place(rt, p, "crash")
        assert done
        with pytest.raises(ProcessExitedError) as ei:
            await asyncio.wait_for(fut, 5)
        assert isinstance(ei.value.reason, ValueError)
        assert p._flags & F_DEAD
        assert isinstance(p.terminated, ValueError)


async def test_stop_exit_and_self_kill_in_place() -> None:
    async with Runtime() as rt:
        pid = await rt.start(Echo)
        p = rt.process(pid)
        assert isinstance(p, Echo)
        done, fut = in_place(rt, p, "stop")
        assert done and fut.result() == "stopping"  # the reply goes first, as in OTP
        assert await rt.wait_exit(pid, timeout=5) == "done"
        assert p.terminated == "done"

        pid = await rt.start(Echo)
        p = rt.process(pid)
        assert isinstance(p, Echo)
        _, fut = in_place(rt, p, "exit")
        with pytest.raises(ProcessExitedError):
            await asyncio.wait_for(fut, 5)
        assert rt.exit_reason_of(p) == "bye"
        assert p.terminated == "bye"

        pid = await rt.start(Echo)
        p = rt.process(pid)
        assert isinstance(p, Echo)
        _, fut = in_place(rt, p, "self-kill")
        with pytest.raises(ProcessExitedError):
            await asyncio.wait_for(fut, 5)
        assert p._flags & F_DEAD
        assert rt.exit_reason_of(p) == "killed"
        assert p.terminated is None  # killed: terminate does not run


async def test_deferred_reply_timeout_and_hibernate_in_place() -> None:
    async with Runtime() as rt:
        pid = await rt.start(Echo)
        p = rt.process(pid)
        assert isinstance(p, Echo)
        done, fut = in_place(rt, p, "later")
        assert done and not fut.done()
        rt.cast(pid, "answer")
        assert await asyncio.wait_for(fut, 5) == "answered"

        done, fut = in_place(rt, p, "timeout")
        assert done and fut.result() == "armed"
        for _ in range(200):
            if ("info", TIMEOUT) in p.seen:
                break
            await asyncio.sleep(0.01)
        assert ("info", TIMEOUT) in p.seen

        rt.cast(pid, "wake")
        await settle()
        assert not p.hibernating
        done, fut = in_place(rt, p, "hibernate")
        assert done and fut.result() == "ok"
        for _ in range(200):
            if p.hibernating:
                break
            await asyncio.sleep(0.01)
        assert p.hibernating
