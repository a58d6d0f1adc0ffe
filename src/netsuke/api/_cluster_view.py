"""What the cluster looks like from this node, for ``/api/v1/cluster/*`` and the ``/cluster``
page: the members' leases (the store is the authority), the sessions each owns, this node.

A node that is not in a cluster still describes itself (``this_node``): its own name and run,
its processes and the sessions it owns; the store then usually lists no members.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

from netsuke.cluster import list_nodes
from netsuke.store import Conversation, Page

from ._context import ApiContext

__all__ = ["nodes_view", "sessions_view"]


def _owner(c: Conversation) -> str | None:
    if c.owner_node is None or c.owner_incarnation is None:
        return None
    return f"{c.owner_node}#{c.owner_incarnation}"


async def _live_ids(ctx: ApiContext) -> set[str]:
    """The node ids whose sessions are not taken over: the live leases in a cluster, this
    node's current run alone otherwise (``OnlySelfLive``)."""
    if ctx.extras.get("cluster") is None:
        return {str(ctx.store.conversations.node)}
    return {n.node_id for n in await list_nodes(ctx.store.database)}


async def nodes_view(ctx: ApiContext, *, include_gone: bool = False) -> dict[str, Any]:
    """``GET /api/v1/cluster/nodes``: the members with the sessions each owns, and this node."""
    cluster = ctx.extras.get("cluster")
    nodes = await list_nodes(ctx.store.database, include_gone=include_gone)
    owned = await ctx.store.conversations.owner_counts()
    me = ctx.store.conversations.node
    listed = []
    for n in nodes:
        d = n.as_dict()
        d["sessions"] = owned.get((n.name, n.incarnation), 0)
        d["this"] = n.node_id == str(me) and cluster is not None
        # heard over NATS now (the transport's view; the lease above is the authority)
        d["heard"] = cluster is not None and (d["this"] or cluster.seen_alive(n.node_id))
        listed.append(d)
    live = {n.node_id for n in nodes if n.live} if cluster is not None else {str(me)}
    held_by_gone = sum(
        count
        for key, count in owned.items()
        if key is not None and f"{key[0]}#{key[1]}" not in live
    )
    return {
        "node": ctx.runtime.node,
        "clustered": cluster is not None,
        "fenced": bool(cluster.membership.fenced) if cluster is not None else False,
        "this_node": {
            "node": str(me),
            "name": me.name,
            "incarnation": me.incarnation,
            "processes": ctx.runtime.count_processes(),
            "sessions": owned.get((me.name, me.incarnation), 0),
        },
        "sessions": {
            "total": sum(owned.values()),
            "unclaimed": owned.get(None, 0),
            "held_by_gone": held_by_gone,
        },
        "nodes": listed,
    }


async def sessions_view(ctx: ApiContext, *, limit: int, cursor: str | None) -> dict[str, Any]:
    """``GET /api/v1/cluster/sessions``: stored sessions newest first, each with its owner."""
    page: Page[Conversation] = await ctx.store.conversations.list(limit=limit, cursor=cursor)
    live = await _live_ids(ctx)
    me = str(ctx.store.conversations.node)
    items = []
    for c in page.items:
        owner = _owner(c)
        items.append(
            {
                "session_id": c.session_id,
                "agent": c.agent_name,
                "user": c.user_id,
                "owner": owner,
                "owner_node": c.owner_node,
                "owner_incarnation": c.owner_incarnation,
                "owner_live": owner is not None and owner in live,
                "here": owner == me,
                "epoch": c.incarnation,
                "messages": c.message_count,
                "updated_at": (
                    c.updated_at if c.updated_at.tzinfo else c.updated_at.replace(tzinfo=UTC)
                ).isoformat(),
            }
        )
    return {"node": ctx.runtime.node, "sessions": items, "next_cursor": page.next_cursor}
