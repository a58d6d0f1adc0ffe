"""``Agents``: the agent system of a node, bound to a ``Runtime`` and a ``Store``.

::

    async with Runtime() as rt, Store.open(url) as store:
        agents = await Agents.start(rt, store)
        pid = await agents.start_agent("sushi-bot", config)
        reply = await agents.run("sushi-bot", "How do I make nigiri?")
        sid, pid = await agents.start_session("support", "user-1", config)

Every agent server is a ``transient`` child of one ``DynamicSupervisor`` (registered as
``supervisor`` [``"netsuke.agents"``], restart intensity ``max_restarts`` [100] in
``max_seconds`` [5.0]) and is registered in ``rt.registry`` under its name with metadata
``{"kind": "agent", "agent", "session", "user", "capabilities", "model"}``.

* ``start_agent`` fails with ``AlreadyStartedError`` when the name is taken; ``start_session``
  is get-or-start (any number of concurrent callers get one session, named
  ``f"{agent_name}-{user_id}"`` as in seed 000).
* ``run``/``stream`` reach an evicted session transparently: it is started again from its
  configuration and its memory is read from the store.
* Configurations are found, in order: the one passed, one given earlier for that agent name
  (``define``), the store's definition (``store.factory.spec``), else a default
  ``AgentConfig(name=agent_name)`` with the offline model.
"""

from __future__ import annotations

import asyncio
import fnmatch
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from typing import Any, NamedTuple

from netsuke.kernel import (
    AlreadyStartedError,
    ChildSpec,
    DynamicSupervisor,
    DynamicSupervisorSpec,
    NoProcessError,
    Pid,
    ProcessExitedError,
    Runtime,
    Target,
)
from netsuke.store import AgentDraft, AgentSpec, AuditValues, NotFoundError, Store

from ._config import AgentConfig
from ._context import TurnContext
from ._errors import AgentNotFoundError, UnknownAgentDefinitionError
from ._models import model_label
from ._runner import TurnResult
from ._server import AgentServer, SessionArg
from ._stream import StreamEvent, TurnCompleted

__all__ = ["AgentInfo", "Agents", "SessionRef"]

ToolResolver = Callable[[AgentSpec], Sequence[Any]]


class SessionRef(NamedTuple):
    """What ``start_session`` returns: ``session_id, pid = await agents.start_session(...)``."""

    session_id: str
    pid: Pid


class AgentInfo(NamedTuple):
    """One running agent: its registered ``name``, ``pid`` and registry ``meta``."""

    name: str
    pid: Pid
    meta: dict[str, Any]


