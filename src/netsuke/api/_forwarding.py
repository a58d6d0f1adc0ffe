"""Session requests that reach the owning node from any node (issue 17).

In a cluster (``netsuke serve --cluster``, ``--nodes N``) a session lives on one node (its
owner in the store, see ``docs/cluster.md``). A request for it may arrive at any node: the
receiving node **authenticates and authorises** it (API key, role, the session's user), then
either serves it (the session is here, or nobody live owns it) or forwards the operation to
the owner over the cluster's ``SessionService`` (``netsuke.cluster._forward``): ``start``
(get-or-start), ``run`` (a JSON turn, with the request's audit record and ``Idempotency-Key``,
committed by the owner in the turn's transaction before it answers), ``stream`` (SSE and the
chat WebSocket: the owner streams events back), ``status``, ``cancel``, ``restart``, ``stop``
and ``sessions`` (a node's running sessions, for cluster-wide listings). History is read from
the shared store by the receiving node itself.

Every such answer carries ``X-Netsuke-Node``: the node id that served it. Errors: the owner's
problem travels as is; an owner that is gone before it got the request is ``503
session-moved`` (``Retry-After: 1``; nothing ran); an owner lost mid-request is ``504
owner-lost`` (its outcome is unknown: retry with the same ``Idempotency-Key``, which answers
from the store if it was committed); no answer within the caller's timeout is ``504
forward-timeout``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from netsuke.agents import AgentNotFoundError
from netsuke.cluster._forward import (
    ForwardTimeoutError,
    OwnerLostError,
    OwnerUnreachableError,
    RemoteOpError,
    SessionService,
)
from netsuke.cluster._placement import Candidate, NoNodeAvailableError, choose_node
from netsuke.kernel import NetsukeError, Pid
from netsuke.observability import get_logger
from netsuke.store import NotFoundError, SessionOwnedError

from ._context import ApiContext
from ._problems import ProblemError

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = [
    "NODE_HEADER",
    "WireProblem",
    "forward",
    "forward_stream",
    "get_or_start",
    "install_forwarding",
    "owner_elsewhere",
    "service_of",
]

log = get_logger("netsuke.api")
NODE_HEADER = "X-Netsuke-Node"
TURN_TIMEOUT = 900.0  # a forwarded turn: the agent's own turn_timeout normally ends it first
CALL_TIMEOUT = 15.0  # status, cancel, stop, restart, start, listings
MAX_HOPS = 2


class WireProblem(Exception):
    """A problem raised by an op on the owner, sent back whole (``to_wire``)."""

    def __init__(self, problem: ProblemError) -> None:
        super().__init__(str(problem))
        self.problem = problem

    def to_wire(self) -> dict[str, Any]:
        p = self.problem
        return {
            "problem": {
                "status": p.status,
                "title": p.title,
                "detail": p.detail,
                "type": p.type,
                "headers": dict(p.headers),
                "extensions": dict(p.extensions),
            }
        }


def service_of(ctx: ApiContext) -> SessionService | None:
    svc = ctx.extras.get("forward")
    return svc if isinstance(svc, SessionService) else None


def here(ctx: ApiContext) -> str:
    """This node's id (``name#incarnation`` in a cluster)."""
    return str(ctx.runtime.node)


async def owner_elsewhere(ctx: ApiContext, session_id: str) -> str | None:
    """The id of the live node that owns ``session_id`` when that is another node; ``None``
    when this node serves it (it runs here, nobody live owns it, or no cluster)."""
    if service_of(ctx) is None or ctx.runtime.whereis(session_id) is not None:
        return None
    try:
        conv = await ctx.store.conversations.get(session_id)
    except NotFoundError:
        return None
    node, inc = conv.owner_node, conv.owner_incarnation
    if node is None or inc is None:
        return None
    me = ctx.store.conversations.node
    if node == me.name and inc == me.incarnation:
        return None
    if not await ctx.store.conversations.liveness.is_live(node, inc):
        return None
    return f"{node}#{inc}"


def _moved(node: str, detail: str) -> ProblemError:
    return ProblemError(
        503,
        "Session moved",
        detail,
        type="session-moved",
        headers={"Retry-After": "1", NODE_HEADER: node},
    )


