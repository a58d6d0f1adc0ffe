"""The gen_server of OTP's gen_server_SUITE and Elixir's ``Stack``, in Netsuke's API."""

from __future__ import annotations

from typing import Any

from netsuke import NOREPLY, SHUTDOWN, TIMEOUT, From, Pid, Process, Shutdown


class GS(Process):
    """gen_server_SUITE's callback module. ``owner`` is who gets its reports."""

    hibernate_after = None

    def init(self, arg: Any) -> Any:
        self.state: Any = []
        self.reports: list[Any] = []
        match arg:
            case "stop":
                self.exit("stopped")  # {stop, stopped}
            case "hibernate":
                self.hibernate()
            case ("state", st):
                self.state = st
        return None

    def handle_call(self, request: Any, from_: From) -> Any:
        match request:
            case "started_p":
                return "ok"
            case ("delayed_answer", t):  # {noreply, {reply_to, From}, T}
                self.state = ("reply_to", from_)
                self.set_timeout(t)
                return NOREPLY
            case ("call_within", t):  # {reply, ok, call_within, T}
                self.state = "call_within"
                self.set_timeout(t)
                return "ok"
            case "next_call":
                if self.state == "call_within":
                    self.state = []
                    return "ok"
                return False
            case "hibernate":
                self.hibernate()
                return True
            case "stop":  # {stop, stopped, ok, State}
                self.stop("stopped")
                return "ok"
            case "crash":
                self.exit("crashed")
            case "exit_shutdown":
                self.exit(SHUTDOWN)
            case "stop_shutdown":
                self.stop(SHUTDOWN)
                return NOREPLY
            case "shutdown_reason":
                self.exit(Shutdown("reason"))
            case "stop_shutdown_reason":
                self.stop(Shutdown("stop_reason"))
                return NOREPLY
            case "state":
                return self.state
        raise ValueError(request)

    def handle_cast(self, request: Any) -> None:
        match request:
            case (owner, "handle_cast"):
                self.runtime.send(owner, (self.pid, "handled_cast"))
            case (owner, "delayed_cast", t):
                self.state = ("delayed_cast", owner)
                self.set_timeout(t)
            case "hibernate_now":
                self.hibernate()
            case (owner, "stop"):
                self.stop((owner, "stopped"))

    def handle_info(self, message: Any) -> None:
        match (message, self.state):
            case (m, ("reply_to", from_)) if m is TIMEOUT:
                self.reply(from_, "delayed")
                self.state = []
            case (m, "call_within") if m is TIMEOUT:
                self.state = []
            case (m, ("delayed_cast", owner)) if m is TIMEOUT:
                self.runtime.send(owner, (self.pid, "delayed"))
                self.state = []
            case (m, ("delayed_info", owner)) if m is TIMEOUT:
                self.runtime.send(owner, (self.pid, "delayed_info"))
                self.state = []
            case ((owner, "handle_info"), _):
                self.runtime.send(owner, (self.pid, "handled_info"))
            case ((owner, "delayed_info", t), _):
                self.state = ("delayed_info", owner)
                self.set_timeout(t)
            case ((owner, "stop"), _):
                self.stop((owner, "stopped_info"))
            case ("hibernate_now", _):
                self.hibernate()
            case _:
                self.reports.append(message)

    def terminate(self, reason: Any) -> None:
        match reason:
            case (owner, "stopped") | (owner, "stopped_info") if isinstance(owner, Pid):
                self.runtime.send(owner, (self.pid, reason[1]))
        if self.state == "crash_terminate":
            self.exit(("crash", "terminate"))


class Stack(Process):
    """Elixir's GenServerTest.Stack."""

    def init(self, arg: Any) -> None:
        self.items: list[Any] = list(arg)

    async def handle_call(self, request: Any, from_: From) -> Any:
        match request:
            case "pop":
                return self.items.pop(0)
            case "noreply":
                return NOREPLY
            case "stop_self":
                try:
                    await self.runtime.stop(self.pid)
                except Exception as e:  # the error, as Elixir's catch_exit
                    return e
                return "stopped"
        raise ValueError(request)

    def handle_cast(self, request: Any) -> None:
        match request:
            case ("push", item):
                self.items.insert(0, item)
