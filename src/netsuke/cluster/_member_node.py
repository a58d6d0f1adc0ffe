"""A cluster member: membership lease in the store, NATS transport, runtime and global names,
started and stopped in order (:func:`join_cluster`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from netsuke.events import topics
from netsuke.kernel import Runtime
from netsuke.store import Database

from ._membership import Membership
from ._names import GlobalNames
from ._nats import ClusterConnectError, NatsTransport

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

    def seen_alive(self, node_id: str) -> bool:
        """Whether ``node_id`` heartbeats over NATS now (fast; the store is the authority:
        ``await membership.is_live(name, incarnation)``)."""
        return node_id in self.transport.nodes()


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
    m = Membership(db, name, lease=lease, **{"renew_in_thread": True, **(membership_options or {})})
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


@asynccontextmanager
async def join_from_settings(
    settings: Any, database: Database, **runtime_options: Any
) -> AsyncIterator[ClusterNode]:
    """:func:`join_cluster` for ``netsuke serve`` with the node's ``Settings`` (``cluster``,
    ``node``, ``cluster_*``): the store's database holds the lease; credentials and TLS go to
    nats-py; ``runtime_options`` go to the ``Runtime`` (``events``: a bus already watched). A
    connection failure is reported without the URLs' user and password."""
    from ._config import connect_options, redact
    from ._placement import parse_labels

    urls = settings.cluster.split(",")
    labels = parse_labels(getattr(settings, "node_labels", None))
    options = connect_options(**settings_connect_args(settings))
    async with AsyncExitStack() as stack:
        try:
            node = await stack.enter_async_context(
                join_cluster(
                    urls,
                    settings.node,
                    database,
                    lease=settings.cluster_lease_s,
                    membership_options={"labels": labels} if labels else None,
                    transport_options={
                        "prefix": settings.cluster_prefix,
                        "connect_options": options,
                    },
                    **{"shutdown_timeout": settings.shutdown_timeout, **runtime_options},
                )
            )
        except ClusterConnectError as e:
            cause = e.__cause__ if e.__cause__ is not None else e
            shown = ", ".join(redact(u) for u in urls)
            raise ClusterConnectError(
                f"cannot connect to NATS at {shown}: {type(cause).__name__}: "
                f"{redact(str(cause))}".splitlines()[0]
            ) from None
        yield node


def settings_connect_args(settings: Any) -> dict[str, Any]:
    """The ``connect_options`` arguments of the node's settings."""

    def secret(v: Any) -> str | None:
        return v.get_secret_value() if v is not None else None

    return {
        "creds": settings.cluster_creds,
        "user": settings.cluster_user,
        "password": secret(settings.cluster_password),
        "token": secret(settings.cluster_token),
        "tls_ca": settings.cluster_tls_ca,
        "tls_cert": settings.cluster_tls_cert,
        "tls_key": settings.cluster_tls_key,
        "tls_hostname": settings.cluster_tls_hostname,
    }
