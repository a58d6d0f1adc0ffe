"""``AgentMonitor``: per-agent logs, metrics and session activity, fed from the event bus.

The management API's ``GET /agents/{id}/logs|metrics`` and the dashboard's sessions table read
from here, never from the agents' processes (no round trip, no load on a busy agent).

* **Logs**: a bounded ring of the most recent ``log_lines`` [200] lines per agent definition,
  one per ``agent.*`` or ``turn.*`` event naming it (time, topic, session, and the event's
  fields; prompts and outputs are never in events, so never in these lines). The oldest line
  is dropped first; ``dropped`` counts them.
* **Metrics** per agent: turns (ok, failed), tokens in and out, latency (sum, and p50/p99 over
  the most recent ``latency_window`` [1000] turns), starts, restarts, crashes.
* **Sessions**: last activity, tokens, state and restarts per session id, for the live table;
  forgotten ``session_ttl`` [3600] seconds after the session stopped.

``start()`` subscribes (``agent.*`` and ``turn.*``); ``aclose()`` unsubscribes. Counting starts
when the monitor starts (a node restart resets it; the store keeps the executions).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from netsuke.events import Event, EventBus, Subscription
from netsuke.events import topics as t

__all__ = ["AgentMonitor", "AgentStats", "LogLine", "SessionActivity"]

_SKIP = frozenset({"agent", "session"})


@dataclass(frozen=True, slots=True)
class LogLine:
    time: float
    topic: str
    session: str | None
    fields: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"time": self.time, "topic": self.topic, "session": self.session, **self.fields}


@dataclass(slots=True)
class AgentStats:
    turns_ok: int = 0
    turns_failed: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    latency_sum_ms: float = 0.0
    starts: int = 0
    restarts: int = 0
    crashes: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=1000))
    logs: deque[LogLine] = field(default_factory=lambda: deque(maxlen=200))
    dropped: int = 0

    def snapshot(self) -> dict[str, Any]:
        turns = self.turns_ok + self.turns_failed
        recent = sorted(self.latencies)
        return {
            "turns": turns,
            "turns_ok": self.turns_ok,
            "turns_failed": self.turns_failed,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "latency_ms": {
                "mean": round(self.latency_sum_ms / len_ok, 3)
                if (len_ok := self.turns_ok)
                else None,
                "p50": _pct(recent, 0.50),
                "p99": _pct(recent, 0.99),
                "window": len(recent),
            },
            "starts": self.starts,
            "restarts": self.restarts,
            "crashes": self.crashes,
        }


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(values[min(len(values) - 1, int(q * len(values)))], 3)


@dataclass(slots=True)
class SessionActivity:
    session: str
    agent: str
    user: str | None
    state: str = "running"
    restarts: int = 0
    turns: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    last_activity: float = field(default_factory=time.time)
    stopped_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session,
            "agent": self.agent,
            "user": self.user,
            "state": self.state,
            "restarts": self.restarts,
            "turns": self.turns,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "last_activity": self.last_activity,
        }


class AgentMonitor:
    """See the module documentation. Feed it with ``start()`` or call ``observe(event)``."""

    def __init__(
        self,
        events: EventBus,
        *,
        log_lines: int = 200,
        latency_window: int = 1000,
        session_ttl: float = 3600.0,
    ) -> None:
        self.events = events
        self.log_lines = log_lines
        self.latency_window = latency_window
        self.session_ttl = session_ttl
        self._agents: dict[str, AgentStats] = {}
        self._sessions: dict[str, SessionActivity] = {}
        self._subs: list[Subscription] = []

    def start(self) -> None:
        """Subscribe to ``agent.*`` and ``turn.*`` (needs a running event loop)."""
        if not self._subs:
            self._subs = [
                self.events.listen("agent.*", self.observe, buffer=10_000),
                self.events.listen("turn.*", self.observe, buffer=10_000),
            ]

    def aclose(self) -> None:
        for sub in self._subs:
            sub.close()
        self._subs = []

    def stats(self, agent: str) -> AgentStats:
        s = self._agents.get(agent)
        if s is None:
            s = self._agents[agent] = AgentStats(
                latencies=deque(maxlen=self.latency_window), logs=deque(maxlen=self.log_lines)
            )
        return s

    def known(self, agent: str) -> bool:
        return agent in self._agents

    def logs(self, agent: str, limit: int = 100) -> list[dict[str, Any]]:
        """The last ``limit`` lines of ``agent``, oldest first."""
        s = self._agents.get(agent)
        if s is None:
            return []
        lines = list(s.logs)[-limit:]
        return [line.to_dict() for line in lines]

    def metrics(self, agent: str) -> dict[str, Any]:
        return self.stats(agent).snapshot() if agent in self._agents else AgentStats().snapshot()

    def sessions(self) -> list[SessionActivity]:
        """Every session seen (running or recently stopped), most recently active first."""
        cutoff = time.time() - self.session_ttl
        for sid in [k for k, v in self._sessions.items() if v.stopped_at and v.stopped_at < cutoff]:
            del self._sessions[sid]
        return sorted(self._sessions.values(), key=lambda a: a.last_activity, reverse=True)

    def session(self, session_id: str) -> SessionActivity | None:
        return self._sessions.get(session_id)

    def observe(self, event: Event) -> None:
        """Account one ``agent.*``/``turn.*`` event."""
        data = event.data
        agent = data.get("agent")
        if not isinstance(agent, str):
            return
        session = data.get("session") if isinstance(data.get("session"), str) else None
        s = self.stats(agent)
        if len(s.logs) == s.logs.maxlen:
            s.dropped += 1
        fields = {k: v for k, v in data.items() if k not in _SKIP}
        s.logs.append(LogLine(event.time, event.topic, session, fields))
        topic = event.topic
        act = self._activity(session, agent, data, event.time) if session else None
        if topic == t.AGENT_STARTED:
            s.starts += 1
            if act is not None:
                act.state, act.stopped_at = "running", None
                act.restarts = int(data.get("restarts") or 0)
        elif topic == t.AGENT_RESTARTED:
            s.restarts += 1
            if act is not None:
                act.restarts += 1
                act.state = "running"
        elif topic == t.AGENT_CRASHED:
            s.crashes += 1
            if act is not None:
                act.state = "crashed"
        elif topic in (t.AGENT_STOPPED, t.AGENT_EVICTED):
            if act is not None:
                act.state = "stopped" if topic == t.AGENT_STOPPED else "evicted"
                act.stopped_at = event.time
        elif topic == t.AGENT_HIBERNATED:
            if act is not None:
                act.state = "hibernated"
        elif topic == t.TURN_STARTED:
            if act is not None:
                act.state = "running"
        elif topic == t.TURN_FINISHED:
            tin = int(data.get("tokens_in") or 0)
            tout = int(data.get("tokens_out") or 0)
            seconds = data.get("duration")
            if data.get("status") == "succeeded":
                s.turns_ok += 1
            else:
                s.turns_failed += 1
            s.tokens_in += tin
            s.tokens_out += tout
            if isinstance(seconds, (int, float)):
                s.latency_sum_ms += seconds * 1000.0
                s.latencies.append(seconds * 1000.0)
            if act is not None:
                act.turns += 1
                act.tokens_in += tin
                act.tokens_out += tout
                act.state = "idle"

    def _activity(self, session: str, agent: str, data: Any, when: float) -> SessionActivity:
        act = self._sessions.get(session)
        if act is None:
            user = data.get("user")
            act = self._sessions[session] = SessionActivity(
                session, agent, user if isinstance(user, str) else None
            )
        elif act.user is None and isinstance(data.get("user"), str):
            act.user = data["user"]
        act.last_activity = when
        return act
