"""Delegation, capability routing and agent queries across the nodes of a cluster (issue
17, parts 1 and 4).

``ClusterAgents(agents, service)`` joins a node's ``Agents`` to its ``SessionService``
(``netsuke.cluster._forward``): ``install()`` serves three ops to the other nodes and sets
``agents.remote``, after which

* **a delegation** (``StoredTools``' delegation tools, ``routing.agents_runner``) to a delegate
  session that lives on another node, or that placement puts there, runs there: ``delegate``
  finds the delegate session ``f"{target}@{root session}"`` (``Agents.delegate_session``'s
  name) and runs it here when it runs here, when this node owns it, or when placement
  (``netsuke.cluster._placement``, the node's ``placement`` policy and the target
  definition's ``node_labels``) picks this node for a new one; otherwise it forwards the turn
  (op ``delegate``) to the live owner, or to the node placement picked. The chain travels
  with it: the calling turn's agent, session, user, execution id, its parent's, the chain of
  agent names and the caller's request id; the trace context travels in the frame's headers.
  So the delegate's turn is recorded as a child of the calling turn, its own delegations
  check the whole chain (the depth limit and cycles hold across nodes: the serving node reads
  the definitions of the chain's agents from the shared store), and its memory is the one of
  the caller's root conversation and user, as on one node.
* **capability routing** (``Node.process``): when no agent running on this node offers the
  capabilities, ``route`` finds one running on another node (a cluster-wide ``find``), and
  ``run_in`` runs the conversation's session where it lives or where placement puts it (the
  same op, without a parent turn);
* **queries** ``Agents.find``/``count``/``stop_matching`` ask every live node (ops
  ``agents_find``, ``agents_count``, ``agents_stop``, in parallel, within a timeout); a node
  that does not answer is reported in the answer's ``unreachable``.

Errors come back as the classes a local delegation raises (``TurnTimeoutError``,
``ModelCallError``, ``SessionMovedError``, ``AgentBusyError``, ``ChainDepthError``, ...: the
owner sends the type name and fields, rebuilt here from a fixed table of Netsuke's
exceptions, never an arbitrary class). Faults of the forward itself:

* the chosen node is gone before it got the request (NATS "no responders"): nothing ran;
  placement chooses again without it (this node, another one, or ``NoNodeAvailableError``
  when no other live node carries the delegate's labels);
* the node went down during the turn: ``TurnCancelledError`` with reason ``stopped:
  'noconnection'`` (what a local delegate's death gives; outcome unknown);
* no answer within the calling turn's remaining time: ``TurnTimeoutError``.

A delegated turn forwarded with a caller that has a request id carries its own request id,
derived from the caller's tool call key and the message (``delegate_request_id``), so a retry
of the calling turn with the same ``Idempotency-Key`` gets the delegate's stored reply
instead of a second delegated turn.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import structlog
from opentelemetry import trace
from prometheus_client import Counter

from netsuke.agents import (
    AgentQuery,
    Agents,
    TurnCancelledError,
    TurnContext,
    TurnTimeoutError,
    current_tool_call,
    scoped_session_name,
)
from netsuke.agents import _errors as agent_errors
from netsuke.agents._context import _RowState
from netsuke.agents._queries import AgentInfo
from netsuke.agents._runner import ensure_row
from netsuke.kernel import AlreadyStartedError, Pid
from netsuke.kernel import _errors as kernel_errors
from netsuke.observability import REGISTRY
from netsuke.routing import _errors as routing_errors
from netsuke.routing._errors import NoRouteError
from netsuke.store import NotFoundError, SessionOwnedError
from netsuke.store import _errors as store_errors

from ._codec import EncodeError, encode
from ._forward import (
    ForwardError,
    ForwardTimeoutError,
    OwnerLostError,
    OwnerUnreachableError,
    RemoteOpError,
    SessionService,
)
from ._placement import Candidate, choose_node, live_candidates, required_labels

__all__ = ["ClusterAgents", "delegate_request_id", "delegate_scope", "error_from_wire"]

log = structlog.get_logger("netsuke.cluster")
tracer = trace.get_tracer("netsuke.cluster")

DELEGATIONS = Counter(
    "netsuke_cluster_delegations",
    "Delegated turns by where they ran (local, forwarded) and outcome (ok, error, "
    "unreachable, owner_lost, timeout), as the delegating node.",
    ["where", "outcome"],
    registry=REGISTRY,
)
QUERIES = Counter(
    "netsuke_cluster_agent_queries",
    "Cluster-wide agent queries (find, count, stop) by result (complete, partial).",
    ["op", "result"],
    registry=REGISTRY,
)

TURN_TIMEOUT = 900.0
"""The bound of a forwarded delegated turn when the calling turn's own limit is unknown."""

