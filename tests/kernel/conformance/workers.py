"""The children of the conformance tests, after OTP's ``supervisor_1``/``supervisor_3`` and
Elixir's test workers, and the helpers that mirror the suites' ``terminate``/``check_exit``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from netsuke import IGNORE, Exit, From, Pid, Process, Runtime, StartInfo

from ..helpers import settle


@dataclass
class Ctl:
    """Shared, mutable control of a worker's starts (a test flips it between restarts).

    ``fail``: every start raises; ``fail_next``: that many next starts raise; ``fail_restarts``: starts after the first raise (OTP's
    ``start_child(error)``); ``ignore``/``ignore_restarts``: return ``IGNORE``; ``info``: return
    ``StartInfo(info)``; ``stop_delay``: seconds ``terminate`` takes; ``fail_delay``: seconds a failing start
    takes (OTP's ``supervisor_deadlock``). ``starts`` counts the tries, ``events`` records ``("start"|"stop", tag)``.
    """

    tag: Any = None
    fail: bool = False
    fail_next: int = 0
    fail_restarts: bool = False
    ignore: bool = False
    ignore_restarts: bool = False
    info: Any = None
    stop_delay: float = 0.0
    fail_delay: float = 0.0
    starts: int = 0
    events: list[Any] = field(default_factory=list)


class Worker(Process):
    """A server that traps exits (an exit signal from another process than its supervisor makes
    it stop with that reason, as ``supervisor_1`` does): ``"die"`` makes it exit ``died``, ``"stop"`` exit ``normal``,
    ``("exit", reason)`` exit with ``reason``, ``("sleep", s)`` sleep (it then answers nothing,
    so a shutdown has to wait for it)."""

    async def init(self, ctl: Ctl) -> Any:
        self.ctl = ctl
        ctl.starts += 1
        fail = ctl.fail or (ctl.fail_restarts and ctl.starts > 1) or ctl.fail_next > 0
        if fail:
            ctl.fail_next = max(0, ctl.fail_next - 1)
            if ctl.fail_delay:
                await asyncio.sleep(ctl.fail_delay)
            raise RuntimeError("error")
        if ctl.ignore or (ctl.ignore_restarts and ctl.starts > 1):
            return IGNORE
        self.trap_exit = True
        ctl.events.append(("start", ctl.tag))
        return StartInfo(ctl.info) if ctl.info is not None else None

    async def handle_info(self, message: Any) -> None:
        match message:
            case "die":
                self.stop("died")
            case "stop":
                self.stop("normal")
            case ("exit", reason):
                self.stop(reason)
            case ("sleep", seconds):
                await asyncio.sleep(seconds)
            case Exit(reason=reason):  # an exit signal from a process that is not the parent
                self.stop(reason)

    def handle_call(self, request: Any, from_: From) -> Any:
        return request

    async def terminate(self, reason: Any) -> None:
        if self.ctl.stop_delay:
            await asyncio.sleep(self.ctl.stop_delay)
        self.ctl.events.append(("stop", self.ctl.tag))


@dataclass
class Exits:
    """The argument of :class:`ExitsInTerminate`: the ``reason`` it exits with, and the pids of
    every start (a restart would add one)."""

    reason: Any
    started: list[Pid] = field(default_factory=list)


class ExitsInTerminate(Process):
    """OTP's ``supervisor_4`` (``terminate(_, {Reason}) -> exit(Reason)``) and Elixir's
    ``fn -> Process.flag(:trap_exit, true); receive(do: (_ -> exit(reason))) end`` child: it
    traps exits and, when its supervisor shuts it down, exits with the reason it was started
    with (``self.exit`` in ``terminate``, issue 13), not with ``shutdown``. ``"stop"`` stops it
    ``normal`` (and ``terminate`` still exits with its reason)."""

    async def init(self, arg: Exits) -> None:
        self.trap_exit = True
        self.arg = arg
        arg.started.append(self.pid)

    def handle_call(self, request: Any, from_: From) -> Any:
        return request

    async def handle_info(self, message: Any) -> None:
        if message == "stop":
            self.stop("normal")

    async def terminate(self, reason: Any) -> None:
        self.exit(self.arg.reason)


async def terminate(rt: Runtime, pid: Any, how: Any) -> Any:
    """OTP's ``terminate/4``: end ``pid`` by ``how`` (``"kill"``, ``"shutdown"``, a
    ``Shutdown``, ``"normal"`` (it stops itself), ``"abnormal"`` (it exits ``died``)) and wait
    until it is gone and its supervisor has seen it. Returns the exit reason."""
    assert isinstance(pid, Pid), pid
    done = asyncio.ensure_future(rt.wait_exit(pid))
    await asyncio.sleep(0)
    if how == "kill":
        rt.kill(pid)
    elif how == "normal":
        rt.send(pid, "stop")
    elif how == "abnormal":
        rt.send(pid, "die")
    else:
        rt.exit(pid, how)
    reason = await asyncio.wait_for(done, 60)
    await settle(20)
    return reason


async def exits_within(rt: Runtime, pid: Any, seconds: float) -> bool:
    """OTP's ``check_exit([Pid], Timeout)``: whether ``pid`` exits within ``seconds``."""
    try:
        await rt.wait_exit(pid, timeout=seconds)
    except TimeoutError:
        return False
    return True


def watch(rt: Runtime, pid: Any) -> asyncio.Future[Any]:
    """A future of ``pid``'s exit reason, taken now (``check_exit_reason`` of the suites)."""
    p = rt.process(pid)
    if p is None:
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result("noproc")
        return done
    return rt._exit_future(p)


def pids(rows: list[Any]) -> list[Any]:
    return [r.pid for r in rows]
