"""A node with every layer wired together: the one composition root, for library users and
for the server (``netsuke.api.open_node`` opens a ``ServerNode``, this class plus the server's
services).

``Node.open()`` starts, in order: the store (migrated when embedded), the sandbox (isolated
workers; skipped with ``sandbox=False``; a ``Sandbox`` passed in starts on its first call), the
runtime (with its event bus), the definitions of ``agents_dir`` (synced into the store), the
function store, the agents (their ``tool_resolver`` gives stored agents their stored functions
and delegates), the task queue, the capability router, the workflow catalog and the task
workers (``TaskHosting``). ``aclose()`` stops them in the reverse order: task workers, workflow
runs, queue, agents and every other process (the runtime's ordered shutdown), sandbox, store,
so no reply is acknowledged after its store is gone.

Seed 004's registry translates to it directly::

    async with Node.open() as node:
        await node.register_agent({"name": "search", "capabilities": ["search"], ...})
        reply = await node.process(
            "Search for supervisors", capabilities=["search"], conversation_id="123", user="ann"
        )
        agent = node.get_agent("search")
        reply = await agent.process_message("Search for registries")

Memory is per conversation: ``process`` runs the routed agent in the session of the caller's
conversation (``conversation_id``, and ``user``), never in a session another caller shares
(see ``Node.process``). Delegates likewise run per root conversation
(``Agents.delegate_session``).

On a cluster member (``agents.remote`` set: ``netsuke.cluster.ClusterAgents``), ``process``
routes to an agent running on another node when none on this node offers the capabilities,
and a conversation's session runs on the node that owns it, or that placement picks for a
new one (see ``docs/cluster.md``, "Delegation, routing and queries across nodes").
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from netsuke.agents import Agents, EndpointGuard, scoped_session_name
from netsuke.events import topics
from netsuke.kernel import Runtime
from netsuke.observability import get_logger
from netsuke.routing import (
    CapabilityRouter,
    NoRouteError,
    TaskHosting,
    TaskQueue,
    WorkerSpec,
    WorkflowRunner,
    open_queue,
    process_load,
)
from netsuke.sandbox import ExecutionGate, FunctionStore, Sandbox, SandboxConfig
from netsuke.store import AgentDraft, AgentSpec, Store, SyncResult, new_id, sync_agents

from ._tools import StoredTools
from ._workflows import WorkflowCatalog

__all__ = ["AgentHandle", "Node"]

log = get_logger("netsuke.node")


@dataclass(frozen=True, slots=True)
class AgentHandle:
    """A running agent by name (seed 004's ``registry.get_agent(name)``)."""

    node: Node
    name: str

    async def process_message(
        self, message: Any, *, conversation_id: str | None = None, user: str | None = None
    ) -> Any:
        """One turn; the reply once it is committed. Without ``conversation_id`` or ``user``
        the turn runs on the agent's own instance (one memory for every such caller); with
        them, in that conversation's session (see ``Node.process``)."""
        if conversation_id is None and user is None:
            return await self.node.agents.run(self.name, message)
        return await self.node._run_in_conversation(self.name, message, conversation_id, user)

    async def status(self) -> dict[str, Any]:
        return await self.node.agents.status(self.name)


class Node:
    """Every layer of one node (see the module documentation). Build it with ``Node.open``."""

    def __init__(
        self,
        rt: Runtime,
        store: Store,
        agents: Agents,
        functions: FunctionStore,
        sandbox: Sandbox | None,
        tools: StoredTools,
        *,
        queue: TaskQueue | None = None,
    ) -> None:
        self.rt = rt
        self.store = store
        self.agents = agents
        self.functions = functions
        self.sandbox = sandbox
        self.tools = tools
        self.delegation = tools.delegation
        self.router = CapabilityRouter(rt.registry, load=process_load(rt))
        self.queue = queue or TaskQueue.sql(store, events=rt.events)
        self.workflows = WorkflowCatalog(WorkflowRunner(store, events=rt.events))
        """The workflows the node runs by name (``add``, ``start``); ``workflows.runner`` is
        the ``WorkflowRunner`` (``start(workflow, input)``, ``get``, ``resume_all``)."""
        self.hosting: TaskHosting | None = None
        """The node's task workers (``open`` starts them): loaded handlers and agents."""
        self.synced: SyncResult | None = None
        """What ``open`` synced from ``agents_dir`` (created, updated, unchanged names)."""

    @property
    def runtime(self) -> Runtime:
        """The node's runtime (also ``rt``)."""
        return self.rt

    @property
    def tasks(self) -> TaskQueue:
        """Deprecated name of ``queue`` (the API's node called its queue ``tasks``)."""
        return self.queue

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        url: str | None = None,
        *,
        node: str = "local",
        sandbox: Sandbox | SandboxConfig | bool = True,
        runtime: Runtime | None = None,
        store_options: Mapping[str, Any] | None = None,
        queue_url: str = "sql",
        workers: Sequence[WorkerSpec | str] = (),
        agent_tasks: bool = True,
        runtime_options: Mapping[str, Any] | None = None,
        agents_dir: str | Path | None = None,
        gate: ExecutionGate | None = None,
        endpoint_guard: EndpointGuard | None = None,
        runtime_context: Callable[[Store], AbstractAsyncContextManager[Runtime]] | None = None,
    ) -> AsyncIterator[Self]:
        """Start a node (see the module documentation); a store that cannot be opened or
        written raises ``StoreUnavailableError``. ``url``: the store's database
        [``$NETSUKE_DATABASE_URL`` or the embedded SQLite file]; ``sandbox``: ``True`` for the
        default isolation (refused executions say why when none is available), a
        ``SandboxConfig``, or ``False`` for no sandbox (stored functions cannot run).
        ``queue_url`` [``sql``]: the task queue's backend (``redis://...``); ``workers``:
        handlers and workflows to load (``WorkerSpec`` or ``"module:name"``); ``agent_tasks``
        [``True``]: agents whose definitions declare capabilities take the tasks asking for
        them (``TaskHosting``, as in ``netsuke serve``).

        For the server's composition (``netsuke.api.open_node``), and any caller that needs
        them: ``sandbox`` may be a ``Sandbox`` not yet started (it starts on the first call
        and is closed after the runtime); ``runtime_options``: keyword arguments of the
        ``Runtime`` the node makes (``shutdown_timeout``, ``events``: a bus already watched);
        ``agents_dir``: a folder of definition files synced into the store before the agents
        start (``node.synced`` says what changed; each change is published as
        ``definition.changed``); ``gate``: the ``ExecutionGate`` bounding function calls
        [8 running, 32 waiting]; ``endpoint_guard``: the check a stored agent's ``base_url``
        must pass, set before any agent runs; ``runtime_context``: makes the runtime once the
        store is open (``netsuke serve --cluster`` joins the cluster there: its lease lives in
        the store), instead of ``Runtime(node, **runtime_options)``."""
        async with AsyncExitStack() as stack:
            store = await stack.enter_async_context(Store.open(url, **dict(store_options or {})))
            await store.check_writable()  # a read-only disk refuses to start (one error)
            box: Sandbox | None = None
            if isinstance(sandbox, Sandbox):  # starts on its first call, closed after the runtime
                box = sandbox
                stack.push_async_callback(box.aclose)
            elif sandbox is not False:
                config = sandbox if isinstance(sandbox, SandboxConfig) else None
                box = await stack.enter_async_context(Sandbox(config))
            if runtime is not None:
                rt = runtime
            elif runtime_context is not None:
                rt = await stack.enter_async_context(runtime_context(store))
            else:
                rt = await stack.enter_async_context(Runtime(node, **dict(runtime_options or {})))
            synced = await _sync_definitions(store, rt, agents_dir) if agents_dir else None
            # calls at once are bounded node-wide (ExecutionGate defaults: 8 running, 32 queued)
            functions = FunctionStore(store, box, events=rt.events, gate=gate or ExecutionGate())
            agents = await Agents.start(rt, store)
            agents.endpoint_guard = endpoint_guard
            tools = StoredTools(agents, functions if box is not None else None)
            agents.tool_resolver = tools
            queue = await open_queue(queue_url, store, events=rt.events)
            stack.push_async_callback(queue.close)
            self = cls(rt, store, agents, functions, box, tools, queue=queue)
            self.synced = synced
            stack.push_async_callback(self.workflows.aclose)
            specs = [WorkerSpec.parse(w) if isinstance(w, str) else w for w in workers]
            self.hosting = TaskHosting(queue, store, agents if agent_tasks else None, specs)
            for workflow in self.hosting.workflows:
                self.workflows.add(workflow)
            await self.hosting.start()
            stack.push_async_callback(self.hosting.aclose)
            yield self

    # ------------------------------------------------------------ seed 004's registry

    async def register_agent(
        self, draft: AgentDraft | Mapping[str, Any], *, start: bool = True, actor: str | None = None
    ) -> AgentSpec:
        """Store a definition (a new version when it changed) and, with ``start``, (re)start
        it under its name; returns its spec."""
        spec, _ = await self.agents.register_agent(draft, start=start, actor=actor)
        self.router.invalidate()
        return spec

    def get_agent(self, name: str) -> AgentHandle:
        """A handle on the agent running under ``name`` (no check: a call to a name that is
        not running raises ``AgentNotFoundError``)."""
        return AgentHandle(self, name)

    async def process(
        self,
        message: Any,
        *,
        capabilities: Iterable[str] = (),
        conversation_id: str | None = None,
        user: str | None = None,
    ) -> Any:
        """Route ``message`` to the agent offering every capability (the least-loaded live
        one; ``NoRouteError`` when none does) and return its reply. The turn runs in the
        session of the caller's conversation, so callers never see each other's memory:

        * ``conversation_id`` (and ``user``): the agent's session for that conversation of
          that user, ``f"{agent}@{user}:{conversation_id}"`` (``f"{agent}@{conversation_id}"``
          without a user); later calls with the same ids continue it;
        * ``user`` alone: the user's own session with the agent, ``f"{agent}-{user}"`` (the
          one ``agents.start_session(agent, user)`` names);
        * neither: a conversation of its own, for this one call (stored, then its process
          stops)."""
        caps = list(capabilities)
        try:
            entry = self.router.route(caps)
            agent = entry.meta["agent"] if isinstance(entry.meta, dict) else str(entry.key)
        except NoRouteError:
            remote = self.agents.remote  # a cluster member: an agent on another node may
            if remote is None:
                raise
            agent = await remote.route(caps)
        return await self._run_in_conversation(agent, message, conversation_id, user)

    async def _run_in_conversation(
        self, agent: str, message: Any, conversation_id: str | None, user: str | None
    ) -> Any:
        agents = self.agents
        if conversation_id is None and user is not None:
            if agents.remote is not None:  # its session may live on another node

                async def mine() -> Any:
                    ref = await agents.start_session(agent, user)
                    return await agents.run(ref.session_id, message)

                return await agents.remote.run_in(
                    agent, f"{agent}-{user}", user, message, local=mine
                )
            ref = await agents.start_session(agent, user)
            return await agents.run(ref.session_id, message)
        once = conversation_id is None
        scope = new_id() if conversation_id is None else conversation_id
        if user is not None:
            scope = f"{user}:{scope}"
        if agents.remote is not None and not once:  # its session may live on another node
            session = scoped_session_name(agent, scope)

            async def here() -> Any:
                ref = await agents.start_scoped(agent, scope, user=user)
                return await agents.run(ref.session_id, message)

            return await agents.remote.run_in(agent, session, user, message, local=here)
        ref = await agents.start_scoped(agent, scope, user=user)
        try:
            return await agents.run(ref.session_id, message)
        finally:
            if once:
                await agents.stop_agent(ref.session_id)


async def _sync_definitions(store: Store, rt: Runtime, directory: str | Path) -> SyncResult:
    """Sync the definition files of ``directory`` into the store and publish each change."""
    result = await sync_agents(store.agents, directory, actor="sync")
    log.info("node.agents_synced", directory=str(directory), **result)
    for outcome in ("created", "updated"):
        for name in result[outcome]:
            definition = await store.agents.get(name)
            rt.events.publish(
                topics.DEFINITION_CHANGED,
                kind="agent",
                name=name,
                version=definition.version,
                action=outcome,
                actor="sync",
            )
    return result
