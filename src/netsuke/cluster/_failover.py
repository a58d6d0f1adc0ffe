"""Failover with memory: when a node is gone, the survivors revoke its lease at once and
restart its sessions from the store, by OTP rules (docs/cluster.md, "Failover").

**Fast, safe takeover.** On ``cluster.node_down`` (``no_responders``: its NATS subscription
is gone, about 0.8 s after a SIGKILL; ``heartbeat_timeout``: ``down_after`` of silence, a
SIGSTOP or a cut; ``unheard``; ``replaced``) a survivor that is itself healthy revokes the
dead node's lease in the store (``Membership.revoke``): from then on the store's liveness
policy says the node is not live, so its sessions can be claimed without waiting for its
lease to run out. A
survivor is healthy when it is a member (not fenced), its own event loop has not stalled in
the last ``down_after`` seconds (a node that was itself paused sees everybody silent) and its
own NATS connection answers a ping (a node cut off sees everybody silent).
``disconnected`` (this node's own connection broke) and ``peer_declared_down`` never revoke.
A stall of this node defers a revocation for at most ``defer_limit``, so a survivor that is
merely slow still revokes. Members in the store that this node has never heard over NATS are
handed to the transport (``NatsTransport.expect``), which judges them down (``unheard``) after
``down_after`` of silence: a node cut off NATS before this one first heard it is revoked too.
A revoked node that still runs fails its next renewal and fences itself; a wrong verdict
costs availability, never safety: every commit is fenced by the session's epoch.

**Restart rules** (OTP): a node's death ends each of its processes with ``noconnection``, an
abnormal exit; a graceful stop (``cluster.node_left``) ends them with ``shutdown``. A session
the dead node hosted (``host_state`` ``active``: not evicted, not stopped) is restarted on a
survivor when its restart type says so for that exit: ``permanent`` always, ``transient``
only after an abnormal exit (the node's death, not a graceful stop), ``temporary`` never.
Evicted sessions, and the others, come back lazily on the next call, on any node
(``Agents.revive``, the path every takeover takes); stopped ones do not.

**Owner links** survive the takeover as a restart on one node: ``Agents.revive`` starts the
session with its stored owner (``conversations.owner_pid``) and the new process monitors it
again; an owner gone meanwhile fires at once (``noproc``), one that lived on the gone node
fires ``noconnection`` (it died with the node), and ``owner_policy`` applies (``stop``: the
session stops and is marked ``stopped``). Failover itself does not judge owners: the policy
belongs to the agent's configuration, which the restarted process reads.

**Placement.** Each survivor asks the placement module (``cluster/_placement.py``), for each
such session, which live node restarts it: the ``rendezvous`` policy over the live nodes in
the store, restricted to those carrying every label its agent definition requires
(``config.node_labels``), so every survivor computes the same node with no coordination and
claims only its own share (``takeover_target``). A session no live node may host is not
restarted: it is recorded (``Failover.unplaced``), logged and counted (``no_node``), and
placed by a later sweep once such a node is live. The claim is the store's compare-and-set:
of two claimants exactly one wins. A session still owned by a dead node one
``sweep_interval`` after its lease ended is claimed by whichever survivor (carrying its
labels) sweeps first (the one picked may have died too).

Observability: the event ``cluster.sessions_moved`` (node, from, to, count, cause), logs
``cluster_sessions_moved`` and ``cluster_takeover_failed``, counters
``netsuke_cluster_sessions_moved_total{node}``,
``netsuke_cluster_takeovers_total{node,outcome}`` (``taken``, ``lost``, ``failed``),
``netsuke_cluster_lease_revocations_total{node,cause}`` and the histogram
``netsuke_cluster_failover_seconds{node}`` (from the node-down event to its sessions running
here again).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import structlog
from opentelemetry import trace
from prometheus_client import Counter, Histogram
from sqlalchemy import select

from netsuke.events import Event, topics
from netsuke.observability import REGISTRY
from netsuke.store import Conversation, Database, SessionOwnedError

from ._membership import LEFT, LIVE, NODES, db_now, list_nodes
from ._nats import split_node_id
from ._placement import Candidate, NoNodeAvailableError, choose_node, required_labels

if TYPE_CHECKING:
    from netsuke.agents import Agents

    from ._member_node import ClusterNode

__all__ = ["Failover", "required_labels", "restarts_on_failover", "takeover_target"]

log = structlog.get_logger("netsuke.cluster")
tracer = trace.get_tracer("netsuke.cluster")

SESSIONS_MOVED = Counter(
    "netsuke_cluster_sessions_moved",
    "Sessions of a node that was gone which this node restarted (failover).",
    ["node"],
    registry=REGISTRY,
)
TAKEOVERS = Counter(
    "netsuke_cluster_takeovers",
    "Failover claims of sessions of a gone node by this node, by outcome (taken, lost, failed,"
    " no_node: no live node carries the labels the session's agent requires).",
    ["node", "outcome"],
    registry=REGISTRY,
)
FAILOVER_SECONDS = Histogram(
    "netsuke_cluster_failover_seconds",
    "From a node-down event to the gone node's sessions running on this node again.",
    ["node"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0),
    registry=REGISTRY,
)

REVOKE_CAUSES: Final = frozenset({"no_responders", "heartbeat_timeout", "unheard", "replaced"})
RECENT: Final = 600.0  # the sweep looks at nodes gone within the last RECENT seconds


def restarts_on_failover(conv: Conversation, cause: str) -> bool:
    """Whether a session of a gone node is restarted on a survivor now (OTP rules, see the
    module documentation); ``cause``: ``left`` for a graceful stop, anything else for a
    death (``noconnection``)."""
    if (conv.host_state or "active") != "active":
        return False  # evicted (lazily revived) or stopped for good
    restart = conv.restart or "transient"
    if restart == "permanent":
        return True
    if restart == "transient":
        return cause != "left"  # noconnection is abnormal; a graceful stop is shutdown
    return False


def takeover_target(
    session_id: str,
    candidates: Sequence[Candidate],
    me: str,
    required: Mapping[str, str] | None = None,
    *,
    force: bool = False,
) -> str:
    """The live node that restarts ``session_id`` of a gone node, by the placement module's
    ``rendezvous`` policy over ``candidates`` (the live nodes, with their labels) restricted
    to those carrying every ``required`` label (its agent definition's ``node_labels``):
    every survivor computes the same node with no coordination, so each claims only its own
    share. With ``force`` (the sweep, once the node picked may be gone too) this node, if it
    carries the labels. ``NoNodeAvailableError`` when no live node carries them."""
    target = choose_node("rendezvous", session_id, candidates, me, required=required)
    if force and target != me:
        here = next((c for c in candidates if c.node_id == me), None)
        if here is not None and all(here.labels.get(k) == v for k, v in (required or {}).items()):
            return me
    return target


async def _live_members(db: Database, older_than: float) -> list[str]:
    """The node ids with a live lease taken more than ``older_than`` seconds ago, by the
    database clock (one small read)."""
    async with db.read() as conn:
        now = db_now(conn)
        rows = await conn.execute(
            select(NODES.c.name, NODES.c.incarnation).where(
                NODES.c.state == LIVE,
                NODES.c.expires_at > now,
                NODES.c.started_at < now - older_than,
            )
        )
        return [f"{n}#{int(i)}" for n, i in rows.all()]


class Failover:
    """Fast takeover and OTP restarts of a gone node's sessions on this node (see the module
    documentation). ``Failover(node, agents).start()`` once both exist; ``await close()``.

    Options: ``revoke`` [``True``]: revoke a node's lease when it is seen down (else wait for
    it to run out); ``sweep_interval`` [the lease]: between two looks at the store for nodes
    gone unseen (a node that died while this one was down or cut off); ``concurrency`` [8]
    claims at a time; ``stall_limit`` [1 s]: an event-loop tick late by more than this is a
    stall (this node may have been paused); ``defer_limit`` [``3 * down_after``]: how long a
    stall of this node may defer a revocation (see :meth:`_revoke_when_healthy`);
    ``members_interval`` [``down_after``]: between two reads of the live members in the
    store, each one this node has not heard over NATS awaited by the transport
    (``NatsTransport.expect``: down, cause ``unheard``, if still silent ``down_after`` later);
    ``join_grace`` [20 s]: only members that took their lease longer ago than this are
    awaited (a node joins the store first, then connects to NATS: up to three connection
    attempts of 5 s).
    """

    def __init__(
        self,
        node: ClusterNode,
        agents: Agents,
        *,
        revoke: bool = True,
        sweep_interval: float | None = None,
        concurrency: int = 8,
        stall_limit: float = 1.0,
        defer_limit: float | None = None,
        members_interval: float | None = None,
        join_grace: float = 20.0,
    ) -> None:
        self.node = node
        self.agents = agents
        self.revoke = revoke
        m = node.membership
        self.sweep_interval = m.lease if sweep_interval is None else sweep_interval
        self.concurrency = concurrency
        self.stall_limit = stall_limit
        self.moved = 0  # sessions this node restarted (for tests and the dashboard)
        # sessions of gone nodes that no live node may host (labels): session id -> labels
        self.unplaced: dict[str, dict[str, str]] = {}
        self._handled: set[tuple[str, int]] = set()
        self._running: dict[tuple[str, int], asyncio.Task[int]] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self._subs: list[Any] = []
        self._stalled_at = -1e9
        self._down_after = float(getattr(node.transport, "down_after", 3.0))
        self.defer_limit = 3 * self._down_after if defer_limit is None else defer_limit
        self.members_interval = self._down_after if members_interval is None else members_interval
        self.join_grace = join_grace

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> Failover:
        rt = self.node.runtime
        self._subs = [
            rt.events.listen(topics.CLUSTER_NODE_DOWN, self._on_event),
            rt.events.listen(topics.CLUSTER_NODE_LEFT, self._on_event),
        ]
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._watch_loop()),
            loop.create_task(self._sweeper()),
            loop.create_task(self._members_loop()),
        ]
        return self

    async def close(self) -> None:
        for sub in self._subs:
            sub.close()
        tasks = [*self._tasks, *self._running.values()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    async def __aenter__(self) -> Failover:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ----------------------------------------------------------------- health

    async def _watch_loop(self) -> None:
        """Notes when this node's event loop stalled (it was paused, or starved): a node that
        was itself stopped sees every peer silent and must not revoke them."""
        loop = asyncio.get_running_loop()
        tick = 0.25
        last = loop.time()
        while True:
            await asyncio.sleep(tick)
            now = loop.time()
            if now - last > tick + self.stall_limit:
                self._stalled_at = now
            last = now

    async def healthy(self, ping: bool = True) -> bool:
        """Whether this node may judge others: a member, not stalled lately, and (``ping``)
        its own NATS connection answers a ping."""
        return await self.unhealthy(ping) is None

    async def unhealthy(self, ping: bool = True, *, stalls: bool = True) -> str | None:
        """Why this node may not judge others now (``fenced``, ``stalled``, ``disconnected``,
        ``ping_failed``), or ``None`` when it may (see :meth:`healthy`). ``stalls=False``:
        a recent stall of this node's loop does not count."""
        if self.node.membership.fenced:
            return "fenced"
        loop = asyncio.get_running_loop()
        if stalls and loop.time() - self._stalled_at < self._down_after + self.stall_limit:
            return "stalled"
        nc = getattr(self.node.transport, "nc", None)
        if nc is None or not nc.is_connected:
            return "disconnected"
        if not ping:
            return None
        try:  # a slow answer on a busy machine still proves the connection works
            await nc.flush(timeout=max(1.0, self._down_after))
        except Exception:
            return "ping_failed"
        # the event loop may have stalled while waiting (a pause right now)
        if stalls and loop.time() - self._stalled_at < self._down_after + self.stall_limit:
            return "stalled"
        return None

    async def _members_loop(self) -> None:
        """Every ``members_interval``: the live members in the store that this node has not
        heard over NATS are awaited by the transport (``expect``), so a member cut off NATS
        before this node first heard it (this node just joined or restarted) is judged down
        too, and its lease revoked, instead of keeping its sessions for as long as it renews
        its lease."""
        expect = getattr(self.node.transport, "expect", None)
        if expect is None:
            return
        m = self.node.membership
        while True:
            await asyncio.sleep(self.members_interval)
            if m.fenced:
                return
            nc = getattr(self.node.transport, "nc", None)
            if nc is None or not nc.is_connected:
                continue  # every peer is silent for this node now: nothing to learn
            try:
                for node_id in await _live_members(m.db, self.join_grace):
                    if node_id != m.node_id and expect(node_id):
                        log.debug("cluster_member_awaited", node=m.node_id, peer=node_id)
            except Exception as e:
                log.warning("cluster_members_read_failed", error=repr(e)[:300])

    # ----------------------------------------------------------------- events

    def _on_event(self, event: Event) -> None:
        """Each gone node in a task of its own: several nodes fail over at once."""
        task = asyncio.get_running_loop().create_task(self._handle_event(event))
        self._tasks.append(task)
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[Any]) -> None:
        with contextlib.suppress(ValueError):
            self._tasks.remove(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("cluster_failover_failed", error=repr(task.exception())[:300])

    async def _handle_event(self, event: Event) -> None:
        data = event.data
        peer = data.get("peer")
        parts = split_node_id(peer) if isinstance(peer, str) else None
        if parts is None:
            return
        name, inc = parts
        cause = str(data.get("cause", "left")) if event.topic == topics.CLUSTER_NODE_DOWN else LEFT
        since = time.monotonic()
        revoked = False
        # "no responders" came from the NATS server: this node's connection works
        if self.revoke and cause in REVOKE_CAUSES:
            revoked = await self._revoke_when_healthy(str(peer), name, inc, cause)
        if cause == LEFT:  # its goodbye comes before its lease is given up: wait for that
            m = self.node.membership
            for _ in range(int(m.lease * 10)):  # up to one lease
                if not await m.is_live(name, inc):
                    break
                await asyncio.sleep(0.1)
        await self.take_over(name, inc, cause, since=since, revoked=revoked)

    async def _revoke_when_healthy(self, peer: str, name: str, inc: int, cause: str) -> bool:
        """Revoke ``peer``'s lease once this node is healthy. A node that was not healthy when
        it saw the peer down (its loop stalled: a busy machine, a restart just done) tries
        again every ``down_after / 4`` while the peer stays down here and its lease lives: a
        node cut off NATS but not the store keeps renewing its lease, so without a revocation
        nobody would take over.

        **Bound.** A stall of this node defers for at most ``defer_limit`` (``3 *
        down_after``) after the node-down event; from then on only being fenced or cut off
        NATS (no connection, no answer to a ping) defers. A peer judged down only because this
        node stalled is heard again within a heartbeat once this node runs, and is up again
        after the ``nd``/``nda`` exchange, which ends the deferral; one still down here
        ``defer_limit`` later, while this node's connection answers, really is silent. So a
        survivor that is merely slow (a loaded machine stalls its loop again and again) still
        revokes, within about ``defer_limit`` plus one ping."""
        # "no responders" came from the NATS server: this node's connection works
        ping = cause != "no_responders"
        retry = max(0.25, self._down_after / 4)
        loop = asyncio.get_running_loop()
        started = loop.time()
        while True:
            why = await self.unhealthy(ping, stalls=loop.time() - started < self.defer_limit)
            if why is None:
                try:
                    return await self.node.membership.revoke(name, inc, cause)
                except Exception as e:
                    log.warning("cluster_revoke_failed", peer=peer, error=repr(e)[:300])
                    return False
            log.info(
                "cluster_revoke_deferred", node=self.node.membership.node_id, peer=peer, why=why
            )
            await asyncio.sleep(retry)
            m = self.node.membership
            if m.fenced or not self.node.transport.is_down(peer):
                return False  # fenced here, or the peer is back: its lease decides
            if not await m.is_live(name, inc):
                return False  # revoked by another node, or its lease ran out

    async def _sweeper(self) -> None:
        """Nodes gone unseen: their leases ended in the store (a node that died while this one
        was cut off, or whose revocation another node could not make)."""
        while True:
            await asyncio.sleep(self.sweep_interval)
            try:
                await self.sweep()
            except Exception as e:
                log.warning("cluster_failover_sweep_failed", error=repr(e)[:300])

    async def sweep(self) -> int:
        """Restart what this node should of every node gone recently; how many it restarted."""
        m = self.node.membership
        if m.fenced:
            return 0
        total = 0
        for info in await list_nodes(m.db, include_gone=True):
            key = (info.name, info.incarnation)
            if info.live or key in self._handled or info.expires_in < -RECENT:
                continue
            cause = LEFT if info.state == LEFT else "lease_ended"
            # one sweep after its lease ended, any survivor claims (the one picked may be gone)
            force = info.expires_in < -self.sweep_interval
            total += await self.take_over(info.name, info.incarnation, cause, force=force)
        return total

    # ----------------------------------------------------------------- takeover

    async def take_over(
        self,
        name: str,
        incarnation: int,
        cause: str,
        *,
        since: float | None = None,
        force: bool = False,
        revoked: bool = False,
    ) -> int:
        """Restart on this node the sessions of ``name#incarnation`` that the rules restart and
        that placement gives this node (all it may host with ``force``), once that node is not
        live in the store; returns how many. One run per gone node at a time."""
        key = (name, incarnation)
        running = self._running.get(key)
        if running is not None:
            return await asyncio.shield(running)
        task = asyncio.get_running_loop().create_task(
            self._take_over(name, incarnation, cause, since, force, revoked)
        )
        self._running[key] = task
        try:
            return await asyncio.shield(task)
        finally:
            if self._running.get(key) is task and task.done():
                del self._running[key]

    async def _take_over(
        self,
        name: str,
        incarnation: int,
        cause: str,
        since: float | None,
        force: bool,
        revoked: bool = False,
    ) -> int:
        m = self.node.membership
        me = m.node_id
        if m.fenced or (name == m.name and incarnation == m.incarnation):
            return 0
        if not revoked and await m.is_live(name, incarnation):
            return 0  # not revoked: its lease decides (the sweep comes back to it)
        store = self.agents.store
        rows = await store.conversations.owned_by(name, incarnation)
        todo = [c for c in rows if restarts_on_failover(c, cause)]
        if not todo:
            self._handled.add((name, incarnation))
            return 0
        infos = await m.nodes()
        if all(n.node_id != me for n in infos):
            return 0
        gone = f"{name}#{incarnation}"
        mine = await self._mine(todo, [Candidate(n.node_id, 0, n.labels) for n in infos], force)
        with tracer.start_as_current_span(
            "cluster.failover", attributes={"from": gone, "to": me, "sessions": len(mine)}
        ):
            gate = asyncio.Semaphore(self.concurrency)
            done = await asyncio.gather(*(self._restart(c, gate) for c in mine))
        moved = sum(done)
        if moved:
            self.moved += moved
            SESSIONS_MOVED.labels(me).inc(moved)
            if since is not None:
                FAILOVER_SECONDS.labels(me).observe(time.monotonic() - since)
            log.info("cluster_sessions_moved", node=me, peer=gone, count=moved, cause=cause)
            self.node.runtime.events.publish(
                topics.CLUSTER_SESSIONS_MOVED,
                node=me,
                **{"from": gone},
                to=me,
                count=moved,
                cause=cause,
            )
        return moved

    async def _mine(
        self, todo: list[Conversation], candidates: list[Candidate], force: bool
    ) -> list[Conversation]:
        """The sessions of ``todo`` this node restarts (``takeover_target``); those no live
        node may host (the labels their agent requires) are recorded in ``unplaced``, logged
        once and counted (``outcome="no_node"``): they stay the gone node's in the store, and
        each sweep (for ``RECENT`` seconds) places them once a node with the labels is live,
        as a call through the API answers ``503 no-node-available`` until then."""
        me = self.node.membership.node_id
        labels: dict[str, dict[str, str] | None] = {}
        mine = []
        for c in todo:
            if c.agent_name not in labels:
                labels[c.agent_name] = await required_labels(self.agents.store, c.agent_name)
            required = labels[c.agent_name]
            try:
                target = takeover_target(c.session_id, candidates, me, required, force=force)
            except NoNodeAvailableError:
                if c.session_id not in self.unplaced:
                    self.unplaced[c.session_id] = dict(required or {})
                    TAKEOVERS.labels(me, "no_node").inc()
                    log.warning(
                        "cluster_takeover_no_node",
                        node=me,
                        session=c.session_id,
                        agent=c.agent_name,
                        labels=required,
                    )
                continue
            self.unplaced.pop(c.session_id, None)
            if target == me:
                mine.append(c)
        return mine

    async def _restart(self, conv: Conversation, gate: asyncio.Semaphore) -> int:
        me = self.node.membership.node_id
        async with gate:
            try:  # the one takeover path: claimed now (epoch + 1), then started
                await self.agents.revive(conv.session_id, claim=True, conv=conv)
            except SessionOwnedError:
                TAKEOVERS.labels(me, "lost").inc()  # another survivor claimed it first
                return 0
            except Exception as e:
                TAKEOVERS.labels(me, "failed").inc()
                log.warning("cluster_takeover_failed", session=conv.session_id, error=repr(e))
                return 0
            TAKEOVERS.labels(me, "taken").inc()
            return 1
