"""Cluster membership as the store sees it (issue 17.6): ``GET /api/v1/cluster/nodes``.

Any valid key (``user`` and up) may read it. Each node incarnation with a live lease (with
``?all=true`` also those that left, fenced or expired): incarnation, state, lease age and time
left by the database's clock, processes and global names. ``node`` names this node (its
cluster id, or its plain name when it is not in a cluster) and ``fenced`` whether it has fenced
itself. A node that is not in a cluster answers with the nodes the store knows (often none).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from netsuke.cluster import list_nodes

from ..deps import Caller, Ctx

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
    cluster = ctx.extras.get("cluster")
    nodes = await list_nodes(ctx.store.database, include_gone=include_gone)
    return {
        "node": ctx.runtime.node,
        "clustered": cluster is not None,
        "fenced": bool(cluster.membership.fenced) if cluster is not None else False,
        "nodes": [n.as_dict() for n in nodes],
    }