def _problem_of(exc: Exception, node: str) -> ProblemError:
    if isinstance(exc, RemoteOpError):
        p = exc.data.get("problem")
        if isinstance(p, dict):
            headers = {str(k): str(v) for k, v in dict(p.get("headers") or {}).items()}
            headers[NODE_HEADER] = node
            return ProblemError(
                int(p.get("status", 502)),
                str(p.get("title", "Error")),
                p.get("detail"),
                type=str(p.get("type")) if p.get("type") else None,
                headers=headers,
                **dict(p.get("extensions") or {}),
            )
        return ProblemError(
            502, "Forwarded request failed", exc.type_name, type="forward-failed",
            headers={NODE_HEADER: node},
        )  # fmt: skip
    if isinstance(exc, OwnerUnreachableError):
        return _moved(node, "the session's owner node is gone; nothing ran: retry")
    if isinstance(exc, OwnerLostError):
        return ProblemError(
            504,
            "Owner lost",
            "the session's owner node went down during the request; its outcome is unknown: "
            "retry with the same Idempotency-Key",
            type="owner-lost",
            headers={"Retry-After": "1", NODE_HEADER: node},
        )
    if isinstance(exc, ForwardTimeoutError):
        return ProblemError(
            504,
            "Forward timed out",
            "the session's owner node did not answer in time; the outcome is unknown",
            type="forward-timeout",
            headers={NODE_HEADER: node},
        )
    raise exc


async def forward(
    ctx: ApiContext, node: str, op: str, args: dict[str, Any], *, timeout: float = CALL_TIMEOUT
) -> Any:
    """Run ``op`` on ``node``; its answer, or the matching ``ProblemError``."""
    svc = service_of(ctx)
    assert svc is not None
    try:
        return await svc.call(node, op, args, timeout=timeout)
    except (RemoteOpError, OwnerUnreachableError, OwnerLostError, ForwardTimeoutError) as e:
        raise _problem_of(e, node) from None


async def forward_stream(
    ctx: ApiContext, node: str, op: str, args: dict[str, Any], *, timeout: float = TURN_TIMEOUT
) -> AsyncIterator[Any]:
    """The chunks of the streaming ``op`` on ``node``; ``ProblemError`` as ``forward``."""
    svc = service_of(ctx)
    assert svc is not None
    try:
        async for kind, value in svc.stream(node, op, args, timeout=timeout):
            if kind == "chunk":
                yield value
    except (RemoteOpError, OwnerUnreachableError, OwnerLostError, ForwardTimeoutError) as e:
        raise _problem_of(e, node) from None


# ------------------------------------------------------------------ get-or-start


async def _candidates(ctx: ApiContext) -> list[Candidate]:
    from netsuke.cluster._placement import live_candidates

    return await live_candidates(ctx.store)


def _no_node(e: NoNodeAvailableError) -> ProblemError:
    """503 ``no-node-available`` (``Retry-After: 5``): no live node carries the labels."""
    return ProblemError(
        503, "No node available", str(e), type="no-node-available", headers={"Retry-After": "5"}
    )


async def place(ctx: ApiContext, session_id: str, required: dict[str, str] | None) -> str:
    """The node a new session starts on (``netsuke.cluster._placement``); 503
    ``no-node-available`` when no live node carries ``required``."""
    try:
        return choose_node(
            ctx.settings.placement,
            session_id,
            await _candidates(ctx),
            here(ctx),
            required=required,
        )
    except NoNodeAvailableError as e:
        raise _no_node(e) from None


async def get_or_start(
    ctx: ApiContext,
    agent: str,
    user: str,
    *,
    owner: Pid | None = None,
    hops: int = 0,
    required: dict[str, str] | None = None,
) -> tuple[str, bool, dict[str, Any] | None]:
    """Get-or-start the session ``<agent>-<user>`` on whichever node owns it (or should):
    ``(serving node id, created, view)``; ``view`` is the owner's session view when the
    session was started or found on another node, else ``None`` (the caller builds it).

    Atomic across nodes: a node starts it only if its claim wins the store's compare-and-set
    (``exclusive`` start); a loser forwards to the winner, so every caller gets the one
    session."""
    from netsuke.agents import Agents

    agents = ctx.extras.get("agents")
    assert isinstance(agents, Agents)
    sid = f"{agent}-{user}"
    me = here(ctx)
    if service_of(ctx) is None:
        created = ctx.runtime.whereis(sid) is None
        try:
            await _start_here(ctx, agents, agent, user, owner)
        except SessionOwnedError as e:  # a custom liveness policy says another node owns it
            raise _moved(f"{e.node}#{e.incarnation}", str(e)) from None
        return me, created, None
    target = await owner_elsewhere(ctx, sid)
    if target is None and hops == 0:
        try:
            conv = await ctx.store.conversations.get(sid)
        except NotFoundError:
            conv = None
        mine = conv is not None and conv.owner_node == ctx.store.conversations.node.name
        if not mine:  # new, unowned, or its owner is gone: placement decides
            chosen = await place(ctx, sid, required)
            target = None if chosen == me else chosen
    for _ in range(MAX_HOPS + 1):
        if target is None:
            try:
                created = ctx.runtime.whereis(sid) is None
                await _start_here(ctx, agents, agent, user, owner)
                return me, created, None
            except SessionOwnedError as e:  # another node won the claim: forward to it
                target = f"{e.node}#{e.incarnation}"
        if hops >= MAX_HOPS:
            raise _moved(target, "the session's owner changed during the start: retry")
        try:
            out = await forward(
                ctx, target, "start", {"agent": agent, "user": user, "owner": owner,
                                       "hops": hops + 1},
            )  # fmt: skip
        except ProblemError as p:
            if p.type == "session-moved" and p.status == 503:
                target = None  # the chosen node is gone: start here
                hops += 1
                continue
            raise
        return str(out["node"]), bool(out["created"]), dict(out["view"])
    raise _moved(me, "the session's owner changed during the start: retry")


