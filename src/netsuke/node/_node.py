"""A node with every layer wired together: the composition root for library users.

``Node.open()`` starts, in order: the store (migrated when embedded), the runtime (with its
event bus), the sandbox (isolated workers; skipped with ``sandbox=False``), the function store,
the agents (their ``tool_resolver`` gives stored agents their stored functions and delegates),
the capability router, the task queue and the workflow runner. ``aclose()`` stops them in the
reverse order: queue, agents and every other process (the runtime's ordered shutdown), sandbox,
store, so no reply is acknowledged after its store is gone.

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
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from netsuke.agents import Agents
from netsuke.kernel import Runtime
from netsuke.routing import (
    CapabilityRouter,
    TaskHosting,
    TaskQueue,
    WorkerSpec,
    WorkflowRunner,
    open_queue,
    process_load,
)
from netsuke.sandbox import ExecutionGate, FunctionStore, Sandbox, SandboxConfig
from netsuke.store import AgentDraft, AgentSpec, Store, new_id

from ._tools import StoredTools

__all__ = ["AgentHandle", "Node"]


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
        self.workflows = WorkflowRunner(store, events=rt.events)
        self.hosting: TaskHosting | None = None
        """The node's task workers (``open`` starts them): loaded handlers and agents."""

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        url: str | None = None,
        *,
        node: str = "local",
        sandbox: SandboxConfig | bool = True,
        runtime: Runtime | None = None,
        store_options: Mapping[str, Any] | None = None,
        queue_url: str = "sql",
        workers: Sequence[WorkerSpec | str] = (),
        agent_tasks: bool = True,
    ) -> AsyncIterator[Node]:
        """Start a node (see the module documentation); a store that cannot be opened or
        written raises ``StoreUnavailableError``. ``url``: the store's database
        [``$NETSUKE_DATABASE_URL`` or the embedded SQLite file]; ``sandbox``: ``True`` for the
        default isolation (refused executions say why when none is available), a
        ``SandboxConfig``, or ``False`` for no sandbox (stored functions cannot run).
        ``queue_url`` [``sql``]: the task queue's backend (``redis://...``); ``workers``:
        handlers and workflows to load (``WorkerSpec`` or ``"module:name"``); ``agent_tasks``
        [``True``]: agents whose definitions declare capabilities take the tasks asking for
        them (``TaskHosting``, as in ``netsuke serve``)."""
        async with AsyncExitStack() as stack:
            store = await stack.enter_async_context(Store.open(url, **dict(store_options or {})))
            await store.check_writable()  # a read-only disk refuses to start (one error)
            box: Sandbox | None = None
            if sandbox is not False:
                config = sandbox if isinstance(sandbox, SandboxConfig) else None
                box = await stack.enter_async_context(Sandbox(config))
            rt = runtime or Runtime(node)
            if runtime is None:
                await stack.enter_async_context(rt)
            # calls at once are bounded node-wide (ExecutionGate defaults: 8 running, 32 queued)
            functions = FunctionStore(store, box, events=rt.events, gate=ExecutionGate())
            agents = await Agents.start(rt, store)
            tools = StoredTools(agents, functions if box is not None else None)
            agents.tool_resolver = tools
            queue = await open_queue(queue_url, store, events=rt.events)
            stack.push_async_callback(queue.close)
            self = cls(rt, store, agents, functions, box, tools, queue=queue)
            specs = [WorkerSpec.parse(w) if isinstance(w, str) else w for w in workers]
            self.hosting = TaskHosting(queue, store, agents if agent_tasks else None, specs)
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
        entry = self.router.route(capabilities)
        agent = entry.meta["agent"] if isinstance(entry.meta, dict) else str(entry.key)
        return await self._run_in_conversation(agent, message, conversation_id, user)

    async def _run_in_conversation(
        self, agent: str, message: Any, conversation_id: str | None, user: str | None
    ) -> Any:
        agents = self.agents
        if conversation_id is None and user is not None:
            ref = await agents.start_session(agent, user)
            return await agents.run(ref.session_id, message)
        once = conversation_id is None
        scope = new_id() if conversation_id is None else conversation_id
        if user is not None:
            scope = f"{user}:{scope}"
        ref = await agents.start_scoped(agent, scope, user=user)
        try:
            return await agents.run(ref.session_id, message)
        finally:
            if once:
                await agents.stop_agent(ref.session_id)
