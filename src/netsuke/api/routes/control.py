"""Agent control and monitoring as in seed 003: ``/api/v1/agents/{agent_id}/...``.

``agent_id`` is a stored definition's name. Its *instance* is the agent process registered
under that name (``Agents.start_defined``); its *sessions* are the processes of
``<agent_id>-<user>`` (``POST /sessions``).

* ``POST .../start`` (operator): start the instance from the current definition; 201, or 200
  when it was already running. ``POST .../stop`` (operator): stop the instance and every
  session of the agent (their conversations stay in the store); answers how many stopped.
  ``POST .../restart`` (operator): stop all, then start the instance from the definition as
  it is now (sessions start again on their next ``POST /sessions``).
* ``GET .../status`` (user): ``running`` or ``stopped``, the definition's current
  ``version``, the instance's state (queue, restarts, owner, and the ``version`` it runs), the
  number of running sessions, and ``running_versions``: how many of the agent's processes
  (instance and sessions) run each definition version, as they really are. A session moves
  to a new version at its next turn (``version_policy: next_turn``, the default) or when it
  restarts (``on_restart``), so after an update ``running_versions`` may still show the old
  version for sessions that have not had a turn since; new sessions start from the current
  version. ``stale`` counts the processes behind the current version.
* ``GET .../metrics`` (operator): turns (ok, failed), tokens in/out, latency (mean, p50, p99
  in ms over recent turns), starts, restarts, crashes, counted since the node started, plus
  the running sessions and their load now.
* ``GET .../logs?limit=`` (operator): the most recent lines (oldest first) from a bounded
  in-memory ring per agent fed by the event bus (``agent.*``, ``turn.*``).

Each start, stop and restart is published by the agent servers (``agent.started``,
``agent.stopped``) and audited by the middleware.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel

from netsuke.agents import Agents, agent_load
from netsuke.kernel import NetsukeError
from netsuke.observability import get_logger
from netsuke.store import NotFoundError

from .._context import ApiContext
from .._problems import ProblemError
from .._turns import agent_problem, agents_of, monitor_of
from ..deps import Caller, Ctx, Operator

__all__ = ["AgentLogs", "AgentStatus", "ControlResult", "router"]

router = APIRouter(prefix="/agents", tags=["agent control"])
log = get_logger("netsuke.api")

AgentId = Annotated[
    str, Path(pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$", description="The agent's name.")
]


class AgentStatus(BaseModel):
    agent: str
    state: str
    version: int
    instance: dict[str, Any] | None
    sessions: int
    running_versions: dict[str, int] = {}
    stale: int = 0


class ControlResult(BaseModel):
    agent: str
    action: str
    stopped: int = 0
    status: AgentStatus | None = None


class AgentLogs(BaseModel):
    agent: str
    items: list[dict[str, Any]]
    dropped: int


async def _definition_version(ctx: ApiContext, agent_id: str) -> int:
    try:
        return (await ctx.store.agents.get(agent_id)).version
    except NotFoundError:
        raise ProblemError(404, "Not found", f"no agent definition named {agent_id}") from None


def _processes(ctx: ApiContext, agent_id: str) -> list[Any]:
    """Every running process of the agent: its instance and its sessions."""
    return ctx.runtime.registry.match(
        where=lambda m: type(m) is dict and m.get("kind") == "agent" and m.get("agent") == agent_id
    )


def _sessions(ctx: ApiContext, agent_id: str) -> list[Any]:
    return ctx.runtime.registry.match(
        where=lambda m: (
            type(m) is dict
            and m.get("kind") == "agent"
            and m.get("agent") == agent_id
            and m.get("user") is not None
        )
    )


async def _status(ctx: ApiContext, agents: Agents, agent_id: str) -> AgentStatus:
    version = await _definition_version(ctx, agent_id)
    instance: dict[str, Any] | None = None
    if agents.whereis(agent_id) is not None:
        try:
            instance = await agents.status(agent_id)
            instance.pop("user", None)
        except NetsukeError:
            instance = None
    sessions = len(_sessions(ctx, agent_id))
    state = "running" if instance is not None or sessions else "stopped"
    running: dict[str, int] = {}
    stale = 0
    for entry in _processes(ctx, agent_id):
        v = entry.meta.get("version")
        key = "none" if v is None else str(v)
        running[key] = running.get(key, 0) + 1
        stale += v is not None and v < version
    return AgentStatus(
        agent=agent_id,
        state=state,
        version=version,
        instance=instance,
        sessions=sessions,
        running_versions=running,
        stale=stale,
    )


async def _stop_all(ctx: ApiContext, agents: Agents, agent_id: str) -> int:
    stopped = 0
    if agents.whereis(agent_id) is not None:
        stopped += int(await agents.stop_agent(agent_id))
    for entry in _sessions(ctx, agent_id):
        stopped += int(await agents.stop_agent(entry.key))
    return stopped


@router.post("/{agent_id}/start", status_code=201, response_model=ControlResult)
async def start(ctx: Ctx, caller: Operator, agent_id: AgentId, response: Response) -> ControlResult:
    agents = agents_of(ctx)
    await _definition_version(ctx, agent_id)
    if agents.whereis(agent_id) is not None:
        response.status_code = 200
    else:
        try:
            await agents.start_defined(agent_id)
        except NetsukeError as exc:
            if agents.whereis(agent_id) is None:
                raise agent_problem(exc) from None
            response.status_code = 200  # a concurrent start won
    log.info("api.agent_control", agent=agent_id, action="start", actor=caller.actor)
    return ControlResult(
        agent=agent_id, action="start", status=await _status(ctx, agents, agent_id)
    )


@router.post("/{agent_id}/stop", response_model=ControlResult)
async def stop(ctx: Ctx, caller: Operator, agent_id: AgentId) -> ControlResult:
    agents = agents_of(ctx)
    await _definition_version(ctx, agent_id)
    stopped = await _stop_all(ctx, agents, agent_id)
    log.info(
        "api.agent_control", agent=agent_id, action="stop", stopped=stopped, actor=caller.actor
    )
    return ControlResult(
        agent=agent_id,
        action="stop",
        stopped=stopped,
        status=await _status(ctx, agents, agent_id),
    )


@router.post("/{agent_id}/restart", response_model=ControlResult)
async def restart(ctx: Ctx, caller: Operator, agent_id: AgentId) -> ControlResult:
    agents = agents_of(ctx)
    await _definition_version(ctx, agent_id)
    stopped = await _stop_all(ctx, agents, agent_id)
    try:
        await agents.start_defined(agent_id)
    except NetsukeError as exc:
        if agents.whereis(agent_id) is None:
            raise agent_problem(exc) from None
    log.info(
        "api.agent_control", agent=agent_id, action="restart", stopped=stopped, actor=caller.actor
    )
    return ControlResult(
        agent=agent_id,
        action="restart",
        stopped=stopped,
        status=await _status(ctx, agents, agent_id),
    )


@router.get("/{agent_id}/status", response_model=AgentStatus)
async def status(ctx: Ctx, caller: Caller, agent_id: AgentId) -> AgentStatus:
    return await _status(ctx, agents_of(ctx), agent_id)


@router.get("/{agent_id}/metrics")
async def metrics(ctx: Ctx, caller: Operator, agent_id: AgentId) -> dict[str, Any]:
    monitor = monitor_of(ctx)
    if not monitor.known(agent_id):
        await _definition_version(ctx, agent_id)
    agents = agents_of(ctx)
    procs = list(_sessions(ctx, agent_id))
    pid = agents.whereis(agent_id)
    pids = [e.pid for e in procs] + ([pid] if pid is not None else [])
    load = sum(agent_load(ctx.runtime, p) for p in pids)
    return {"agent": agent_id, **monitor.metrics(agent_id), "sessions": len(procs), "load": load}


@router.get("/{agent_id}/logs", response_model=AgentLogs)
async def logs(
    ctx: Ctx,
    caller: Operator,
    agent_id: AgentId,
    limit: Annotated[int, Query(ge=1, le=1000, description="Most recent lines.")] = 100,
) -> AgentLogs:
    monitor = monitor_of(ctx)
    if not monitor.known(agent_id):
        await _definition_version(ctx, agent_id)
        return AgentLogs(agent=agent_id, items=[], dropped=0)
    return AgentLogs(
        agent=agent_id,
        items=monitor.logs(agent_id, limit),
        dropped=monitor.stats(agent_id).dropped,
    )