async def _start_here(
    ctx: ApiContext, agents: Any, agent: str, user: str, owner: Pid | None
) -> None:
    # One start of a session at a time on this node: a concurrent caller would otherwise get
    # the pid of a process still in ``init`` (AlreadyStartedError), whose claim may then lose
    # to another node; after the lock, the session runs here or SessionOwnedError names the
    # owner.
    locks: dict[str, list[Any]] = ctx.extras.setdefault("_start_locks", {})
    sid = f"{agent}-{user}"
    entry = locks.get(sid)
    if entry is None:
        entry = locks[sid] = [asyncio.Lock(), 0]  # the lock, and how many hold or wait
    entry[1] += 1
    try:
        async with entry[0]:
            await agents.start_session(agent, user, owner=owner, exclusive=True)
    except SessionOwnedError:
        raise
    except NetsukeError as exc:
        from ._turns import agent_problem

        raise agent_problem(exc) from None
    finally:
        entry[1] -= 1
        if entry[1] == 0 and locks.get(sid) is entry:
            del locks[sid]


async def adopt(ctx: ApiContext, session_id: str) -> str | None:
    """Take over a stored session whose owner node is gone (failover on the next request).
    Returns the node id to forward the request to when the session's agent requires node
    labels (``node_labels``) this node does not carry: the node failover's placement picks
    for it (``takeover_target``), which takes it over when the request reaches it; else
    ``None``: the session now runs here, or is left alone (a session this node owns, stopped
    on purpose, one never claimed, one stopped for good: ``Agents.revive``). 503
    ``no-node-available`` when no live node carries the labels."""
    from netsuke.agents import AgentNotFoundError, Agents
    from netsuke.cluster._failover import takeover_target
    from netsuke.cluster._placement import required_labels as stored_labels

    agents = ctx.extras.get("agents")
    if service_of(ctx) is None or not isinstance(agents, Agents):
        return None
    try:
        conv = await ctx.store.conversations.get(session_id)
    except NotFoundError:
        return None
    me = ctx.store.conversations.node
    if conv.owner_node is None or conv.owner_incarnation is None or conv.owner_node == me.name:
        return None
    if await ctx.store.conversations.liveness.is_live(conv.owner_node, conv.owner_incarnation):
        return None
    required = await stored_labels(ctx.store, conv.agent_name)
    if required:
        candidates = await _candidates(ctx)
        mine = next((c for c in candidates if c.node_id == here(ctx)), None)
        if mine is None or any(mine.labels.get(k) != v for k, v in required.items()):
            try:
                target = takeover_target(session_id, candidates, here(ctx), required)
            except NoNodeAvailableError as e:
                raise _no_node(e) from None
            log.info("api.session_adopt_forwarded", session=session_id, to=target)
            return target
    try:  # the one takeover path (as failover's): claimed now, then started from the store
        await agents.revive(session_id, claim=True, conv=conv)
    except SessionOwnedError:
        return None  # another live node claimed it first: the request is forwarded there
    except AgentNotFoundError:
        return None  # stopped for good: the request answers 404 as on one node
    log.info("api.session_adopted", session=session_id, previous=conv.owner_node)
    return None


# ------------------------------------------------------------------ the owner's side


def _audit_from_wire(raw: Any) -> tuple[Any, ...] | None:
    if not isinstance(raw, list) or len(raw) != 6:
        return None
    at, actor, action, target, outcome, details = raw
    return (datetime.fromisoformat(at), actor, action, target, outcome, details)


def audit_to_wire(audit: tuple[Any, ...]) -> list[Any]:
    at, actor, action, target, outcome, details = audit
    return [at.isoformat(), actor, action, target, outcome, details]


