"""The agent SDK (see ``netsuke.manager.sdk``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ._errors import CommandError
from ._protocol import (
    AGENT_COMMAND,
    AGENT_METRICS,
    AGENT_QUERY,
    AGENT_RESPONSE,
    AGENT_STATUS,
    Command,
    encode,
    now_iso,
    response,
)

HandlerFn = Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]]


class PackageAgent:
    """One agent program, connected to NATS, answering commands and sending heartbeats."""

    def __init__(
        self,
        *,
        agent_id: str,
        agent_type: str,
        name: str,
        version: str,
        nats_url: str,
        heartbeat_interval: float = 10.0,
    ) -> None:
        self.agent_id = agent_id
        self.agent_type = agent_type
        self.name = name
        self.version = version
        self.nats_url = nats_url
        self.heartbeat_interval = heartbeat_interval
        self._commands: dict[str, HandlerFn] = {}
        self._queries: dict[str, HandlerFn] = {}
        self._progress: dict[str, Any] = {}
        self._metrics: dict[str, Any] = {}
        self._counts = {"commands": 0, "queries": 0, "errors": 0}
        self._stop = asyncio.Event()
        self._nc: Any = None
        self.started = time.monotonic()
        self.status = "starting"

    @classmethod
    def from_env(cls) -> PackageAgent:
        """Read the seed's variables; a missing one is a clear error."""
        missing = [k for k in ("AGENT_ID", "NATS_URL") if not os.environ.get(k)]
        if missing:
            raise SystemExit(f"netsuke agent: missing environment variables: {', '.join(missing)}")
        agent_id = os.environ["AGENT_ID"]
        return cls(
            agent_id=agent_id,
            agent_type=os.environ.get("AGENT_TYPE", agent_id),
            name=os.environ.get("AGENT_NAME", agent_id),
            version=os.environ.get("AGENT_VERSION", "0.0.0"),
            nats_url=os.environ["NATS_URL"],
            heartbeat_interval=float(os.environ.get("AGENT_HEARTBEAT_INTERVAL", "10")),
        )

    # -- registration -----------------------------------------------------------------------

    def command(self, name: str) -> Callable[[HandlerFn], HandlerFn]:
        def deco(fn: HandlerFn) -> HandlerFn:
            self._commands[name] = fn
            return fn

        return deco

    def query(self, name: str) -> Callable[[HandlerFn], HandlerFn]:
        def deco(fn: HandlerFn) -> HandlerFn:
            self._queries[name] = fn
            return fn

        return deco

    def progress(self, **values: Any) -> None:
        """Record progress; the next heartbeat carries it (with ``updated_at``)."""
        self._progress.update(values)
        self._progress["updated_at"] = now_iso()

    def progress_value(self, key: str, default: Any = None) -> Any:
        return self._progress.get(key, default)

    def set_metric(self, name: str, value: float) -> None:
        self._metrics[name] = value

    # -- running ----------------------------------------------------------------------------

    def run(self, main: Callable[[PackageAgent], Awaitable[None]] | None = None) -> None:
        """Run until SIGTERM/SIGINT or the ``stop`` command; exit 0 after a graceful stop."""
        asyncio.run(self.serve(main))

    def request_stop(self) -> None:
        self._stop.set()

    async def serve(self, main: Callable[[PackageAgent], Awaitable[None]] | None = None) -> None:
        import nats

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        self._nc = await nats.connect(self.nats_url, name=f"agent-{self.agent_id}")
        await self._nc.subscribe(AGENT_COMMAND.format(agent_id=self.agent_id), cb=self._on_command)
        await self._nc.subscribe(AGENT_QUERY.format(agent_id=self.agent_id), cb=self._on_query)
        # subscribed at the server before the first heartbeat says so (a plain flush() can
        # overtake the SUBs: see netsuke._nats_flush)
        from netsuke._nats_flush import flush_subscriptions

        await flush_subscriptions(self._nc)
        self.status = "running"
        tasks = [asyncio.create_task(self._heartbeats())]
        if main is not None:
            tasks.append(asyncio.create_task(self._run_main(main)))
        await self._stop.wait()
        self.status = "stopping"
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._publish_status()
            await self._nc.drain()

    async def _run_main(self, main: Callable[[PackageAgent], Awaitable[None]]) -> None:
        await main(self)

    async def _heartbeats(self) -> None:
        while True:
            await self._publish_status()
            await self._nc.publish(AGENT_METRICS, encode(self._metrics_body()))
            await asyncio.sleep(self.heartbeat_interval)

    def _status_body(self) -> dict[str, Any]:
        return {
            "agent_id": self.agent_id,
            "status": self.status,
            "pid": os.getpid(),
            "metadata": {
                "progress": dict(self._progress),
                "type": self.agent_type,
                "version": self.version,
                "uptime_seconds": time.monotonic() - self.started,
            },
            "timestamp": now_iso(),
        }

    def _metrics_body(self) -> dict[str, Any]:
        return {
            "agent_id": self.agent_id,
            "metrics": {**self._counts, **self._metrics},
            "timestamp": now_iso(),
        }

    async def _publish_status(self) -> None:
        await self._nc.publish(AGENT_STATUS, encode(self._status_body()))

    async def _on_command(self, msg: Any) -> None:
        self._counts["commands"] += 1
        await self._answer(msg, self._commands, self._builtin_command)

    async def _on_query(self, msg: Any) -> None:
        self._counts["queries"] += 1
        await self._answer(msg, self._queries, self._builtin_query)

    async def _answer(
        self,
        msg: Any,
        handlers: dict[str, HandlerFn],
        builtin: Callable[[Command], dict[str, Any] | None],
    ) -> None:
        try:
            cmd = Command.parse(msg.data)
            if cmd.agent_id not in (None, self.agent_id):
                raise CommandError("wrong_agent", f"this is agent {self.agent_id!r}")
            fn = handlers.get(cmd.command)
            if fn is not None:
                result = await fn(cmd.params)
            else:
                result = builtin(cmd)
            body = response(cmd.command, self.agent_id, result=result or {}, command_id=cmd.id)
        except CommandError as exc:
            self._counts["errors"] += 1
            body = response("", self.agent_id, error=exc)
            with contextlib.suppress(Exception):
                body["command"] = json.loads(msg.data).get("command", "")
        except Exception as exc:  # a handler's bug is an error response, not a dead agent
            self._counts["errors"] += 1
            err = CommandError("handler_failed", f"{type(exc).__name__}: {exc}")
            body = response("", self.agent_id, error=err)
        data = encode(body)
        if msg.reply:
            await self._nc.publish(msg.reply, data)
        await self._nc.publish(AGENT_RESPONSE.format(agent_id=self.agent_id), data)

    def _builtin_command(self, cmd: Command) -> dict[str, Any] | None:
        if cmd.command == "stop":
            asyncio.get_running_loop().call_soon(self._stop.set)
            return {"stopping": True}
        if cmd.command == "ping":
            return {"pong": True}
        raise CommandError("unknown_command", f"unknown command {cmd.command!r}")

    def _builtin_query(self, cmd: Command) -> dict[str, Any] | None:
        if cmd.command == "status":
            return self._status_body()
        if cmd.command == "metrics":
            return self._metrics_body()["metrics"]  # type: ignore[no-any-return]
        if cmd.command == "progress":
            return dict(self._progress)
        raise CommandError("unknown_command", f"unknown query {cmd.command!r}")
