"""``Agents``: the agent system of a node, bound to a ``Runtime`` and a ``Store``.

::

    async with Runtime() as rt, Store.open(url) as store:
        agents = await Agents.start(rt, store)
        pid = await agents.start_agent("sushi-bot", config)
        reply = await agents.run("sushi-bot", "How do I make nigiri?")
        sid, pid = await agents.start_session("support", "user-1", config)

Failure domains: every agent definition has its own ``DynamicSupervisor`` (registered as
``f"{supervisor}:{agent_name}"``, restart intensity ``max_restarts`` [100] in ``max_seconds``
[5.0]), started on demand as a ``temporary`` child of the system's ``DynamicSupervisor``
(registered as ``supervisor`` [``"netsuke.agents"``], under the node's root). Every agent server
is a ``transient`` child of the supervisor of its definition and is registered in
``rt.registry`` under its name with metadata ``{"kind": "agent", "agent", "session", "user",
"capabilities", "model"}``. So a crash-looping agent definition exhausts only its own
supervisor's intensity: that supervisor stops its sessions and exits ``shutdown``, is not
restarted (the next session of that definition starts a new one), and the sessions of every
other definition keep running, with their pids and memory.

* ``start_agent`` fails with ``AlreadyStartedError`` when the name is taken; ``start_session``
  is get-or-start (any number of concurrent callers get one session, named
  ``f"{agent_name}-{user_id}"`` as in seed 000).
* ``start_scoped(agent_name, scope)`` gets or starts the session of ``agent_name`` that
  serves one conversation ``scope`` (named ``f"{agent_name}@{scope}"``); ``delegate_session``
  is the one a delegated turn runs in: scoped to the root conversation of the calling chain,
  so a delegate never shares memory between conversations (or users).
* ``run``/``run_turn`` with ``request_id`` run a turn at most once per request id and
  session: the id, a hash of the message and the reply are committed with the turn; a retry
  with the same id gets the stored reply (no second turn); the same id with another message
  raises ``RequestKeyReusedError``; while a turn with that id runs on this node, another call
  with it raises ``RequestInProgressError`` (it does not wait). ``stream`` takes it too. See
  ``docs/agents.md``.
* ``run``/``stream`` reach an evicted session transparently: it is started again from its
  configuration and its memory is read from the store. ``revive`` is that path, and the one
  every takeover of a stored session takes (a call, the API's adopt on a cluster, failover).
* Configurations are found, in order: the one passed, one given earlier for that agent name
  (``define``), the store's definition (``store.factory.spec``), else a default
  ``AgentConfig(name=agent_name)`` with the offline model.
* Definition changes take effect (see ``docs/agents.md``, "Definition changes"): a new
  session of a stored agent always starts from the definition's current version (the store
  is asked for it at the session's start); changes made through this node
  (``definition.changed`` events from the API, ``register_agent``) are known at once, and a
  running session moves to the newer version at its next turn or when it restarts, per its
  ``version_policy``.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from dataclasses import replace
from typing import Any, NamedTuple

from netsuke.events import Event, topics
from netsuke.kernel import (
    AlreadyStartedError,
    ChildSpec,
    DynamicSupervisor,
    DynamicSupervisorSpec,
    NoProcessError,
    Pid,
    ProcessExitedError,
    Runtime,
    StartError,
    Target,
)
from netsuke.store import (
    AgentDraft,
    AgentSpec,
    AuditValues,
    Conversation,
    DuplicateRequestError,
    NotFoundError,
    SessionOwnedError,
    Store,
    TurnRequest,
    check_request_key,
)

from ._config import AgentConfig
from ._context import TurnContext
from ._endpoints import EndpointGuard
from ._errors import (
    AgentConfigError,
    AgentNotFoundError,
    RequestInProgressError,
    RequestKeyReusedError,
    TurnError,
    UnknownAgentDefinitionError,
)
from ._metrics import METRICS, log
from ._models import model_label
from ._owners import decode_owner, owner_lost
from ._queries import AgentInfo, AgentQuery, matches
from ._runner import TurnResult
from ._server import AgentServer, SessionArg, TurnTicket
from ._stream import StreamEvent, TurnCompleted

__all__ = ["AgentInfo", "Agents", "SessionRef", "scoped_session_name"]

ToolResolver = Callable[[AgentSpec], Sequence[Any]]


class SessionRef(NamedTuple):
    """What ``start_session`` returns: ``session_id, pid = await agents.start_session(...)``."""

    session_id: str
    pid: Pid


_SPEC = ChildSpec(AgentServer, restart="transient", shutdown=5.0, id="agent")
_SPECS = {r: replace(_SPEC, restart=r) for r in ("permanent", "transient", "temporary")}
_TOP = DynamicSupervisorSpec(max_restarts=0)  # its children are temporary: it never restarts


def scoped_session_name(agent_name: str, scope: str) -> str:
    """``f"{agent_name}@{scope}"``; a scope that would make it longer than a session id may be
    (200) is replaced by its SHA-256 (hex, 40 characters)."""
    name = f"{agent_name}@{scope}"
    if len(name) > 200:
        name = f"{agent_name}@{hashlib.sha256(scope.encode()).hexdigest()[:40]}"
    return name


def _is_agent(meta: Any) -> bool:
    return type(meta) is dict and meta.get("kind") == "agent"


class Agents:
    """The agent system (see the module documentation). Build it with ``await
    Agents.start(rt, store)``; it lives as long as its runtime."""

    def __init__(
        self,
        rt: Runtime,
        store: Store,
        *,
        supervisor: str = "netsuke.agents",
        tool_resolver: ToolResolver | None = None,
    ) -> None:
        self.rt = rt
        self.store = store
        self.supervisor = supervisor
        self.tool_resolver = tool_resolver
        """Gives the tool objects for a stored definition's tool names (sandbox, routing)."""
        self.endpoint_guard: EndpointGuard | None = None
        """Checks the model URLs of stored definitions (``netsuke serve`` sets it)."""
        self.remote: Any = None
        """On a cluster member, ``netsuke.cluster.ClusterAgents``: delegation to other nodes
        and the cluster-wide ``find``/``count``/``stop_matching``; ``None`` on one node."""
        self._configs: dict[str, AgentConfig] = {}
        self._evicted: dict[str, AgentConfig] = {}
        self._requests: set[tuple[str, str]] = set()  # (session, request id) running here
        # per config (kept alive here, so its id is never reused by another): shared meta parts
        self._metas: dict[int, tuple[AgentConfig, list[str], str]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._domain = ChildSpec(
            DynamicSupervisor,
            DynamicSupervisorSpec(),
            id="agent-definition",
            restart="temporary",
            type="supervisor",
            shutdown="infinity",
        )
        self._latest: dict[str, int] = {}  # the newest known version of each stored agent
        self._reloads: dict[str, asyncio.Future[AgentConfig]] = {}

    @classmethod
    async def start(
        cls,
        rt: Runtime,
        store: Store,
        *,
        supervisor: str = "netsuke.agents",
        max_restarts: int = 100,
        max_seconds: float = 5.0,
        tool_resolver: ToolResolver | None = None,
    ) -> Agents:
        """Start the agents' supervisor under the node's root and return the system.
        ``max_restarts`` in ``max_seconds`` is the restart intensity of the supervisor of each
        agent definition (see the module documentation)."""
        self = cls(rt, store, supervisor=supervisor, tool_resolver=tool_resolver)
        self._domain = replace(
            self._domain,
            arg=DynamicSupervisorSpec(max_restarts=max_restarts, max_seconds=max_seconds),
        )
        if rt.whereis(supervisor) is None:
            await rt.start_child(
                ChildSpec(
                    DynamicSupervisor,
                    _TOP,
                    id=supervisor,
                    name=supervisor,
                    type="supervisor",
                    shutdown="infinity",
                )
            )
        rt.events.listen(topics.DEFINITION_CHANGED, self._definition_changed)
        return self

    # ------------------------------------------------------------ configuration

    def define(self, config: AgentConfig) -> AgentConfig:
        """Remember ``config`` under its name for later ``start_session``/revivals."""
        self._configs[config.name] = config
        v = config.version
        if v is not None and v > self._latest.get(config.name, 0):
            self._latest[config.name] = v
        return config

    async def config_for(self, agent_name: str) -> AgentConfig:
        """The configuration of ``agent_name`` (see the module documentation for the order).
        One from the store is checked against the definition's current version first."""
        cfg = self._configs.get(agent_name)
        if cfg is not None:
            if cfg.version is None:
                return cfg
            try:
                current = (await self.store.agents.get(agent_name)).version
            except NotFoundError:
                return cfg  # deleted: what ran last keeps running
            if current > self._latest.get(agent_name, 0):
                self._latest[agent_name] = current
            return await self.current_config(cfg)
        try:
            cfg = await self.config_from_store(agent_name)
        except UnknownAgentDefinitionError:
            cfg = AgentConfig(name=agent_name)
        return self.define(cfg)

    async def config_from_store(self, name: str, **overrides: Any) -> AgentConfig:
        try:
            spec = await self.store.factory.spec(name)
        except NotFoundError:
            raise UnknownAgentDefinitionError(name) from None
        tools = list(self.tool_resolver(spec)) if self.tool_resolver is not None else []
        overrides.setdefault("endpoint_guard", self.endpoint_guard)
        return AgentConfig.from_spec(spec, tools=overrides.pop("tools", tools), **overrides)

    def is_stale(self, cfg: AgentConfig) -> bool:
        """Whether a newer version of ``cfg``'s stored definition is known (no I/O)."""
        v = cfg.version
        return v is not None and self._latest.get(cfg.name, 0) > v

    async def current_config(self, cfg: AgentConfig) -> AgentConfig:
        """The configuration of the newest known version of ``cfg``'s definition (``cfg``
        itself when it is current, or not from the store). Concurrent callers share one
        load from the store; a load that fails leaves ``cfg`` running (logged)."""
        if not self.is_stale(cfg):
            return cfg
        name = cfg.name
        known = self._configs.get(name)
        if known is not None and known.version is not None and not self.is_stale(known):
            return known
        fut = self._reloads.get(name)
        if fut is None:
            fut = self._reloads[name] = asyncio.ensure_future(self.config_from_store(name))
            fut.add_done_callback(functools.partial(self._reloaded, name))
        try:
            return await asyncio.shield(fut)
        except Exception as exc:
            log.warning("agent_definition_reload_failed", agent=name, error=repr(exc)[:300])
            return cfg

    def _reloaded(self, name: str, fut: asyncio.Future[AgentConfig]) -> None:
        if self._reloads.get(name) is fut:
            del self._reloads[name]
        if fut.cancelled() or fut.exception() is not None:
            return
        new = fut.result()
        old = self._configs.get(name)
        if old is None or old.version is None or (new.version or 0) >= old.version:
            self.define(new)

    async def _definition_changed(self, event: Event) -> None:
        """``definition.changed``: note the new version at once (sessions see it at their
        next turn), then load it, so the first of them does not wait."""
        data = event.data
        name = data.get("name")
        if data.get("kind") != "agent" or not isinstance(name, str):
            return
        if data.get("action") == "deleted":
            self._latest.pop(name, None)
            self._configs.pop(name, None)
            return
        version = data.get("version")
        if not isinstance(version, int) or version <= self._latest.get(name, 0):
            return
        self._latest[name] = version
        known = self._configs.get(name)
        if known is not None and known.version is not None:
            await self.current_config(known)

    def meta_for(self, cfg: AgentConfig, session: str, user: str | None) -> dict[str, Any]:
        shared = self._metas.get(id(cfg))
        if shared is None or shared[0] is not cfg:
            shared = self._metas[id(cfg)] = (cfg, list(cfg.capabilities), model_label(cfg.model))
        return {
            "kind": "agent",
            "agent": cfg.name,
            "session": session,
            "user": user,
            "capabilities": shared[1],
            "model": shared[2],
            "version": cfg.version,
        }

    # ---------------------------------------------------------------- starting

    async def start_agent(
        self,
        name: str,
        config: AgentConfig | None = None,
        *,
        owner: Pid | None = None,
        user: str | None = None,
        exclusive: bool = False,
    ) -> Pid:
        """Start an agent server named ``name`` (its session id). Raises
        ``AlreadyStartedError`` (name taken, with the holder's pid) and ``StartError``.
        ``exclusive``: when another live node owns the session, fail the start with
        ``SessionOwnedError`` (raised as is) instead of starting unclaimed."""
        cfg = config if config is not None else await self.config_for(_agent_name(name))
        self._evicted.pop(name, None)
        if exclusive:
            try:
                pid = await DynamicSupervisor.start_child(
                    await self.domain(cfg.name),
                    _SPEC,
                    arg=SessionArg(self, cfg, name, user, owner, exclusive=True),
                    name=name,
                    runtime=self.rt,
                )
            except StartError as e:
                if isinstance(e.reason, SessionOwnedError):
                    raise e.reason from None
                raise
            assert pid is not None
            return pid
        pid = await DynamicSupervisor.start_child(
            await self.domain(cfg.name),
            _SPECS[cfg.restart],
            arg=SessionArg(self, cfg, name, user, owner),
            name=name,
            runtime=self.rt,
        )
        assert pid is not None
        return pid

    def domain_name(self, agent_name: str) -> str:
        """The registered name of the supervisor of ``agent_name``'s sessions."""
        return f"{self.supervisor}:{agent_name}"

    async def domain(self, agent_name: str) -> Pid:
        """The supervisor of ``agent_name``'s sessions (its failure domain), started on first
        use; any number of concurrent callers get the same one."""
        name = self.domain_name(agent_name)
        pid = self.rt.whereis(name)
        if pid is not None:
            return pid
        try:
            pid = await DynamicSupervisor.start_child(
                self.supervisor, self._domain, name=name, runtime=self.rt
            )
        except AlreadyStartedError as e:
            return e.pid  # type: ignore[no-any-return]
        assert pid is not None
        return pid

    async def start_session(
        self,
        agent_name: str,
        user_id: str,
        config: AgentConfig | None = None,
        *,
        owner: Pid | None = None,
        exclusive: bool = False,
    ) -> SessionRef:
        """Get-or-start the session of ``user_id`` with ``agent_name``. An existing session is
        returned as is (and ``owner``, if given, is attached to it). ``exclusive``: see
        ``start_agent`` (a cluster forwards to the owner named by ``SessionOwnedError``)."""
        sid = f"{agent_name}-{user_id}"
        pid = self.rt.whereis(sid)
        if pid is None:
            cfg = config if config is not None else await self.config_for(agent_name)
            try:
                pid = await self.start_agent(
                    sid, cfg, owner=owner, user=user_id, exclusive=exclusive
                )
                return SessionRef(sid, pid)
            except AlreadyStartedError as e:
                pid = e.pid
        if owner is not None:
            await self.attach_owner(pid, owner)
        return SessionRef(sid, pid)

    async def start_scoped(
        self,
        agent_name: str,
        scope: str,
        *,
        user: str | None = None,
        owner: Pid | None = None,
        config: AgentConfig | None = None,
    ) -> SessionRef:
        """Get-or-start the session of ``agent_name`` that serves the conversation ``scope``
        (a caller's conversation id, or a delegating chain's root session): named
        ``scoped_session_name(agent_name, scope)``, with its own conversation and memory,
        recorded for ``user``. ``owner`` is attached only when the session starts. The
        configuration is ``config``, else the one of a running instance named
        ``agent_name``, else ``config_for(agent_name)``."""
        sid = scoped_session_name(agent_name, scope)
        pid = self.rt.whereis(sid)
        if pid is not None:
            return SessionRef(sid, pid)
        if sid in self._evicted:
            return SessionRef(sid, await self.revive(sid))
        cfg = config
        if cfg is None:
            instance = self.rt.process(agent_name)
            if isinstance(instance, AgentServer) and instance.config.name == agent_name:
                cfg = instance.config
            else:
                cfg = await self.config_for(agent_name)
        try:
            pid = await self.start_agent(sid, cfg, owner=owner, user=user)
        except AlreadyStartedError as e:
            pid = e.pid
        return SessionRef(sid, pid)

    async def delegate_session(self, agent_name: str, parent: TurnContext) -> SessionRef:
        """The session a turn delegated by ``parent`` to ``agent_name`` runs in: scoped to the
        root conversation of the chain (``parent``'s session, or the scope of the delegate
        session ``parent`` itself runs in), recorded for ``parent.user``, owned by
        ``parent``'s server (it stops with it, under the default ``owner_policy``)."""
        scope = parent.session
        prefix = f"{parent.agent}@"
        if scope.startswith(prefix) and len(scope) > len(prefix):
            scope = scope[len(prefix) :]
        return await self.start_scoped(
            agent_name, scope, user=parent.user, owner=self.rt.whereis(parent.session)
        )

    async def start_defined(
        self, name: str, *, session: str | None = None, owner: Pid | None = None, **overrides: Any
    ) -> Pid:
        """Start an agent from its stored definition (session id ``session`` or ``name``)."""
        cfg = self.define(await self.config_from_store(name, **overrides))
        return await self.start_agent(session or name, cfg, owner=owner)

    async def register_agent(
        self, draft: AgentDraft | Mapping[str, Any], *, start: bool = True, actor: str | None = None
    ) -> tuple[AgentSpec, Pid | None]:
        """Seed 004's run-time registration: store ``draft`` (a new version when it changed),
        then start it (restart it when it was running). Returns the spec and the pid."""
        spec = await self.store.factory.register_agent(draft, actor=actor)
        self._configs.pop(spec.name, None)
        if not start:
            return spec, None
        if self.rt.whereis(spec.name) is not None:
            await self.stop_agent(spec.name)
        return spec, await self.start_defined(spec.name)

    # ------------------------------------------------------------------ turns

    async def run(
        self,
        target: Target,
        message: Any,
        *,
        parent: TurnContext | None = None,
        request_id: str | None = None,
    ) -> Any:
        """Run one turn and return the reply (the output) once it is committed. Raises
        ``InvalidInputError``, ``AgentBusyError``, ``TurnError`` subclasses, and
        ``AgentNotFoundError`` when no agent is known by ``target``. ``request_id``: see
        ``run_turn`` (a replayed output is the stored JSON form of the output)."""
        if request_id is not None:
            return (
                await self.run_turn(target, message, parent=parent, request_id=request_id)
            ).output
        result: TurnResult = await self._call_run(target, message, parent, None)
        return result.output

    async def run_turn(
        self,
        target: Target,
        message: Any,
        *,
        parent: TurnContext | None = None,
        audit: Sequence[AuditValues] = (),
        request_id: str | None = None,
    ) -> TurnResult:
        """``run``, returning the output with its execution id, tokens and duration.
        ``audit``: audit rows committed in the turn's transaction (the API's record of the
        request that asked for the turn); they exist exactly when the turn does.

        ``request_id`` (1..200 visible ASCII characters, scoped to the session; ``target``
        must then be a session name): the turn runs at most once per id. The id, a hash of
        ``message`` and the reply (``TurnResult.reply``, the API's reply body) are committed
        in the turn's transaction; a later call with the id gets that stored reply (its
        ``messages`` empty, its ``output`` the stored JSON form) and runs nothing; with a
        different message it raises ``RequestKeyReusedError``; while a turn with the id is
        running on this node it raises ``RequestInProgressError``. A call that failed (its
        turn was not committed) may be retried with the same id."""
        if request_id is None:
            result = await self._call_run(target, message, parent, None, audit)
            return result  # type: ignore[no-any-return]
        replay, request = await self._request(target, message, request_id)
        if replay is not None:
            return replay
        key = (str(target), request_id)
        self._requests.add(key)
        try:
            result = await self._call_run(target, message, parent, None, audit, request)
        except TurnError as e:
            return await self._duplicate(key[0], e, request)
        finally:
            self._requests.discard(key)
        return result  # type: ignore[no-any-return]

    async def _request(
        self, target: Target, message: Any, request_id: str
    ) -> tuple[TurnResult | None, tuple[str, str]]:
        """``(the stored reply or None, (request id, body hash))`` for a call with a request
        id; raises ``RequestKeyReusedError`` / ``RequestInProgressError`` (see ``run_turn``)."""
        if not isinstance(target, str):
            raise AgentConfigError("request_id", "a request id needs a session name as target")
        check_request_key(request_id)
        body_hash = request_hash(message)
        stored = await self.store.conversations.find_request(target, request_id)
        if stored is not None:
            return _replayed(stored, body_hash), (request_id, body_hash)
        if (target, request_id) in self._requests:
            raise RequestInProgressError(target, request_id)
        return None, (request_id, body_hash)

    async def _duplicate(self, session: str, e: TurnError, request: tuple[str, str]) -> TurnResult:
        """The answer to a turn refused because its request id was committed meanwhile (by
        another node): the stored reply. Any other ``TurnError`` is raised again."""
        if not isinstance(e.__cause__, DuplicateRequestError):
            raise e
        stored = await self.store.conversations.find_request(session, request[0])
        if stored is None:  # pragma: no cover - the row exists once the duplicate is refused
            raise e
        return _replayed(stored, request[1])

    async def stream(
        self,
        target: Target,
        message: Any,
        *,
        parent: TurnContext | None = None,
        request_id: str | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """Run one turn, yielding ``TextDelta``, ``ToolCallStarted``/``ToolCallFinished`` as they
        happen and ``TurnCompleted`` once committed (local agents only). ``request_id``: as
        for ``run_turn``; a stored reply is one ``TurnCompleted`` (nothing runs)."""
        request = None
        if request_id is not None:
            replay, request = await self._request(target, message, request_id)
            if replay is not None:
                yield TurnCompleted(
                    replay.output, replay.execution_id, replay.tokens_in, replay.tokens_out
                )
                return
            self._requests.add((str(target), request_id))
        sink: asyncio.Queue[Any] = asyncio.Queue()
        call = asyncio.ensure_future(self._call_run(target, message, parent, sink, (), request))
        try:
            while not call.done():
                get = asyncio.ensure_future(sink.get())
                await asyncio.wait((get, call), return_when=asyncio.FIRST_COMPLETED)
                if get.done():
                    yield get.result()
                else:
                    get.cancel()
            while not sink.empty():
                yield sink.get_nowait()
            try:
                r: TurnResult = call.result()
            except TurnError as e:
                if request is None:
                    raise
                r = await self._duplicate(str(target), e, request)
            yield TurnCompleted(r.output, r.execution_id, r.tokens_in, r.tokens_out)
        finally:
            if not call.done():
                call.cancel()
            if request is not None:
                self._requests.discard((str(target), request[0]))

    async def _call_run(
        self,
        target: Target,
        message: Any,
        parent: Any,
        sink: Any,
        audit: Any = (),
        request: tuple[str, str] | None = None,
    ) -> Any:
        revived = False
        while True:
            ticket = TurnTicket()
            try:
                return await self.rt.call(
                    target, ("run", message, parent, sink, ticket, audit, request), timeout=None
                )
            except (NoProcessError, ProcessExitedError) as e:
                if ticket.started:
                    # The server died with our turn started: its task runs on, unlinked. It is
                    # killed unless it is already committing; then its commit decides (it
                    # lands, or a successor claimed the session first and fenced it).
                    try:
                        result = await ticket.result(abandon=True)
                    except TurnError:
                        raise e from None
                    if result is None:  # abandoned before it could commit
                        raise
                    return result
                if revived or not isinstance(target, str):
                    if isinstance(e, NoProcessError):
                        raise AgentNotFoundError(target) from None
                    raise
                if target not in self._evicted and not isinstance(e, NoProcessError):
                    raise
            await self.revive(target)
            revived = True

    async def revive(
        self, session: str, *, claim: bool = False, conv: Conversation | None = None
    ) -> Pid:
        """Start here, from the store, a session that is not running here: the one takeover
        path. It serves a call to a session evicted here or whose process ended elsewhere
        (evicted on another node, or on a node that died: "lazily, on the next call, from
        anywhere"), a cluster node's request for a session whose owner node is gone (the
        API's ``adopt``), and failover's restart of a gone node's sessions (``Failover``).
        Not a session stopped for good (``AgentNotFoundError``, also for one not in the
        store). Returns the running pid (the one already running here, if any).

        Fencing: the process claims the session (epoch + 1, compare-and-set in the store)
        before it loads any history, so a turn of any earlier owner can no longer commit.
        ``claim=False``: its first turn claims (a restart never waits on the store), and
        fails with ``SessionMovedError`` while another live node owns it. ``claim=True``:
        claimed now, before the process starts; ``SessionOwnedError`` (nothing started) while
        another live node owns it, so the caller forwards there or leaves it to the winner.
        ``conv``: the session's row, when the caller has just read it.

        Owner links: the new process monitors the session's stored owner (``owner_pid``,
        written by its predecessor's claim or ``attach_owner``), as a restarted server does
        on one node, so the owner's exit applies the agent's ``owner_policy``; an owner that
        is gone already fires at once (``noproc``; ``noconnection`` when it lived on the node
        the session is taken over from, or on a node this one knows is down). See
        ``_owners``."""
        cfg = self._evicted.get(session)
        pid = self.rt.whereis(session)
        if pid is not None:
            return pid
        if conv is None:
            try:
                conv = await self.store.conversations.get(session)
            except NotFoundError:
                raise AgentNotFoundError(session) from None
        if cfg is None:
            if conv.host_state == "stopped":
                raise AgentNotFoundError(session)
            cfg = await self.config_for(conv.agent_name)
        epoch = None
        if claim:  # SessionOwnedError as is: another live node owns it
            claimed = await self.store.conversations.open(
                session,
                agent_name=conv.agent_name,
                user_id=conv.user_id,
                claim=True,
                restart=conv.restart or cfg.restart,
            )
            epoch = claimed.incarnation
        owner = decode_owner(conv.owner_pid)
        lost = None
        if owner is not None:
            prev = conv.owner_node
            lost = owner_lost(
                owner,
                here=self.rt.node,
                # a claim won: the node it was taken from is not live, nor its processes
                gone_node=f"{prev}#{conv.owner_incarnation}" if claim and prev else None,
                is_down=getattr(self.rt.transport, "is_down", None),
            )
            METRICS.owners_restored += 1
            log.info(
                "agent_owner_restored",
                session=session,
                owner=repr(owner),
                lost=lost,
            )
        pid = await self.start_stored(
            session, cfg, conv.user_id, epoch=epoch, owner=owner, owner_lost=lost
        )
        self._evicted.pop(session, None)
        return pid

    async def start_stored(
        self,
        session: str,
        cfg: AgentConfig,
        user: str | None,
        *,
        epoch: int | None = None,
        owner: Pid | None = None,
        owner_lost: str | None = None,
    ) -> Pid:
        """Start the process of a session whose conversation is in the store (its memory is
        loaded by its first turn). ``epoch``: this node claimed it already at that epoch
        (``revive(claim=True)``), else its first turn claims it. ``owner``: its stored owner,
        monitored again (``owner_lost``: known gone, the link fires at once with that
        reason). Returns the running pid if it runs. ``revive`` is the path that checks the
        stored row first."""
        arg = SessionArg(self, cfg, session, user, owner, known=True)
        arg.epoch = epoch
        arg.owner_lost = owner_lost
        try:
            pid = await DynamicSupervisor.start_child(
                await self.domain(cfg.name),
                _SPECS[cfg.restart],
                arg=arg,
                name=session,
                runtime=self.rt,
            )
        except AlreadyStartedError as e:
            pid = e.pid
        assert pid is not None
        return pid

    def _evict(self, cfg: AgentConfig, session: str) -> None:
        self._evicted[session] = cfg

    def background(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ------------------------------------------------------------- inspection

    async def status(self, target: Target) -> dict[str, Any]:
        """The agent's state: ``running``/``idle``/``hibernated`` (or ``evicted``), queue, load,
        current execution, owner, restarts. Answered while a turn runs."""
        if isinstance(target, str) and self.rt.whereis(target) is None and target in self._evicted:
            cfg = self._evicted[target]
            return {"agent": cfg.name, "session": target, "state": "evicted", "load": 0}
        return await self._call(target, "status")  # type: ignore[no-any-return]

    async def history(self, target: Target, *, limit: int | None = None) -> list[Any]:
        """The conversation's messages from the store (every committed turn), oldest first."""
        sid = self._session_of(target)
        try:
            return await self.store.conversations.history(sid, limit=limit)
        except NotFoundError:
            raise AgentNotFoundError(target) from None

    async def cancel(self, target: Target) -> bool:
        """Cancel the running turn (its caller gets ``TurnCancelledError``); whether one ran."""
        return await self._call(target, "cancel")  # type: ignore[no-any-return]

    async def attach_owner(self, target: Target, owner: Pid) -> None:
        """Make ``owner`` the agent's owner (replacing any other): its exit now applies the
        agent's ``owner_policy``. In a cluster it returns once the owner is stored (a session
        taken over by another node monitors it again, see ``revive``)."""
        await self._call(target, ("attach_owner", owner), timeout=30.0)

    async def _call(self, target: Target, request: Any, timeout: float = 5.0) -> Any:
        try:
            return await self.rt.call(target, request, timeout=timeout)
        except NoProcessError:
            raise AgentNotFoundError(target) from None

    def _session_of(self, target: Target) -> str:
        if isinstance(target, str):
            return target
        if isinstance(target, Pid):
            p = self.rt.process(target)
            if isinstance(p, AgentServer):
                return p.session
        raise AgentNotFoundError(target)

    def whereis(self, name: str) -> Pid | None:
        """The pid of the running agent ``name``, or ``None``."""
        return self.rt.whereis(name)

    def list_agents(self) -> list[tuple[str, Pid]]:
        """``[(name, pid)]`` of every running agent (hibernated ones included)."""
        return [(e.key, e.pid) for e in self.rt.registry.match(where=_is_agent)]

    def count_agents(self) -> int:
        return len(self.rt.registry.match(where=_is_agent))

    def count_evicted(self) -> int:
        return len(self._evicted)

    def find_agents(self, pattern: str) -> list[AgentInfo]:
        """Agents of this node whose name contains ``pattern`` (or matches it, when it has
        glob characters ``*?[``), with their metadata."""
        return [
            AgentInfo(e.key, e.pid, e.meta)
            for e in self.rt.registry.match(where=_is_agent)
            if matches(pattern, e.key)
        ]

    async def stop_agent(self, target: Target) -> bool:
        """Stop an agent for good (not restarted; its memory stays in the store)."""
        pid = self.rt.whereis(target)
        if isinstance(target, str):
            self._evicted.pop(target, None)
        if pid is None:
            return False
        p = self.rt.process(pid)
        if not isinstance(p, AgentServer):
            return False
        epoch = p._epoch
        if epoch is not None:  # stopped for good: not revived by a call, nor failed over
            try:
                await self.store.conversations.set_host_state(
                    p._a.session, "stopped", incarnation=epoch
                )
            except Exception as e:
                log.warning("agent_host_state_not_recorded", session=p._a.session, error=repr(e))
        try:
            await DynamicSupervisor.terminate_child(
                self.domain_name(p._a.config.name), pid, runtime=self.rt
            )
        except Exception:
            return False
        return True

    async def stop_agents_matching(self, pattern: str) -> int:
        """Stop every agent ``find_agents(pattern)`` returns; returns how many stopped."""
        found = self.find_agents(pattern)
        done = await asyncio.gather(*(self.stop_agent(a.pid) for a in found))
        return sum(done)

    # ------------------------------------------------- queries (cluster-wide on a member)

    async def find(self, pattern: str, *, timeout: float = 5.0) -> AgentQuery:
        """``find_agents`` over every live node of the cluster (this node alone when not
        clustered): see ``netsuke.agents._queries`` for the partial-result rule."""
        if self.remote is not None:
            return await self.remote.query("find", pattern, timeout=timeout)  # type: ignore[no-any-return]
        return await self.local_query("find", pattern)

    async def count(self, pattern: str | None = None, *, timeout: float = 5.0) -> AgentQuery:
        """How many agents run (whose name matches ``pattern``), cluster-wide."""
        if self.remote is not None:
            return await self.remote.query("count", pattern, timeout=timeout)  # type: ignore[no-any-return]
        return await self.local_query("count", pattern)

    async def stop_matching(self, pattern: str, *, timeout: float = 15.0) -> AgentQuery:
        """``stop_agents_matching`` on every live node; ``total`` is how many stopped."""
        if self.remote is not None:
            return await self.remote.query("stop", pattern, timeout=timeout)  # type: ignore[no-any-return]
        return await self.local_query("stop", pattern)

    async def local_query(self, op: str, pattern: str | None) -> AgentQuery:
        """``op`` (``find``, ``count``, ``stop``) on this node's agents only."""
        me = (str(self.rt.node),)
        if op == "stop":
            if not pattern:
                raise AgentConfigError("pattern", "stop_matching needs a non-empty pattern")
            return AgentQuery(await self.stop_agents_matching(pattern), nodes=me)
        found = (
            self.find_agents(pattern)
            if pattern is not None
            else [AgentInfo(e.key, e.pid, e.meta) for e in self.rt.registry.match(where=_is_agent)]
        )
        if op == "count":
            return AgentQuery(len(found), nodes=me)
        return AgentQuery(len(found), tuple(sorted(found)), me)


def _agent_name(name: str) -> str:
    """A definition name for a process name that may hold other characters (``chat:user:1``)."""
    clean = "".join(c if c.isalnum() or c in "_.-" else "-" for c in name)[:64]
    return clean if clean[:1].isalpha() else f"a{clean}"[:64]


def request_hash(message: Any) -> str:
    """The hash stored with a request id: SHA-256 of the message as canonical JSON."""
    body = json.dumps(message, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(body.encode()).hexdigest()


def _replayed(stored: TurnRequest, body_hash: str) -> TurnResult:
    """The stored reply of a request id, as a ``TurnResult`` (no messages: nothing ran)."""
    if stored.body_hash != body_hash:
        raise RequestKeyReusedError(stored.session_id, stored.request_key)
    reply = json.loads(stored.reply)
    METRICS.replayed += 1
    return TurnResult(
        reply["output"],
        [],
        reply["execution_id"],
        reply["tokens_in"],
        reply["tokens_out"],
        reply["duration_ms"],
        stored.reply,
        replayed=True,
    )
