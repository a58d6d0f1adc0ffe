"""Cluster membership as the store sees it (issue 17.6): ``GET /api/v1/cluster/nodes`` and
where each session runs: ``GET /api/v1/cluster/sessions``.

``/cluster/nodes`` (any valid key, ``user`` and up): each node incarnation with a live lease
(with ``?all=true`` also those that left, fenced or expired): incarnation, state, lease age and
time left by the database's clock, processes, global names and the sessions it owns
(``sessions``; ``this`` marks this node, ``heard`` whether this node hears it over NATS
now). ``node`` names this node (its cluster id, or its plain
name when it is not in a cluster), ``fenced`` whether it has fenced itself, ``this_node`` this
node as the store's session ownership knows it (in a cluster or not) and ``sessions`` the stored
sessions in total, never claimed, and held by a node that is no longer live. A node that is not
in a cluster answers with the nodes the store knows (often none).

``/cluster/sessions`` (operator: it lists every user's sessions): stored sessions newest first
with their owner (``name#incarnation``), whether that owner is live, and the ownership epoch;
paged by ``limit`` and ``cursor``.

``/cluster/agents?match=&count=&timeout=`` (operator) and ``POST /cluster/agents/stop?match=``
(operator): seed 001's ``find_agents``/``count_agents``/``stop_agents_matching`` over every
live node (``Agents.find``/``count``/``stop_matching``); a node that does not answer within
``timeout`` is listed in ``unreachable`` and ``partial`` is true.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from netsuke.agents import AgentQuery

from .._cluster_view import nodes_view, sessions_view
from .._turns import agents_of
from ..deps import Caller, Ctx, Operator, Paging

__all__ = ["router"]

router = APIRouter(prefix="/cluster", tags=["cluster"])


@router.get("/nodes")
async def cluster_nodes(
    ctx: Ctx,
    caller: Caller,
    include_gone: bool = Query(
        False, alias="all", description="Also nodes that left, fenced or expired."
    ),
) -> dict[str, Any]:
    return await nodes_view(ctx, include_gone=include_gone)


@router.get("/sessions")
async def cluster_sessions(ctx: Ctx, caller: Operator, page: Paging) -> dict[str, Any]:
    return await sessions_view(ctx, limit=page.limit, cursor=page.cursor)


def _query_view(q: AgentQuery, *, items: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "total": q.total,
        "nodes": list(q.nodes),
        "unreachable": list(q.unreachable),
        "partial": q.partial,
    }
    if items:
        out["agents"] = [
            {
                "name": i.name,
                "node": str(i.pid.node),
                "agent": i.meta.get("agent"),
                "session": i.meta.get("session"),
                "user": i.meta.get("user"),
                "capabilities": list(i.meta.get("capabilities") or ()),
                "model": i.meta.get("model"),
                "version": i.meta.get("version"),
            }
            for i in q.agents
        ]
    return out


@router.get("/agents")
async def cluster_agents(
    ctx: Ctx,
    caller: Operator,
    match: str | None = Query(
        None, min_length=1, max_length=200, description="Substring, or a glob with *?[."
    ),
    count: bool = Query(False, description="Only the total, no list."),
    timeout: float = Query(5.0, gt=0, le=60, description="Seconds to wait for each node."),
) -> dict[str, Any]:
    """Running agents on every live node (``Agents.find``/``count``): ``partial`` with the
    ``unreachable`` nodes when some did not answer within ``timeout``."""
    agents = agents_of(ctx)
    if count:
        return _query_view(await agents.count(match, timeout=timeout), items=False)
    q = await agents.find(match or "*", timeout=timeout)  # "*": every agent
    return _query_view(q, items=True)


@router.post("/agents/stop")
async def cluster_agents_stop(
    ctx: Ctx,
    caller: Operator,
    match: str = Query(min_length=1, max_length=200, description="Substring, or a glob."),
    timeout: float = Query(15.0, gt=0, le=120, description="Seconds to wait for each node."),
) -> dict[str, Any]:
    """Stop every running agent whose name matches, on every live node
    (``Agents.stop_matching``): ``total`` stopped; ``partial`` as for the listing (the
    unreachable nodes' agents may or may not have stopped)."""
    q = await agents_of(ctx).stop_matching(match, timeout=timeout)
    return _query_view(q, items=False)
