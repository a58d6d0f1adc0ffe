"""The live supervision tree of a node, read from the kernel and the agents' registry.

``supervision_tree(ctx)`` answers ``GET /api/v1/tree`` and feeds the dashboard's ``/tree``:

* **node**: the runtime's node name and its root supervisor;
* **children of the root** (``Supervisor.which_children``): id, pid, worker or supervisor;
* under the agents' supervisor (``Agents.supervisor``), one **definition supervisor** per agent
  definition (``DynamicSupervisor.which_children``; its restart intensity is the one
  ``Agents.start`` was given), and under each, its **sessions** (agent servers).

A session's ``state`` is ``running`` (a turn queued or running), ``idle``, ``hibernated``
(the agent dropped its in-process memory after ``idle_hibernate``: ``agent.hibernated``) or
``restarting`` (it crashed and its supervisor has not brought it back yet: the monitor saw
the crash and no process holds the name; a definition's ``restarting`` counts the children
its supervisor shows with ``pid="restarting"``). ``restarts`` counts restarts since the
session started on this node; ``last_exit`` is the reason and time of the session's last
abnormal exit (from the monitor's ``agent.crashed`` lines), or ``None``. Nothing here waits
on an agent: every supervisor call has a 2 s timeout and a supervisor that does not answer
shows ``"unreachable": true``. ``recent_exits`` lists the newest 20 abnormal exits of any
session of a stored agent (agent, session, reason, at), crash loops included.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from netsuke.agents import Agents
from netsuke.events import topics
from netsuke.kernel import KernelError, Pid

from ._context import ApiContext
from ._monitor import AgentMonitor, SessionActivity

__all__ = ["supervision_tree"]

_CALL_TIMEOUT = 2.0


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat() if ts is not None else None


async def _children(ctx: ApiContext, sup: Any) -> list[Any] | None:
    # the request ``which_children`` of both supervisor kinds, with a timeout of our own
    try:
        rows: list[Any] = await ctx.runtime.call(sup, ("which_children",), timeout=_CALL_TIMEOUT)
    except KernelError:
        return None
    return rows


def _last_exit(monitor: AgentMonitor | None, agent: str, session: str) -> dict[str, Any] | None:
    if monitor is None:
        return None
    for line in reversed(monitor.logs(agent, 200)):
        if line["session"] == session and line["topic"] == topics.AGENT_CRASHED:
            return {"reason": line.get("reason"), "at": _iso(line["time"])}
    return None


def _session_state(ctx: ApiContext, pid: Pid | None, act: SessionActivity | None) -> str:
    proc = ctx.runtime.process(pid) if pid is not None else None
    if proc is None:
        return "restarting"
    if getattr(proc, "load", 0) > 0:
        return "running"
    # the agent's own hibernation (memory dropped, ``agent.hibernated``), not the kernel's
    # task release of an idle process
    return "hibernated" if act is not None and act.state == "hibernated" else "idle"


def _session(
    ctx: ApiContext, monitor: AgentMonitor | None, name: str, pid: Pid | None, meta: Any
) -> dict[str, Any]:
    agent = str(meta.get("agent")) if isinstance(meta, dict) else name
    act = monitor.session(name) if monitor is not None else None
    return {
        "session": name,
        "agent": agent,
        "user": meta.get("user") if isinstance(meta, dict) else None,
        "pid": repr(pid) if pid is not None else None,
        "state": _session_state(ctx, pid, act),
        "restarts": act.restarts if act is not None else 0,
        "turns": act.turns if act is not None else 0,
        "last_activity": _iso(act.last_activity) if act is not None else None,
        "last_exit": _last_exit(monitor, agent, name),
    }


async def _definitions(
    ctx: ApiContext, agents: Agents, top: Pid, stored: set[str]
) -> list[dict[str, Any]]:
    rt = ctx.runtime
    monitor: AgentMonitor | None = ctx.extras.get("monitor")
    running = {e.pid: (e.key, e.meta) for e in agents.rt.registry.match(where=_is_agent)}
    names = {str(meta.get("agent")) for _, meta in running.values()} | stored
    domains = {pid: n for n in names if (pid := rt.whereis(agents.domain_name(n))) is not None}
    rows = await _children(ctx, top) or []
    out: list[dict[str, Any]] = []
    for row in rows:
        if not isinstance(row.pid, Pid):
            continue
        definition = domains.get(row.pid)
        children = await _children(ctx, row.pid)
        sessions: list[dict[str, Any]] = []
        restarting = 0
        for child in children or []:
            if isinstance(child.pid, Pid) and child.pid in running:
                key, meta = running[child.pid]
                sessions.append(_session(ctx, monitor, key, child.pid, meta))
            elif child.pid == "restarting":
                restarting += 1
        # a session whose process crashed and is not back yet: the monitor saw it crash
        if monitor is not None and definition is not None:
            shown = {s["session"] for s in sessions}
            for act in monitor.sessions():
                if act.agent == definition and act.state == "crashed" and act.session not in shown:
                    entry = _session(ctx, monitor, act.session, None, {"agent": act.agent})
                    entry["user"] = act.user
                    sessions.append(entry)
        sessions.sort(key=lambda s: s["session"])
        out.append(
            {
                "name": agents.domain_name(definition) if definition else repr(row.pid),
                "agent": definition,
                "pid": repr(row.pid),
                "type": "supervisor",
                "restarting": restarting,
                "unreachable": children is None,
                "sessions": sessions,
            }
        )
    out.sort(key=lambda d: d["agent"] or "")
    return out


def _is_agent(meta: Any) -> bool:
    return type(meta) is dict and meta.get("kind") == "agent"


def recent_exits(ctx: ApiContext, names: set[str], limit: int = 20) -> list[dict[str, Any]]:
    """The newest ``limit`` abnormal exits of the agents ``names`` (``agent.crashed`` lines of
    the monitor's rings): agent, session, reason, at."""
    monitor: AgentMonitor | None = ctx.extras.get("monitor")
    if monitor is None:
        return []
    lines = [
        (line["time"], agent, line)
        for agent in names
        for line in monitor.logs(agent, 200)
        if line["topic"] == topics.AGENT_CRASHED
    ]
    lines.sort(key=lambda x: x[0], reverse=True)
    return [
        {"agent": agent, "session": line["session"], "reason": line.get("reason"), "at": _iso(t)}
        for t, agent, line in lines[:limit]
    ]


async def supervision_tree(ctx: ApiContext) -> dict[str, Any]:
    """The tree as JSON-ready data (see the module documentation)."""
    rt = ctx.runtime
    agents: Agents | None = ctx.extras.get("agents")
    agents_sup = rt.whereis(agents.supervisor) if agents is not None else None
    stored = {d.name for d in (await ctx.store.agents.list(limit=1000)).items}
    rows = await _children(ctx, rt.root)
    children: list[dict[str, Any]] = []
    for row in rows or []:
        pid = row.pid if isinstance(row.pid, Pid) else None
        entry: dict[str, Any] = {
            "id": str(row.id),
            "pid": repr(pid) if pid is not None else row.pid,
            "type": row.type,
            "restart": row.restart,
        }
        if agents is not None and pid is not None and pid == agents_sup:
            entry["definitions"] = await _definitions(ctx, agents, pid, stored)
        children.append(entry)
    return {
        "recent_exits": recent_exits(ctx, stored),
        "node": rt.node,
        "root": repr(rt.root),
        "generated_at": datetime.now(UTC).isoformat(),
        "unreachable": rows is None,
        "children": children,
    }
