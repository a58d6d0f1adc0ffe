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
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from .._cluster_view import nodes_view, sessions_view
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