def install_forwarding(ctx: ApiContext, service: SessionService) -> None:
    """Serve this node's sessions to the cluster: register the ops (see the module doc)."""
    from .routes.sessions import _problem, local_list, local_view, run_local, stream_local

    ctx.extras["forward"] = service

    def wrap(exc: Exception) -> Exception:
        if isinstance(exc, ProblemError):
            exc.headers[NODE_HEADER] = here(ctx)
            return WireProblem(exc)
        if isinstance(exc, NetsukeError):
            p = _problem(exc)
            p.headers[NODE_HEADER] = here(ctx)
            return WireProblem(p)
        return exc

    async def start(a: dict[str, Any]) -> Any:
        owner = a.get("owner")
        try:
            node, created, view = await get_or_start(
                ctx,
                str(a["agent"]),
                str(a["user"]),
                owner=owner if isinstance(owner, Pid) else None,
                hops=int(a.get("hops", 1)),
            )
            if view is None:
                sid = f"{a['agent']}-{a['user']}"
                view = (await local_view(ctx, sid, a["agent"], a["user"], True)).model_dump()
        except Exception as e:
            raise wrap(e) from None
        return {"node": node, "created": created, "view": view}

    async def run(a: dict[str, Any]) -> Any:
        audit = _audit_from_wire(a.get("audit"))
        try:
            return await run_local(ctx, str(a["session"]), a["message"], a.get("request_id"), audit)
        except Exception as e:
            raise wrap(e) from None

    async def stream(a: dict[str, Any]) -> AsyncIterator[Any]:
        try:
            async for item in stream_local(
                ctx, str(a["session"]), a["message"], a.get("request_id")
            ):
                yield list(item)
        except Exception as e:
            raise wrap(e) from None

    async def status(a: dict[str, Any]) -> Any:
        sid = str(a["session"])
        try:
            view = await local_view(ctx, sid, a.get("agent"), a.get("user"), True)
        except Exception as e:
            raise wrap(e) from None
        return view.model_dump()

    async def cancel(a: dict[str, Any]) -> Any:
        agents = ctx.extras["agents"]
        try:
            return bool(await agents.cancel(str(a["session"])))
        except AgentNotFoundError:
            return False
        except Exception as e:
            raise wrap(e) from None

    async def stop(a: dict[str, Any]) -> Any:
        return bool(await ctx.extras["agents"].stop_agent(str(a["session"])))

    async def restart(a: dict[str, Any]) -> Any:
        from .routes.session_control import restart_here

        try:
            return await restart_here(ctx, str(a["session"]))
        except Exception as e:
            raise wrap(e) from None

    async def sessions(a: dict[str, Any]) -> Any:
        users = a.get("users")
        return await local_list(ctx, a.get("agent"), users if isinstance(users, list) else None)

    for name, fn in (
        ("start", start),
        ("run", run),
        ("status", status),
        ("cancel", cancel),
        ("stop", stop),
        ("restart", restart),
        ("sessions", sessions),
    ):
        service.handle(name, fn)
    service.handle("stream", stream, stream=True)


async def start_forwarding(app: FastAPI) -> SessionService | None:
    """In a cluster: the node's ``SessionService``, serving (called from the app's lifespan)."""
    ctx: ApiContext = app.state.ctx
    cluster = ctx.extras.get("cluster")
    if cluster is None:
        return None
    service = SessionService(cluster.transport, ctx.runtime.events)
    install_forwarding(ctx, service)
    agents = ctx.extras.get("agents")
    if agents is not None:  # delegation and agent queries across nodes
        from netsuke.cluster._delegates import ClusterAgents

        ClusterAgents(agents, service, placement=ctx.settings.placement).install()
    await service.start()
    return service


async def gather_nodes(
    ctx: ApiContext, op: str, args: dict[str, Any], *, timeout: float = CALL_TIMEOUT
) -> list[tuple[str, Any]]:
    """``op`` on every other live node, in parallel: ``(node id, answer)`` of those that
    answered (a node that does not is logged and left out)."""
    from netsuke.cluster import list_nodes

    me = here(ctx)
    others = [n.node_id for n in await list_nodes(ctx.store.database) if n.node_id != me]

    async def one(node: str) -> tuple[str, Any] | None:
        try:
            return node, await forward(ctx, node, op, args, timeout=timeout)
        except ProblemError as p:
            log.warning("api.cluster_fanout_failed", op=op, peer=node, status=p.status)
            return None

    done = await asyncio.gather(*(one(n) for n in others))
    return [d for d in done if d is not None]


async def required_labels(ctx: ApiContext, agent: str) -> dict[str, str] | None:
    """The node labels the stored definition ``agent`` requires (``node_labels``), if any."""
    from netsuke.cluster._placement import required_labels as stored_labels

    if service_of(ctx) is None:
        return None
    return await stored_labels(ctx.store, agent)
