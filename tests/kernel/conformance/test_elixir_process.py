"""Elixir's lib/elixir/test/elixir/process_test.exs, ported on the virtual clock.

One test per upstream test, named after it. Not ported (listed in docs/kernel.md): the process
dictionary, group leaders, labels, aliases, ``Process.info``, ``monitor/2`` options (``:alias``,
``:tag``), ``sleep`` (asyncio's), and "monitor/1 and monitor/2 are inlined" (a compiler check).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from netsuke import Exit, From, Process, ProcessExitedError, Runtime, virtual_time


class Waiter(Process):
    """Waits; on ``"exit_self_normal"`` it sends itself ``exit(self(), :normal)``."""

    def init(self, arg: Any) -> None:
        self.after: list[str] = []

    def handle_call(self, request: Any, from_: From) -> Any:
        if request == "exit_self_normal":
            self.runtime.exit(self.pid, "normal")
            self.after.append("ran on")  # never: the process ends at the exit
            return "unreachable reply"
        return request

    def handle_cast(self, request: Any) -> None:
        if request == "exit_self_normal":
            self.runtime.exit(self.pid, "normal")
            self.after.append("ran on")  # only when trapping exits (the signal is a message)

    def handle_info(self, message: Any) -> None:
        self.after.append(repr(message))


@virtual_time
async def test_process_test_send_after_3_sends_messages_once_expired() -> None:
    async with Runtime() as rt, rt.scope() as me:
        me.send_after(0.001, "hello")
        assert await me.receive(timeout=0.002) == "hello"


@virtual_time
async def test_process_test_send_after_3_returns_a_timer_reference_that_can_be_read_or_cancelled() -> (
    None
):
    async with Runtime() as rt, rt.scope() as me:
        timer = me.send_after(100, "hello")
        assert timer.when() == pytest.approx(asyncio.get_running_loop().time() + 100)
        timer.cancel()
        with pytest.raises(TimeoutError):
            await me.receive(timeout=200)


@virtual_time
async def test_process_test_exit_pid_normal_does_not_cause_the_target_process_to_exit() -> None:
    async with Runtime() as rt, rt.scope(trap_exit=True) as me:
        pid = await rt.start(Waiter, None, link=me.pid)
        assert rt.exit(pid, "normal", sender=me.pid) is True
        with pytest.raises(TimeoutError):
            await me.receive(timeout=0.1)
        assert rt.alive(pid)
        assert rt.exit(pid, "abnormal", sender=me.pid) is True
        assert await me.receive(timeout=1) == Exit(pid, "abnormal")
        assert not rt.alive(pid)


@virtual_time
async def test_process_test_exit_self_normal_causes_the_calling_process_to_exit() -> None:
    async with Runtime() as rt, rt.scope(trap_exit=True) as me:
        pid = await rt.start(Waiter, None, link=me.pid)
        w1 = rt.process(pid)
        assert isinstance(w1, Waiter)
        rt.cast(pid, "exit_self_normal")
        assert await me.receive(timeout=1) == Exit(pid, "normal")
        assert not rt.alive(pid)
        assert w1.after == []  # nothing after exit(self(), :normal) ran
        # from handle_call: the caller learns at once that the server exited normally
        pid2 = await rt.start(Waiter, None, link=me.pid)
        with pytest.raises(ProcessExitedError) as ei:
            await rt.call(pid2, "exit_self_normal", timeout=5)
        assert ei.value.reason == "normal"
        assert await me.receive(timeout=1) == Exit(pid2, "normal")
        # a process that traps exits gets it as a message instead, and lives on
        pid3 = await rt.start(Waiter, None)
        p3 = rt.process(pid3)
        assert isinstance(p3, Waiter)
        p3.trap_exit = True
        rt.cast(pid3, "exit_self_normal")
        await asyncio.sleep(0.01)
        assert rt.alive(pid3)
        assert p3.after == ["ran on", repr(Exit(pid3, "normal"))]