_WIRE_TYPES: dict[str, type[BaseException]] = {}
for _mod in (agent_errors, routing_errors, kernel_errors, store_errors):
    for _name in getattr(_mod, "__all__", ()):
        _cls = getattr(_mod, _name)
        if isinstance(_cls, type) and issubclass(_cls, BaseException):
            _WIRE_TYPES[_name] = _cls


def _plain(value: Any) -> bool:
    try:
        encode(value)
    except (EncodeError, ValueError, TypeError):
        return False
    return True


class _WireError(Exception):
    """An exception of the serving node, sent with its type name and fields."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__(str(exc))
        self.exc = exc

    def to_wire(self) -> dict[str, Any]:
        e = self.exc
        fields = {k: v for k, v in vars(e).items() if not k.startswith("_") and _plain(v)}
        return {"error": {"type": type(e).__name__, "message": str(e), "fields": fields}}


def error_from_wire(exc: RemoteOpError) -> BaseException:
    """The exception a serving node raised, as its own class when it is one of Netsuke's
    (agents, routing, kernel, store errors: same type, message and fields), else the
    ``RemoteOpError`` itself."""
    err = exc.data.get("error") if isinstance(exc.data, dict) else None
    if not isinstance(err, dict):
        return exc
    cls = _WIRE_TYPES.get(str(err.get("type")))
    if cls is None:
        return exc
    out = cls.__new__(cls)
    BaseException.__init__(out, str(err.get("message", "")))
    fields = err.get("fields")
    if isinstance(fields, dict):
        for k, v in fields.items():
            if isinstance(k, str) and not k.startswith("_"):
                try:
                    setattr(out, k, v)
                except AttributeError:  # a read-only attribute: keep the class default
                    pass
    return out


def delegate_scope(parent: TurnContext) -> str:
    """The root conversation a delegation by ``parent`` serves (``Agents.delegate_session``'s
    rule: the scope of the delegate session ``parent`` runs in, else its session)."""
    scope = parent.session
    prefix = f"{parent.agent}@"
    if scope.startswith(prefix) and len(scope) > len(prefix):
        scope = scope[len(prefix) :]
    return scope


def delegate_request_id(parent: TurnContext, session: str, message: Any) -> str | None:
    """The request id of a delegated turn: ``None`` when the caller has none, else stable
    for the same calling request, tool call and message (a retry of the calling turn with
    its ``Idempotency-Key`` finds the delegate's stored reply)."""
    if parent.request_id is None:
        return None
    call = current_tool_call()
    key = call.idempotency_key if call is not None else parent.execution_id
    digest = hashlib.sha256(f"{key}\x00{session}\x00{message!r}".encode()).hexdigest()
    return f"dlg-{digest[:40]}"


def _parent_to_wire(p: TurnContext) -> dict[str, Any]:
    return {
        "agent": p.agent,
        "session": p.session,
        "user": p.user,
        "execution_id": p.execution_id,
        "parent_execution_id": p.parent_execution_id,
        "chain": list(p.chain),
        "request_id": p.request_id,
    }


def _parent_from_wire(raw: Any) -> TurnContext:
    if not isinstance(raw, dict):
        raise ValueError("malformed delegation: no parent context")
    chain = raw.get("chain")
    if not isinstance(chain, list | tuple) or not all(isinstance(a, str) for a in chain):
        raise ValueError("malformed delegation: chain")
    row = _RowState()
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    done.set_result(None)  # its execution row was written by the calling node
    row.future = done
    return TurnContext(
        str(raw["agent"]),
        str(raw["session"]),
        raw.get("user") if isinstance(raw.get("user"), str) else None,
        str(raw["execution_id"]),
        raw.get("parent_execution_id") if isinstance(raw.get("parent_execution_id"), str) else None,
        tuple(chain),
        None,
        time.monotonic(),
        {},
        raw.get("request_id") if isinstance(raw.get("request_id"), str) else None,
        row,
    )


def _output_to_wire(output: Any) -> Any:
    dump = getattr(output, "model_dump", None)
    if callable(dump):
        output = dump(mode="json")
    return output if _plain(output) else str(output)


LocalRun = Callable[[], Awaitable[Any]]


class ClusterAgents:
    """Delegation and agent queries over the cluster (see the module documentation).
    ``placement`` [``least-loaded``]: the policy for a delegate session that does not exist
    yet; ``query_timeout`` [5 s]: the default wait for each node's answer to a query."""

    def __init__(
        self,
        agents: Agents,
        service: SessionService,
        *,
        placement: str = "least-loaded",
        query_timeout: float = 5.0,
    ) -> None:
        self.agents = agents
        self.service = service
        self.placement = placement
        self.query_timeout = query_timeout
        self.node_id = service.node_id
        self._rr = itertools.count()

    def install(self) -> None:
        """Serve the ops to the cluster and make ``agents`` use this object."""
        self.service.handle("delegate", self._serve_delegate)
        self.service.handle("agents_find", self._serve_find)
        self.service.handle("agents_count", self._serve_count)
        self.service.handle("agents_stop", self._serve_stop)
        self.service.handle("agents_route", self._serve_route)
        self.agents.remote = self

    # -------------------------------------------------------------- delegation

    async def locate(
        self, session: str, target: str, *, exclude: frozenset[str] = frozenset()
    ) -> str | None:
        """The node id a delegated turn of ``session`` (a delegate session of ``target``)
        should run on; ``None``: this node. ``exclude``: nodes found gone meanwhile (NATS
        said no one holds their subject), not chosen even while their lease lasts."""
        agents = self.agents
        if agents.rt.whereis(session) is not None:
            return None
        store = agents.store
        try:
            conv = await store.conversations.get(session)
        except NotFoundError:
            conv = None
        if conv is not None and conv.owner_node is not None and conv.owner_incarnation is not None:
            me = store.conversations.node
            if (conv.owner_node, conv.owner_incarnation) == (me.name, me.incarnation):
                return None
            owner = f"{conv.owner_node}#{conv.owner_incarnation}"
            if owner not in exclude and await store.conversations.liveness.is_live(
                conv.owner_node, conv.owner_incarnation
            ):
                return owner
        chosen = choose_node(
            self.placement,
            session,
            [c for c in await self._candidates() if c.node_id not in exclude],
            self.node_id,
            required=await self._labels(target),
        )
        return None if chosen == self.node_id else chosen

    async def _candidates(self) -> list[Candidate]:
        return await live_candidates(self.agents.store)

    async def _labels(self, agent: str) -> dict[str, str] | None:
        return await required_labels(self.agents.store, agent)

    async def delegate(
        self, target: str, message: Any, parent: TurnContext, *, local: LocalRun
    ) -> Any:
        """Run a turn of ``target`` delegated by ``parent``: ``local()`` when it belongs on
        this node, else forwarded to its node (see the module documentation)."""
        session = scoped_session_name(target, delegate_scope(parent))
        return await self.run_in(target, session, parent.user, message, local=local, parent=parent)

    async def run_in(
        self,
        agent: str,
        session: str,
        user: str | None,
        message: Any,
        *,
        local: LocalRun,
        parent: TurnContext | None = None,
    ) -> Any:
        """One turn of ``agent`` in ``session`` (recorded for ``user``): ``local()`` when the
        session belongs on this node (it runs here, this node owns it, or placement picks
        this node for a new one), else the turn runs on the owner or the placed node; with
        ``parent``, as a delegated turn of that turn (the chain context travels)."""
        gone: frozenset[str] = frozenset()
        for _ in range(3):  # a chosen node found gone: choose again without it
            node = await self.locate(session, agent, exclude=gone)
            if node is None:
                return await self._count("local", local)
            try:
                return await self._forward(node, agent, session, user, message, parent)
            except OwnerUnreachableError:  # gone before it got it: nothing ran
                log.info("cluster_delegate_rerouted", target=agent, session=session, peer=node)
                gone |= {node}
        raise TurnCancelledError(agent, reason=f"stopped: 'noproc' (nodes {sorted(gone)} gone)")

    async def _forward(
        self,
        node: str,
        agent: str,
        session: str,
        user: str | None,
        message: Any,
        parent: TurnContext | None,
    ) -> Any:
        args: dict[str, Any] = {
            "target": agent,
            "session": session,
            "user": user,
            "message": message,
            "owner": None,
            "request_id": None,
            "parent": None,
            "hops": 0,
        }
        timeout = TURN_TIMEOUT
        if parent is not None:
            await ensure_row(parent, self.agents.store)  # the delegate's row names it as parent
            args["owner"] = self.agents.rt.whereis(parent.session)
            args["request_id"] = delegate_request_id(parent, session, message)
            args["parent"] = _parent_to_wire(parent)
            timeout = self._time_left(parent)
        outcome = "error"
        try:
            out = await self.service.call(node, "delegate", args, timeout=timeout)
            outcome = "ok"
        except OwnerUnreachableError:
            outcome = "unreachable"
            raise
        except OwnerLostError as e:
            outcome = "owner_lost"
            raise TurnCancelledError(
                agent, reason=f"stopped: 'noconnection' (node {e.node} went down)"
            ) from None
        except ForwardTimeoutError:
            outcome = "timeout"
            raise TurnTimeoutError(agent, timeout) from None
        except RemoteOpError as e:
            raise error_from_wire(e) from None
        finally:
            DELEGATIONS.labels("forwarded", outcome).inc()
            log.info(
                "cluster_delegated",
                target=agent,
                session=session,
                peer=node,
                outcome=outcome,
                depth=len(parent.chain) if parent is not None else 0,
            )
        return out["output"] if isinstance(out, dict) else out

    async def route(self, capabilities: Iterable[str], *, timeout: float | None = None) -> str:
        """The agent definition to route a message asking for ``capabilities`` to, among the
        agents running on any live node (for when none runs on this node): one offering all
        of them, taking turns among several; ``NoRouteError`` when none does. Each node
        answers with the names of its matching definitions only (op ``agents_route``)."""
        from ._membership import list_nodes

        need = sorted(frozenset(capabilities))
        wait = timeout or self.query_timeout
        live = await list_nodes(self.agents.store.database)
        others = [n.node_id for n in live if n.node_id != self.node_id]

        async def one(node: str) -> Any:
            try:
                return await self.service.call(
                    node, "agents_route", {"capabilities": need}, timeout=wait
                )
            except (ForwardError, RemoteOpError) as e:
                log.warning("cluster_agent_query_unanswered", op="route", peer=node, error=str(e))
                return None

        answers = await asyncio.gather(*(one(n) for n in others))
        names = set(self._offering(need))
        unreachable = [n for n, a in zip(others, answers, strict=True) if not isinstance(a, list)]
        for a in answers:
            if isinstance(a, list):
                names.update(x for x in a if isinstance(x, str))
        if not names:
            log.info("cluster_no_route", capabilities=need, unreachable=unreachable)
            raise NoRouteError(need)
        ordered = sorted(names)
        return ordered[next(self._rr) % len(ordered)]

    def _offering(self, need: Iterable[str]) -> list[str]:
        """The definitions of this node's running agents offering every capability."""
        want = frozenset(need)
        out = set()
        for e in self.agents.rt.registry.match(
            where=lambda m: type(m) is dict and m.get("kind") == "agent"
        ):
            agent = e.meta.get("agent")
            if isinstance(agent, str) and want <= frozenset(e.meta.get("capabilities") or ()):
                out.add(agent)
        return sorted(out)

    async def _serve_route(self, a: dict[str, Any]) -> Any:
        caps = a.get("capabilities")
        if not isinstance(caps, list):
            return []
        return self._offering(c for c in caps if isinstance(c, str))

    async def _count(self, where: str, run: LocalRun) -> Any:
        try:
            result = await run()
        except BaseException:
            DELEGATIONS.labels(where, "error").inc()
            raise
        DELEGATIONS.labels(where, "ok").inc()
        return result

    def _time_left(self, parent: TurnContext) -> float:
        proc = self.agents.rt.process(parent.session)
        limit = getattr(getattr(proc, "config", None), "turn_timeout", None)
        if not isinstance(limit, int | float) or parent.started_at <= 0:
            return TURN_TIMEOUT
        left = parent.started_at + float(limit) - time.monotonic()
        return max(left, 0.1)

    async def _serve_delegate(self, a: dict[str, Any]) -> Any:
        try:
            return await self._delegate_here(a)
        except Exception as e:
            raise _WireError(e) from None

    async def _delegate_here(self, a: dict[str, Any]) -> Any:
        agents = self.agents
        raw = a.get("parent")
        parent = _parent_from_wire(raw) if raw is not None else None
        target, session = str(a["target"]), str(a["session"])
        owner = a.get("owner")
        request_id = a.get("request_id")
        user = parent.user if parent is not None else a.get("user")
        if parent is not None:
            await self._learn(parent.chain)
        if agents.rt.whereis(session) is None:
            try:
                await agents.start_agent(
                    session,
                    await agents.config_for(target),
                    owner=owner if isinstance(owner, Pid) else None,
                    user=user if isinstance(user, str) else None,
                    exclusive=True,
                )
            except AlreadyStartedError:
                pass
            except SessionOwnedError as e:  # another live node won it meanwhile: one more hop
                if int(a.get("hops", 0)) >= 1:
                    raise
                node = f"{e.node}#{e.incarnation}"
                try:
                    return await self.service.call(
                        node, "delegate", {**a, "hops": 1}, timeout=TURN_TIMEOUT
                    )
                except RemoteOpError as re:
                    raise error_from_wire(re) from None
        with tracer.start_as_current_span(
            "cluster.delegate",
            attributes={"target": target, "depth": len(parent.chain) if parent else 0},
        ):
            result = await agents.run_turn(
                session,
                a["message"],
                parent=parent,
                request_id=request_id if isinstance(request_id, str) else None,
            )
        return {
            "output": _output_to_wire(result.output),
            "execution_id": result.execution_id,
            "node": self.node_id,
        }

    async def _learn(self, chain: Sequence[str]) -> None:
        """Make the chain's agents known here (their definitions, from the shared store), so
        the delegate's own delegations check the chain's depth limit as its first node did."""
        agents = self.agents
        for name in chain:
            if name not in agents._configs:
                try:
                    await agents.config_for(name)
                except Exception as e:  # a broken definition: its default depth applies
                    log.warning("cluster_delegate_chain_unknown", agent=name, error=repr(e))

    # ----------------------------------------------------------------- queries

    async def query(self, op: str, pattern: str | None, *, timeout: float) -> AgentQuery:
        """``op`` (``find``, ``count``, ``stop``) on every live node; see
        ``netsuke.agents._queries`` for the answer and its partial-result rule."""
        from ._membership import list_nodes

        mine = await self.agents.local_query(op, pattern)
        live = await list_nodes(self.agents.store.database)
        others = [n.node_id for n in live if n.node_id != self.node_id]

        async def one(node: str) -> tuple[str, Any] | None:
            try:
                return node, await self.service.call(
                    node, f"agents_{op}", {"pattern": pattern}, timeout=timeout
                )
            except (ForwardError, RemoteOpError) as e:
                log.warning("cluster_agent_query_unanswered", op=op, peer=node, error=str(e))
                return None

        answers = await asyncio.gather(*(one(n) for n in others))
        count = mine.total
        found = list(mine.agents)
        nodes = list(mine.nodes)
        unreachable = []
        for node, answer in zip(others, answers, strict=True):
            if answer is None or not isinstance(answer[1], dict):
                unreachable.append(node)
                continue
            body = answer[1]
            nodes.append(node)
            count += int(body.get("count", 0))
            for item in body.get("agents") or ():
                if isinstance(item, list) and len(item) == 3 and isinstance(item[1], Pid):
                    meta = item[2] if isinstance(item[2], dict) else {}
                    found.append(AgentInfo(str(item[0]), item[1], meta))
        QUERIES.labels(op, "partial" if unreachable else "complete").inc()
        if unreachable:
            log.warning("cluster_agent_query_partial", op=op, unreachable=unreachable)
        found.sort(key=lambda i: (i.name, i.pid.node))
        return AgentQuery(count, tuple(found), tuple(nodes), tuple(unreachable))

    async def _serve_find(self, a: dict[str, Any]) -> Any:
        q = await self.agents.local_query("find", _pattern(a))
        return {
            "count": q.total,
            "agents": [[i.name, i.pid, i.meta if _plain(i.meta) else {}] for i in q.agents],
        }

    async def _serve_count(self, a: dict[str, Any]) -> Any:
        return {"count": (await self.agents.local_query("count", _pattern(a))).total}

    async def _serve_stop(self, a: dict[str, Any]) -> Any:
        pattern = _pattern(a)
        if pattern is None:
            raise ValueError("stop_matching needs a pattern")
        return {"count": (await self.agents.local_query("stop", pattern)).total}


def _pattern(a: dict[str, Any]) -> str | None:
    p = a.get("pattern")
    return p if isinstance(p, str) else None
