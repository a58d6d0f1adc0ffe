"""The AgentManager: a supervisor of OS processes, commanded over NATS (seed 003).

``start()`` connects to NATS, loads what the state store says, discovers packages and starts
those that should run; a discovery loop picks up added, changed and removed packages every
``discovery_interval``; a monitor loop marks agents ``inactive`` when their heartbeats stop and
resets restart backoff after a healthy period; a cleanup loop forgets what removed packages
left behind every ``cleanup_interval`` (stored states, captured logs). ``stop()`` stops every
agent (SIGTERM to its group, wait, SIGKILL) and leaves the desired states in the store, so the
next start restarts what was running. See ``docs/manager.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from ._config import ManagerConfig
from ._discovery import AgentDiscovery
from ._errors import CommandError
from ._logs import AgentLog
from ._manifest import PackageManifest
from ._observe import ManagerCollector
from ._process import AgentProcess, agent_environment, exit_reason
from ._protocol import (
    AGENT_COMMAND,
    AGENT_MANAGER_COMMAND,
    AGENT_MANAGER_QUERY,
    AGENT_MANAGER_RESPONSE,
    AGENT_METRICS,
    AGENT_STATUS,
    Command,
    encode,
    now_iso,
    response,
)
from ._registry import AgentRecord, AgentRegistry, AgentStatus
from ._state import MemoryStateStore, StateStore, StoredAgent

log = structlog.get_logger("netsuke.manager")

Handler = Callable[[Command], Awaitable[dict[str, Any]]]

_QUERIES = {"status", "list", "metrics", "logs", "health", "packages", "history"}
_COMMANDS = {"start", "stop", "restart", "discover", "send"} | _QUERIES
_IDEMPOTENCY_CACHE = 1000
#: A captured log file: ``<agent_id>.log`` or a rotated ``<agent_id>.log.<n>``.
_LOG_FILE = re.compile(r"^(?P<agent_id>.+)\.log(?:\.\d+)?$")
CONNECT_TIMEOUT = 10.0
_Write = tuple[StoredAgent, dict[str, Any], dict[str, Any]] | asyncio.Future[None]


class AgentManager:
    def __init__(self, config: ManagerConfig, *, state_store: StateStore | None = None) -> None:
        self.config = config
        self.discovery = AgentDiscovery(config.packages.dir)
        self.registry = AgentRegistry()
        self.state_store: StateStore = state_store or MemoryStateStore()
        self._running = False
        self._nc: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stored: dict[str, StoredAgent] = {}
        self._writes: asyncio.Queue[_Write | None] = asyncio.Queue()
        self._done: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._collector = ManagerCollector(self)
        self.started_at = time.monotonic()

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def nats_url(self) -> str:
        return self.config.nats.url

    async def start(self) -> None:
        """Start the agent manager."""
        import nats

        svc = self.config.service
        nc_opts: dict[str, Any] = {
            "name": svc.name,
            "max_reconnect_attempts": -1,
            "error_cb": _nats_error,
            "disconnected_cb": self._nats_disconnected,
            "reconnected_cb": _nats_reconnected,
        }
        if self.config.nats.user is not None:
            nc_opts["user"] = self.config.nats.user
            nc_opts["password"] = self.config.nats.password
        try:  # reconnects forever once connected, but the first connect is bounded
            self._nc = await asyncio.wait_for(
                nats.connect(self.config.nats.url, **nc_opts), CONNECT_TIMEOUT
            )
        except TimeoutError:
            raise ConnectionError(
                f"no NATS server answered at {self.config.nats.url} within {CONNECT_TIMEOUT:.0f} s"
            ) from None
        await self._nc.subscribe(AGENT_MANAGER_COMMAND, cb=self._on_command)
        await self._nc.subscribe(AGENT_MANAGER_QUERY, cb=self._on_query)
        await self._nc.subscribe(AGENT_STATUS, cb=self._on_status)
        await self._nc.subscribe(AGENT_METRICS, cb=self._on_metrics)
        # the server has our interest: a command sent now is answered (a plain flush() can
        # overtake the SUBs: see netsuke._nats_flush)
        from netsuke._nats_flush import flush_subscriptions

        await flush_subscriptions(self._nc)
        self._stored = await self.state_store.load()
        self._running = True
        await self.registry.start()
        self._tasks = [
            asyncio.create_task(self._writer(), name="manager-writer"),
            asyncio.create_task(self._discovery_loop(), name="manager-discovery"),
            asyncio.create_task(self._monitor_agents(), name="manager-monitor"),
            asyncio.create_task(self._cleanup_loop(), name="manager-cleanup"),
        ]
        self._collector.register()
        await self.sync_packages()
        log.info("manager.started", agents=len(self.registry), nats=self.config.nats.url)

    async def stop(self) -> None:
        """Stop the agent manager: every agent, then the loops, then NATS."""
        self._running = False
        for task in self._tasks[1:]:
            task.cancel()
        await asyncio.gather(
            *(
                self._stop_process(r, "manager_stop", keep_desired=True)
                for r in self.registry.all()
            ),
            return_exceptions=True,
        )
        for rec in self.registry.all():
            rec.log.close()
        self._writes.put_nowait(None)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.registry.stop()
        self._collector.unregister()
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.drain()
        log.info("manager.stopped")

    async def __aenter__(self) -> AgentManager:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _nats_disconnected(self) -> None:
        if self._running:
            log.warning("manager.nats_disconnected")

    # -- discovery --------------------------------------------------------------------------

    async def _discovery_loop(self) -> None:
        while self._running:
            await asyncio.sleep(self.config.service.discovery_interval)
            try:
                await self.sync_packages()
            except Exception:  # never let a scan kill the manager
                log.exception("manager.discovery_error")

    async def sync_packages(self) -> dict[str, list[str]]:
        """Scan once: register new packages, restart changed ones, stop removed ones."""
        found = {m.agent_id: m for m in await self.discovery.discover_agents()}
        added, changed, removed = [], [], []
        for agent_id, manifest in found.items():
            rec = self.registry.get_agent(agent_id)
            if rec is None:
                await self._add(manifest)
                added.append(agent_id)
            elif rec.manifest.digest != manifest.digest:
                changed.append(agent_id)
                await self._change(rec, manifest)
        for rec in self.registry.all():
            if rec.agent_id not in found:
                removed.append(rec.agent_id)
                await self._remove(rec)
        if added or changed or removed:
            log.info("manager.discovered", added=added, changed=changed, removed=removed)
        return {"added": added, "changed": changed, "removed": removed}

    async def _add(self, manifest: PackageManifest) -> None:
        pk = self.config.packages
        log_file = AgentLog(
            pk.logs_dir / f"{manifest.agent_id}.log",
            max_bytes=pk.log_max_bytes,
            backups=pk.log_backups,
        )
        rec = AgentRecord(manifest=manifest, log=log_file)
        stored = self._stored.get(manifest.agent_id)
        if stored is not None:
            rec.desired = stored.desired
            rec.restarts = stored.restarts
            rec.exit_code, rec.exit_signal = stored.exit_code, stored.exit_signal
            _kill_leftover(stored.pid, manifest)
        else:
            rec.desired = "running" if manifest.autostart else "stopped"
        self.registry.register_agent(rec)
        if rec.desired == "running":
            await self._launch(rec, reason="adopted" if stored else "discovered")
        else:
            self._set_status(rec, AgentStatus.STOPPED, reason="discovered")

    async def _change(self, rec: AgentRecord, manifest: PackageManifest) -> None:
        async with rec.lock:
            was_running = rec.process is not None
            if was_running:
                await self._stop_process(rec, "package_changed", keep_desired=True)
            rec.manifest = manifest
            if rec.desired == "running" and (was_running or rec.status != AgentStatus.FAILED):
                await self._launch(rec, reason="package_changed")

    async def _remove(self, rec: AgentRecord) -> None:
        async with rec.lock:
            await self._stop_process(rec, "package_removed", keep_desired=False)
            self.registry.unregister_agent(rec.agent_id)
            rec.log.close()
            await self.state_store.forget(rec.agent_id)
            self._stored.pop(rec.agent_id, None)  # a re-added package starts afresh

    # -- processes ----------------------------------------------------------------------------

    def heartbeat_timeout(self, rec: AgentRecord) -> float:
        return rec.manifest.heartbeat_timeout or self.config.service.heartbeat_timeout

    async def _launch(self, rec: AgentRecord, *, reason: str) -> None:
        """Launch an agent (seed 3.1): environment, process, state ``starting``."""
        if rec.process is not None:
            return
        env = agent_environment(
            rec.manifest,
            nats_url=self.config.nats.url,
            heartbeat_interval=max(0.05, self.heartbeat_timeout(rec) / 3),
            extra={},
        )
        rec.stopping = False
        rec.last_heartbeat = None
        rec.started_at = time.monotonic()
        try:
            rec.process = await AgentProcess.launch(rec.manifest, env, rec.log)
        except OSError as exc:
            rec.process = None
            self._set_status(rec, AgentStatus.ERROR, reason="launch_failed", error=str(exc))
            self._schedule_restart(rec)
            return
        rec.waiter = asyncio.create_task(self._watch(rec, rec.process))
        self._set_status(rec, AgentStatus.STARTING, reason=reason, pid=rec.process.pid)

    async def _watch(self, rec: AgentRecord, proc: AgentProcess) -> None:
        code = await proc.wait()
        if rec.process is proc:
            rec.process = None
        exit_code, sig = exit_reason(code)
        rec.exit_code, rec.exit_signal = exit_code, sig
        await self._handle_agent_termination(rec, exit_code, sig)

    async def _handle_agent_termination(
        self, rec: AgentRecord, exit_code: int | None, sig: str | None
    ) -> None:
        """Seed 5.1: ``stopped`` for exit 0 or a requested stop, else ``error`` and a restart."""
        details = {"exit_code": exit_code, "signal": sig, "terminated_at": now_iso()}
        if rec.stopping or not self._running:
            self._set_status(rec, AgentStatus.STOPPED, reason="stopped", **details)
            return
        policy = rec.manifest.restart.policy
        if exit_code == 0:
            self._set_status(rec, AgentStatus.STOPPED, reason="exited", **details)
            if policy == "permanent":
                self._schedule_restart(rec)
            else:
                rec.desired = "stopped"
            return
        self._set_status(rec, AgentStatus.ERROR, reason="crashed", **details)
        if policy == "temporary":
            rec.desired = "stopped"
            return
        self._schedule_restart(rec)

    def _schedule_restart(self, rec: AgentRecord) -> None:
        """Back off exponentially; past ``max_restarts`` within ``max_seconds``: ``failed``."""
        rp = rec.manifest.restart
        now = time.monotonic()
        if rec.started_at and now - rec.started_at >= rp.reset_after:
            rec.streak = 0
        while rec.restart_times and now - rec.restart_times[0] > rp.max_seconds:
            rec.restart_times.popleft()
        if len(rec.restart_times) >= rp.max_restarts:
            self._set_status(
                rec,
                AgentStatus.FAILED,
                reason="restart_intensity",
                restarts=len(rec.restart_times),
                within_seconds=rp.max_seconds,
            )
            return
        rec.restart_times.append(now)
        rec.streak += 1
        delay = rp.delay(rec.streak)
        rec.restart_task = asyncio.create_task(self._delayed_restart(rec, delay))
        log.info("manager.restart_scheduled", agent_id=rec.agent_id, delay=delay, n=rec.streak)

    async def _delayed_restart(self, rec: AgentRecord, delay: float) -> None:
        await asyncio.sleep(delay)
        async with rec.lock:
            if not self._running or rec.desired != "running" or rec.process is not None:
                return
            if self.registry.get_agent(rec.agent_id) is not rec:
                return
            rec.restarts += 1
            rec.restart_task = None
            await self._launch(rec, reason="restart")

    async def _stop_process(self, rec: AgentRecord, reason: str, *, keep_desired: bool) -> None:
        """Seed 3.2: SIGTERM to the group, wait ``stop_timeout``, SIGKILL; state ``stopped``."""
        if not keep_desired:
            rec.desired = "stopped"
        if rec.restart_task is not None:
            rec.restart_task.cancel()
            rec.restart_task = None
        proc = rec.process
        if proc is None:
            if rec.status not in (AgentStatus.STOPPED, AgentStatus.FAILED) or not keep_desired:
                self._set_status(rec, AgentStatus.STOPPED, reason=reason)
            return
        rec.stopping = True
        await proc.stop(self.config.service.stop_timeout)
        if rec.waiter is not None:
            await asyncio.gather(rec.waiter, return_exceptions=True)

    async def start_agent(self, agent_id: str) -> dict[str, Any]:
        rec = self._get(agent_id)
        async with rec.lock:
            rec.desired = "running"
            if rec.restart_task is not None:
                rec.restart_task.cancel()
                rec.restart_task = None
            if rec.process is None:
                rec.streak = 0
                rec.restart_times.clear()
                await self._launch(rec, reason="start_command")
        return rec.snapshot()

    async def stop_agent(self, agent_id: str) -> dict[str, Any]:
        rec = self._get(agent_id)
        async with rec.lock:
            await self._stop_process(rec, "stop_command", keep_desired=False)
        return rec.snapshot()

    async def restart_agent(self, agent_id: str) -> dict[str, Any]:
        rec = self._get(agent_id)
        async with rec.lock:
            await self._stop_process(rec, "restart_command", keep_desired=True)
            rec.desired = "running"
            rec.streak = 0
            rec.restart_times.clear()
            rec.restarts += 1
            await self._launch(rec, reason="restart_command")
        return rec.snapshot()

    def _get(self, agent_id: str | None) -> AgentRecord:
        if not agent_id:
            raise CommandError("missing_agent_id", "agent_id: required for this command")
        rec = self.registry.get_agent(agent_id)
        if rec is None:
            raise CommandError("unknown_agent", f"no agent package {agent_id!r}", agent_id=agent_id)
        return rec

    # -- cleanup --------------------------------------------------------------------------------

    async def _cleanup_loop(self) -> None:
        while self._running:
            await asyncio.sleep(self.config.service.cleanup_interval)
            try:
                await self.cleanup()
            except Exception:  # never let housekeeping kill the manager
                log.exception("manager.cleanup_error")

    async def cleanup(self) -> dict[str, list[str]]:
        """Forget what packages that are gone left behind, once it is ``cleanup_interval`` old.

        * stored states (``manager_agents`` rows) of agents with no package, last updated more
          than ``cleanup_interval`` ago: a package removed while the manager was down would
          otherwise keep its row, and a later package of that name would inherit its desired
          state;
        * captured log files (``<id>.log``, ``<id>.log.<n>``) of agents with no package, last
          written more than ``cleanup_interval`` ago: a removed package's logs stay readable
          for at least one interval after its removal.

        Agents with a package are never touched, whatever their state. Returns the agent ids
        forgotten and the log files deleted.
        """
        interval = self.config.service.cleanup_interval
        known = {rec.agent_id for rec in self.registry.all()}
        now = time.time()
        forgotten: list[str] = []
        stored = await self.state_store.load()
        for agent_id, row in sorted(stored.items()):
            if agent_id in known or now - _timestamp(row.updated_at) <= interval:
                continue
            await self.state_store.forget(agent_id)
            self._stored.pop(agent_id, None)
            forgotten.append(agent_id)
        deleted: list[str] = []
        logs_dir = self.config.packages.logs_dir
        with contextlib.suppress(FileNotFoundError):
            for path in sorted(logs_dir.iterdir()):
                match = _LOG_FILE.match(path.name)
                if match is None or match["agent_id"] in known or not path.is_file():
                    continue
                with contextlib.suppress(FileNotFoundError):
                    if now - path.stat().st_mtime <= interval:
                        continue
                    path.unlink()
                    deleted.append(path.name)
        if forgotten or deleted:
            log.info("manager.cleanup", forgotten=forgotten, deleted_logs=deleted)
        return {"forgotten": forgotten, "deleted_logs": deleted}

    # -- health ---------------------------------------------------------------------------------

    async def _monitor_agents(self) -> None:
        """Mark silent agents ``inactive``; reset the backoff of agents healthy long enough."""
        while self._running:
            self.check_health()
            await asyncio.sleep(self.monitor_tick())

    def monitor_tick(self) -> float:
        """``monitoring_interval``, shortened to a quarter of the smallest heartbeat timeout so
        a silent agent is marked ``inactive`` at most a quarter timeout late."""
        timeouts = [self.heartbeat_timeout(r) for r in self.registry.all()]
        smallest = min(timeouts, default=self.config.service.heartbeat_timeout)
        return min(self.config.service.monitoring_interval, smallest / 4)

    def check_health(self) -> None:
        now = time.monotonic()
        for rec in self.registry.all():
            if rec.process is None or rec.stopping:
                continue
            timeout = self.heartbeat_timeout(rec)
            since = rec.last_heartbeat if rec.last_heartbeat is not None else rec.started_at
            if rec.status in (AgentStatus.STARTING, AgentStatus.RUNNING) and now - since > timeout:
                self._set_status(
                    rec,
                    AgentStatus.INACTIVE,
                    reason="heartbeat_timeout",
                    last_seen=rec.last_heartbeat_at,
                )
            if (
                rec.status == AgentStatus.RUNNING
                and rec.streak
                and now - rec.started_at >= rec.manifest.restart.reset_after
            ):
                rec.streak = 0
                rec.restart_times.clear()

    async def _on_status(self, msg: Any) -> None:
        """Seed 4.2: a status message from an agent is its heartbeat."""
        try:
            status = json.loads(msg.data)
            agent_id = status.get("agent_id")
        except (ValueError, AttributeError):
            return
        if status.get("source") == "manager" or not isinstance(agent_id, str):
            return
        rec = self.registry.get_agent(agent_id)
        if rec is None or rec.process is None:
            return
        pid = status.get("pid")
        if pid is not None and pid != rec.process.pid:
            return  # a heartbeat from a previous incarnation
        rec.last_heartbeat = time.monotonic()
        rec.last_heartbeat_at = status.get("timestamp") or now_iso()
        rec.heartbeats += 1
        meta = status.get("metadata")
        if isinstance(meta, dict) and isinstance(meta.get("progress"), dict):
            rec.progress = meta["progress"]
        if rec.status in (AgentStatus.STARTING, AgentStatus.INACTIVE) and not rec.stopping:
            self._set_status(rec, AgentStatus.RUNNING, reason="heartbeat")

    async def _on_metrics(self, msg: Any) -> None:
        try:
            data = json.loads(msg.data)
        except ValueError:
            return
        if not isinstance(data, dict):
            return
        rec = self.registry.get_agent(str(data.get("agent_id")))
        if rec is not None and isinstance(data.get("metrics"), dict):
            rec.metrics = data["metrics"]

    # -- state ------------------------------------------------------------------------------

    def _set_status(self, rec: AgentRecord, status: AgentStatus, **details: Any) -> None:
        previous = rec.status
        rec.status = status
        rec.changed_at = now_iso()
        event = {"status": status.value, "previous": previous.value, "at": rec.changed_at}
        event.update(details)
        rec.history.append(event)
        log.info("manager.agent_status", agent_id=rec.agent_id, **event)
        stored = StoredAgent(
            agent_id=rec.agent_id,
            status=status.value,
            desired=rec.desired,
            pid=None if rec.process is None else rec.process.pid,
            restarts=rec.restarts,
            exit_code=rec.exit_code,
            exit_signal=rec.exit_signal,
            updated_at=rec.changed_at,
        )
        body = {
            "agent_id": rec.agent_id,
            "status": status.value,
            "source": "manager",
            "metadata": event,
            "timestamp": rec.changed_at,
        }
        self._writes.put_nowait((stored, event, body))

    async def _writer(self) -> None:
        """Persist state changes in order and announce them on ``agent.status``."""
        while True:
            item = await self._writes.get()
            if item is None:
                return
            if isinstance(item, asyncio.Future):  # a flush marker: everything before is written
                if not item.done():
                    item.set_result(None)
                continue
            stored, event, body = item
            try:
                await self.state_store.save(stored, event)
            except Exception:
                log.exception("manager.state_write_failed", agent_id=stored.agent_id)
            if self._nc is not None and not self._nc.is_closed:
                with contextlib.suppress(Exception):
                    await self._nc.publish(AGENT_STATUS, encode(body))

    # -- commands -------------------------------------------------------------------------------

    async def _on_command(self, msg: Any) -> None:
        await self._answer(msg, query=False)

    async def _on_query(self, msg: Any) -> None:
        await self._answer(msg, query=True)

    async def _answer(self, msg: Any, *, query: bool) -> None:
        try:
            cmd = Command.parse(msg.data)
        except CommandError as exc:
            body = response("", exc.agent_id, error=exc)
        else:
            body = await self.execute(cmd, query=query)
        data = encode(body)
        with contextlib.suppress(Exception):
            if msg.reply:
                await self._nc.publish(msg.reply, data)
            await self._nc.publish(AGENT_MANAGER_RESPONSE, data)

    async def execute(self, cmd: Command, *, query: bool = False) -> dict[str, Any]:
        """Run one command and return the seed's response; never raises."""
        if cmd.id is not None:
            if cmd.id in self._done:
                return self._done[cmd.id]
            if cmd.id in self._inflight:
                return await asyncio.shield(self._inflight[cmd.id])
            fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            self._inflight[cmd.id] = fut
        try:
            body = await self._execute(cmd, query)
            if cmd.id is not None:
                fut.set_result(body)
                self._done[cmd.id] = body
                while len(self._done) > _IDEMPOTENCY_CACHE:
                    self._done.popitem(last=False)
        finally:
            if cmd.id is not None:
                self._inflight.pop(cmd.id, None)
                if not fut.done():  # cancelled: waiters get the cancellation, not a hang
                    fut.cancel()
        return body

    async def _execute(self, cmd: Command, query: bool) -> dict[str, Any]:
        allowed = _QUERIES if query else _COMMANDS
        try:
            if cmd.command not in allowed:
                kind = "query" if query else "command"
                raise CommandError(
                    "unknown_command", f"unknown {kind} {cmd.command!r}", agent_id=cmd.agent_id
                )
            handler: Handler = getattr(self, f"_cmd_{cmd.command}")
            result = await handler(cmd)
        except CommandError as exc:
            log.info("manager.command_refused", command=cmd.command, code=exc.code)
            return response(cmd.command, cmd.agent_id, error=exc, command_id=cmd.id)
        except Exception as exc:
            log.exception("manager.command_failed", command=cmd.command, agent_id=cmd.agent_id)
            err = CommandError("internal", f"{type(exc).__name__}: {exc}", agent_id=cmd.agent_id)
            return response(cmd.command, cmd.agent_id, error=err, command_id=cmd.id)
        log.info("manager.command", command=cmd.command, agent_id=cmd.agent_id)
        return response(cmd.command, cmd.agent_id, result=result, command_id=cmd.id)

    async def _cmd_start(self, cmd: Command) -> dict[str, Any]:
        return await self.start_agent(str(cmd.agent_id or ""))

    async def _cmd_stop(self, cmd: Command) -> dict[str, Any]:
        return await self.stop_agent(str(cmd.agent_id or ""))

    async def _cmd_restart(self, cmd: Command) -> dict[str, Any]:
        return await self.restart_agent(str(cmd.agent_id or ""))

    async def _cmd_status(self, cmd: Command) -> dict[str, Any]:
        if cmd.agent_id:
            return self._get(cmd.agent_id).snapshot()
        return await self._cmd_list(cmd)

    async def _cmd_list(self, cmd: Command) -> dict[str, Any]:
        return {"agents": [r.snapshot() for r in self.registry.all()]}

    async def _cmd_metrics(self, cmd: Command) -> dict[str, Any]:
        rec = self._get(cmd.agent_id)
        usage = rec.process.usage() if rec.process is not None else {}
        return {
            "agent": rec.metrics,
            "process": usage,
            "restarts": rec.restarts,
            "heartbeats": rec.heartbeats,
            "progress": rec.progress,
        }

    async def _cmd_logs(self, cmd: Command) -> dict[str, Any]:
        """The last ``params.lines`` lines; with ``params.after`` (a previous ``cursor``) only
        the lines written since, so a follower polls without gaps or repeats."""
        rec = self._get(cmd.agent_id)
        lines = cmd.params.get("lines", 100)
        if not isinstance(lines, int) or isinstance(lines, bool) or not 1 <= lines <= 10000:
            raise CommandError(
                "bad_params", "params.lines: an integer 1..10000", agent_id=rec.agent_id
            )
        after = cmd.params.get("after")
        if after is not None:
            if not isinstance(after, int) or isinstance(after, bool) or after < 0:
                raise CommandError(
                    "bad_params", "params.after: a cursor (integer >= 0)", agent_id=rec.agent_id
                )
            lines = max(0, min(lines, rec.log.count - after))
        cursor = rec.log.count
        tail = rec.log.tail(lines) if lines else []
        return {"lines": tail, "cursor": cursor, "file": str(rec.log.path)}

    async def flush(self) -> None:
        """Wait until every state change made so far is in the state store."""
        marker: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._writes.put_nowait(marker)
        await marker

    async def _cmd_history(self, cmd: Command) -> dict[str, Any]:
        rec = self._get(cmd.agent_id)
        await self.flush()
        return {"events": await self.state_store.history(rec.agent_id)}

    async def _cmd_health(self, cmd: Command) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for rec in self.registry.all():
            counts[rec.status.value] = counts.get(rec.status.value, 0) + 1
        return {
            "status": "healthy" if self._running else "stopping",
            "name": self.config.service.name,
            "pid": os.getpid(),
            "uptime_seconds": time.monotonic() - self.started_at,
            "agents": counts,
        }

    async def _cmd_packages(self, cmd: Command) -> dict[str, Any]:
        return {
            "packages": [r.manifest.model_dump(mode="json") for r in self.registry.all()],
            "errors": [
                {"file": str(e.path), "field": e.field, "message": e.message}
                for e in self.discovery.errors.values()
            ],
        }

    async def _cmd_discover(self, cmd: Command) -> dict[str, Any]:
        return await self.sync_packages()

    async def _cmd_send(self, cmd: Command) -> dict[str, Any]:
        """Forward ``params.command``/``params.params`` to the agent on ``agent.{id}.command``."""
        rec = self._get(cmd.agent_id)
        inner = cmd.params.get("command")
        if not isinstance(inner, str) or not inner:
            raise CommandError("bad_params", "params.command: a string", agent_id=rec.agent_id)
        inner_params = cmd.params.get("params") or {}
        if not isinstance(inner_params, dict):
            raise CommandError("bad_params", "params.params: an object", agent_id=rec.agent_id)
        fwd = Command(inner, rec.agent_id, inner_params, now_iso(), cmd.id)
        timeout = cmd.params.get("timeout", 10.0)
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
            raise CommandError("bad_params", "params.timeout: seconds > 0", agent_id=rec.agent_id)
        try:
            reply = await self._nc.request(
                AGENT_COMMAND.format(agent_id=rec.agent_id), fwd.encode(), timeout=timeout
            )
        except Exception as exc:
            raise CommandError(
                "agent_unreachable", f"{type(exc).__name__}: {exc}", agent_id=rec.agent_id
            ) from None
        answer: dict[str, Any] = json.loads(reply.data)
        return answer

    def record(self, agent_id: str) -> AgentRecord:
        """The live record of ``agent_id`` (raises :class:`CommandError` when unknown)."""
        return self._get(agent_id)


async def _nats_error(exc: Exception) -> None:
    log.warning("manager.nats_error", error=f"{type(exc).__name__}: {exc}")


async def _nats_reconnected() -> None:
    log.info("manager.nats_reconnected")


def _timestamp(iso: str) -> float:
    """Seconds since the epoch of a stored ``updated_at``; an unreadable one counts as old."""
    try:
        at = datetime.fromisoformat(iso)
    except ValueError:
        return 0.0
    return (at if at.tzinfo is not None else at.replace(tzinfo=UTC)).timestamp()


def _kill_leftover(pid: int | None, manifest: PackageManifest) -> None:
    """Kill what is left of a previous incarnation's agent: every process of the session it
    led (``start_new_session`` made its pid the session id). The agent itself died with the
    old manager (PDEATHSIG); its own children may have survived it."""
    if not pid:
        return
    killed = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == pid and int(entry.name) != os.getpid():  # field 6: session id
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
    if killed:
        log.warning("manager.killed_leftovers", agent_id=manifest.agent_id, pids=killed)
