"""A cluster member: membership lease in the store, NATS transport, runtime and global names,
started and stopped in order (:func:`join_cluster`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from netsuke.events import topics
from netsuke.kernel import Runtime
from netsuke.store import Database

from ._membership import Membership
from ._names import GlobalNames
from ._nats import NatsTransport

__all__ = ["ClusterNode", "join_cluster"]


@dataclass(frozen=True, slots=True)
class ClusterNode:
    """What :func:`join_cluster` yields."""

    runtime: Runtime
    transport: NatsTransport
    membership: Membership
    names: GlobalNames

    @property
    def node_id(self) -> str:
        return self.membership.node_id


@asynccontextmanager
async def join_cluster(
    servers: str | list[str],
    name: str,
    database: Database | str | None,
    *,
    lease: float = 5.0,
    membership_options: dict[str, Any] | None = None,
    transport_options: dict[str, Any] | None = None,
    **runtime_options: Any,
) -> AsyncIterator[ClusterNode]:
    """Join the cluster as ``name``: take a lease in the store ``database`` (a
    ``Database`` or a URL; :class:`DuplicateNodeError` when a live node holds the name), whose
    incarnation becomes the node's; connect to NATS (``ClusterConnectError``); start a
    ``Runtime`` on that transport. On exit: names stop being watched, the runtime stops, the
    transport says goodbye, the lease and the node's names are given up.
    ``runtime_options`` go to ``Runtime``."""
    db = database if isinstance(database, Database) else Database(database)
    own_db = not isinstance(database, Database)
    transport_options = dict(transport_options or {})
    if "name" in transport_options or "incarnation" in transport_options:
        raise ValueError("name and incarnation of a cluster node come from join_cluster")
    # Refuse bad transport options before any row is written.
    NatsTransport(servers, name, incarnation=0, **transport_options)
    m = Membership(db, name, lease=lease, **(membership_options or {}))
    try:
        incarnation = await m.join()
        try:
            t = NatsTransport(servers, name, incarnation=incarnation, **transport_options)
            await t.connect()
            try:
                async with Runtime(node=t.node_id, transport=t, **runtime_options) as rt:
                    m.process_count = rt.count_processes
                    made: list[GlobalNames] = []

                    def fenced(reason: str) -> None:
                        rt.events.publish(
                            topics.CLUSTER_NODE_FENCED,
                            node=m.node_id,
                            reason=reason,
                            names=len(made[0]._owned) if made else 0,  # before they are dropped
                        )

                    m.on_fenced(fenced)
                    names = GlobalNames(m, rt)
                    made.append(names)
                    try:
                        yield ClusterNode(rt, t, m, names)
                    finally:
                        await names.close()
            finally:
                await t.close()
        finally:
            await m.leave()
    finally:
        if own_db:
            await db.dispose()
