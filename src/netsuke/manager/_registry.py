"""Agent records (the seed's ``AgentRegistry``): one per discovered package, with its state."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ._logs import AgentLog
from ._manifest import PackageManifest
from ._process import AgentProcess
from ._protocol import now_iso


class AgentStatus(StrEnum):
    """States of a package agent (seed: "Agent States", plus the terminal ``failed``)."""

    STARTING = "starting"  # launched, no heartbeat yet
    RUNNING = "running"  # heartbeats arrive within the timeout
    STOPPED = "stopped"  # shut down on request, or exited 0 under a transient policy
    ERROR = "error"  # crashed or failed to start; a restart may be pending
    INACTIVE = "inactive"  # alive but no heartbeat within the timeout
    FAILED = "failed"  # restart intensity exceeded; only an explicit start revives it


@dataclass
class AgentRecord:
    manifest: PackageManifest
    log: AgentLog
    status: AgentStatus = AgentStatus.STOPPED
    desired: str = "running"
    process: AgentProcess | None = None
    started_at: float = 0.0
    last_heartbeat: float | None = None
    last_heartbeat_at: str | None = None
    heartbeats: int = 0
    progress: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    restarts: int = 0
    streak: int = 0
    restart_times: deque[float] = field(default_factory=deque)
    exit_code: int | None = None
    exit_signal: str | None = None
    stopping: bool = False
    restart_task: asyncio.Task[None] | None = None
    waiter: asyncio.Task[None] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    history: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=100))
    changed_at: str = field(default_factory=now_iso)

    @property
    def agent_id(self) -> str:
        return self.manifest.agent_id

    def snapshot(self) -> dict[str, Any]:
        m = self.manifest
        age = None if self.last_heartbeat is None else time.monotonic() - self.last_heartbeat
        return {
            "agent_id": self.agent_id,
            "name": m.name,
            "type": m.agent_type,
            "version": m.version,
            "status": self.status.value,
            "desired": self.desired,
            "pid": None if self.process is None else self.process.pid,
            "restarts": self.restarts,
            "exit_code": self.exit_code,
            "exit_signal": self.exit_signal,
            "last_heartbeat_at": self.last_heartbeat_at,
            "seconds_since_heartbeat": age,
            "heartbeats": self.heartbeats,
            "progress": self.progress,
            "changed_at": self.changed_at,
            "package": str(m.folder),
        }


class AgentRegistry:
    """Records by agent id (seed 1.3)."""

    def __init__(self) -> None:
        self._agents: dict[str, AgentRecord] = {}

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def register_agent(self, record: AgentRecord) -> None:
        self._agents[record.agent_id] = record

    def unregister_agent(self, agent_id: str) -> None:
        self._agents.pop(agent_id, None)

    def get_agent(self, agent_id: str) -> AgentRecord | None:
        return self._agents.get(agent_id)

    def all(self) -> list[AgentRecord]:
        return list(self._agents.values())

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self._agents

    def __len__(self) -> int:
        return len(self._agents)