_SPEC = ChildSpec(AgentServer, restart="transient", shutdown=5.0, id="agent")


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
        self._configs: dict[str, AgentConfig] = {}
        self._evicted: dict[str, AgentConfig] = {}
        self._metas: dict[int, tuple[list[str], str]] = {}
        self._background: set[asyncio.Task[Any]] = set()

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
        """Start the agents' supervisor under the node's root and return the system."""
        self = cls(rt, store, supervisor=supervisor, tool_resolver=tool_resolver)
        if rt.whereis(supervisor) is None:
            await rt.start_child(
                ChildSpec(
                    DynamicSupervisor,
                    DynamicSupervisorSpec(max_restarts=max_restarts, max_seconds=max_seconds),
                    id=supervisor,
                    name=supervisor,
                    type="supervisor",
                    shutdown="infinity",
                )
            )
        return self

    # ------------------------------------------------------------ configuration

    def define(self, config: AgentConfig) -> AgentConfig:
        """Remember ``config`` under its name for later ``start_session``/revivals."""
        self._configs[config.name] = config
        return config

    async def config_for(self, agent_name: str) -> AgentConfig:
        """The configuration of ``agent_name`` (see the module documentation for the order)."""
        cfg = self._configs.get(agent_name)
        if cfg is not None:
            return cfg
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
        return AgentConfig.from_spec(spec, tools=overrides.pop("tools", tools), **overrides)

    def meta_for(self, cfg: AgentConfig, session: str, user: str | None) -> dict[str, Any]:
        shared = self._metas.get(id(cfg))
        if shared is None:
            shared = self._metas[id(cfg)] = (list(cfg.capabilities), model_label(cfg.model))
        return {
            "kind": "agent",
            "agent": cfg.name,
            "session": session,
            "user": user,
            "capabilities": shared[0],
            "model": shared[1],
        }

    # ---------------------------------------------------------------- starting

    async def start_agent(
        self,
        name: str,
        config: AgentConfig | None = None,
        *,
        owner: Pid | None = None,
        user: str | None = None,
    ) -> Pid:
        """Start an agent server named ``name`` (its session id). Raises
        ``AlreadyStartedError`` (name taken, with the holder's pid) and ``StartError``."""
        cfg = config if config is not None else await self.config_for(_agent_name(name))
        self._evicted.pop(name, None)
        pid = await DynamicSupervisor.start_child(
            self.supervisor,
            _SPEC,
            arg=SessionArg(self, cfg, name, user, owner),
            name=name,
            runtime=self.rt,
        )
        assert pid is not None
        return pid

    async def start_session(
        self,
        agent_name: str,
        user_id: str,
        config: AgentConfig | None = None,
        *,
        owner: Pid | None = None,
    ) -> SessionRef:
        """Get-or-start the session of ``user_id`` with ``agent_name``. An existing session is
        returned as is (and ``owner``, if given, is attached to it)."""
        sid = f"{agent_name}-{user_id}"
        pid = self.rt.whereis(sid)
        if pid is None:
            cfg = config if config is not None else await self.config_for(agent_name)
            try:
                pid = await self.start_agent(sid, cfg, owner=owner, user=user_id)
                return SessionRef(sid, pid)
            except AlreadyStartedError as e:
                pid = e.pid
        if owner is not None:
            await self.attach_owner(pid, owner)
        return SessionRef(sid, pid)

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

    async def run(self, target: Target, message: Any, *, parent: TurnContext | None = None) -> Any:
        """Run one turn and return the reply (the output) once it is committed. Raises
        ``InvalidInputError``, ``AgentBusyError``, ``TurnError`` subclasses, and
        ``AgentNotFoundError`` when no agent is known by ``target``."""
        result: TurnResult = await self._call_run(target, message, parent, None)
        return result.output

    async def run_turn(
        self,
        target: Target,
        message: Any,
        *,
        parent: TurnContext | None = None,
        audit: Sequence[AuditValues] = (),
    ) -> TurnResult:
        """``run``, returning the output with its execution id, tokens and duration.
        ``audit``: audit rows committed in the turn's transaction (the API's record of the
        request that asked for the turn); they exist exactly when the turn does."""
        result = await self._call_run(target, message, parent, None, audit)
        return result  # type: ignore[no-any-return]

    async def stream(
        self, target: Target, message: Any, *, parent: TurnContext | None = None
    ) -> AsyncIterator[StreamEvent]:
        """Run one turn, yielding ``TextDelta``, ``ToolCallStarted``/``ToolCallFinished`` as they
        happen and ``TurnCompleted`` once committed (local agents only)."""
        sink: asyncio.Queue[Any] = asyncio.Queue()
        call = asyncio.ensure_future(self._call_run(target, message, parent, sink))
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
            r: TurnResult = call.result()
            yield TurnCompleted(r.output, r.execution_id, r.tokens_in, r.tokens_out)
        finally:
            if not call.done():
                call.cancel()

    async def _call_run(
        self, target: Target, message: Any, parent: Any, sink: Any, audit: Any = ()
    ) -> Any:
        req = ("run", message, parent, sink, audit)
        try:
            return await self.rt.call(target, req, timeout=None)
        except (NoProcessError, ProcessExitedError) as e:
            if not (isinstance(target, str) and target in self._evicted):
                if isinstance(e, NoProcessError):
                    raise AgentNotFoundError(target) from None
                raise
        await self._revive(target)
        return await self.rt.call(target, req, timeout=None)

    async def _revive(self, session: str) -> Pid:
        cfg = self._evicted.get(session)
        pid = self.rt.whereis(session)
        if pid is not None:
            return pid
        if cfg is None:
            raise AgentNotFoundError(session)
        conv = await self.store.conversations.get(session)
        try:
            pid = await DynamicSupervisor.start_child(
                self.supervisor,
                _SPEC,
                arg=SessionArg(self, cfg, session, conv.user_id, None, known=True),
                name=session,
                runtime=self.rt,
            )
        except AlreadyStartedError as e:
            pid = e.pid
        self._evicted.pop(session, None)
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
        agent's ``owner_policy``."""
        await self._call(target, ("attach_owner", owner))

    async def _call(self, target: Target, request: Any) -> Any:
        try:
            return await self.rt.call(target, request, timeout=5.0)
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
        """Agents whose name contains ``pattern`` (or matches it, when it has glob characters
        ``*?[``), with their metadata."""
        glob = any(c in pattern for c in "*?[")
        out = []
        for e in self.rt.registry.match(where=_is_agent):
            k = e.key
            if fnmatch.fnmatchcase(k, pattern) if glob else pattern in k:
                out.append(AgentInfo(k, e.pid, e.meta))
        return out

    async def stop_agent(self, target: Target) -> bool:
        """Stop an agent for good (not restarted; its memory stays in the store)."""
        pid = self.rt.whereis(target)
        if isinstance(target, str):
            self._evicted.pop(target, None)
        if pid is None:
            return False
        try:
            await DynamicSupervisor.terminate_child(self.supervisor, pid, runtime=self.rt)
        except Exception:
            return False
        return True

    async def stop_agents_matching(self, pattern: str) -> int:
        """Stop every agent ``find_agents(pattern)`` returns; returns how many stopped."""
        found = self.find_agents(pattern)
        done = await asyncio.gather(*(self.stop_agent(a.pid) for a in found))
        return sum(done)


def _agent_name(name: str) -> str:
    """A definition name for a process name that may hold other characters (``chat:user:1``)."""
    clean = "".join(c if c.isalnum() or c in "_.-" else "-" for c in name)[:64]
    return clean if clean[:1].isalpha() else f"a{clean}"[:64]
