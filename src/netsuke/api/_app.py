"""``create_app``: the FastAPI application of one node, and ``open_node`` to run one.

``create_app(settings, store=..., runtime=...)`` wires the routes (``/api/v1/...``, health,
metrics, the dashboard), problem+json errors and the request middleware around an already
opened store and runtime; its lifespan starts and stops the webhook dispatcher. The caller
owns the store and the runtime (``open_node`` opens both for ``netsuke serve``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.staticfiles import StaticFiles

from netsuke import __version__
from netsuke.agents import Agents
from netsuke.events import topics
from netsuke.kernel import Runtime
from netsuke.node import StoredTools
from netsuke.observability import get_logger
from netsuke.routing import TaskHosting, TaskQueue, WorkflowRunner, open_queue
from netsuke.sandbox import ExecutionGate, FunctionStore, Sandbox, SandboxConfig
from netsuke.store import Store, sync_agents

from ._auth import KeyCache, RateLimiter
from ._bodies import check_json_body
from ._context import ApiContext
from ._docs import install_docs
from ._middleware import ApiMiddleware
from ._model_guard import definition_problems, endpoint_guard
from ._monitor import AgentMonitor
from ._pages import html_error
from ._problems import install_problem_handlers
from ._settings import Settings
from ._webhooks import WebhookDispatcher
from ._workflows import WorkflowCatalog
from .routes import (
    agents,
    audit,
    chat,
    control,
    dashboard,
    events,
    executions,
    functions,
    health,
    keys,
    manager,
    session_control,
    sessions,
    tasks,
    webhooks,
    workflows,
)

__all__ = ["API_PREFIX", "Node", "create_app", "open_node"]

API_PREFIX = "/api/v1"
BOOTSTRAP_KEY_NAME = "bootstrap-admin"
log = get_logger("netsuke.api")


def create_app(
    settings: Settings,
    *,
    store: Store,
    runtime: Runtime,
    extras: dict[str, Any] | None = None,
) -> FastAPI:
    """The node's ASGI app over ``store`` and ``runtime`` (both opened and closed by the
    caller). ``extras`` carries services of higher layers by name."""
    dispatcher = WebhookDispatcher(
        store,
        runtime.events,
        allow_private=settings.allow_private_webhooks,
        max_attempts=settings.webhook_max_attempts,
        backoff_s=settings.webhook_backoff_s,
        timeout_s=settings.webhook_timeout_s,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await dispatcher.start()
        try:
            yield
        finally:
            await dispatcher.aclose()

    app = FastAPI(
        title="Netsuke",
        version=__version__,
        description="Operate a Netsuke node: agents, events, webhooks, keys and audit.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=None,  # install_docs serves them with local assets
        redoc_url=None,
        lifespan=lifespan,
        # one check of every JSON body (lone surrogates, nesting depth) before any route
        dependencies=[Depends(check_json_body)],
        # Netsuke's own middleware makes the server span, metrics and logs (with request ids,
        # audit and redaction); FastAPI's built-in telemetry would double them.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.ctx = ApiContext(
        settings=settings,
        store=store,
        runtime=runtime,
        keys=KeyCache(store),
        limiter=RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst),
        anonymous=RateLimiter(
            settings.anonymous_rate_limit_per_minute, settings.anonymous_rate_limit_burst
        ),
        webhooks=dispatcher,
        extras=dict(extras or {}),
    )
    install_problem_handlers(app, html=html_error)
    assert session_control.router is sessions.router  # its routes join the sessions router
    # Routes are matched in order: the chat path (sessions) first. Prefixes are disjoint.
    # Each module's router is included into the app directly (not through an ``/api/v1``
    # router): FastAPI walks every level of included routers twice per request (to match, then
    # to handle), so one level less is about 700 function calls less per request
    # (``benchmarks/api_cost.py``).
    for module in (
        sessions,
        control,
        agents,
        executions,
        functions,
        tasks,
        workflows,
        audit,
        keys,
        webhooks,
        events,
        manager,
    ):
        app.include_router(module.router, prefix=API_PREFIX)
    install_docs(app, API_PREFIX)
    app.include_router(health.router)
    app.include_router(dashboard.router)
    app.include_router(chat.router)
    app.mount(
        "/static",
        StaticFiles(directory=str(Path(__file__).parent / "static")),
        name="static",
    )
    app.add_middleware(
        ApiMiddleware,
        store=store,
        max_body_bytes=settings.max_body_bytes,
        access_log_sample=settings.access_log_sample,
        access_log_slow_ms=settings.access_log_slow_ms,
    )
    return app


async def _warn_unusable_models(store: Store, settings: Settings, names: list[str]) -> None:
    """Log (warning) each synced definition whose model cannot work on this node, so the
    operator learns it at start, not at the first turn (``netsuke agents check NAME``)."""
    for name in names:
        draft = (await store.agents.get(name)).draft()
        for problem in await definition_problems(settings, draft):
            log.warning("api.agent_model_unusable", agent=name, **problem)


@dataclass
class Node:
    """An opened store and runtime, the node's agent system and its monitor, plus the admin
    key issued on first start (else None; ``issue_bootstrap_key`` issues it when ``open_node``
    was asked not to). ``extras`` is what ``create_app`` takes."""

    settings: Settings
    store: Store
    runtime: Runtime
    bootstrap_secret: str | None
    agents: Agents | None = None
    monitor: AgentMonitor | None = None
    functions: FunctionStore | None = None
    tasks: TaskQueue | None = None
    workflows: WorkflowCatalog | None = None
    hosting: TaskHosting | None = None

    async def issue_bootstrap_key(self) -> str | None:
        """Issue the admin key when ``bootstrap_admin`` is on and the store holds no key (not
        even a revoked one); its secret, also kept in ``bootstrap_secret``, else None."""
        if self.bootstrap_secret is None:
            self.bootstrap_secret = await issue_bootstrap_key(self.settings, self.store)
        return self.bootstrap_secret

    @property
    def extras(self) -> dict[str, Any]:
        """The services for ``create_app(..., extras=node.extras)``: ``agents``, ``monitor``."""
        out: dict[str, Any] = {}
        if self.agents is not None:
            out["agents"] = self.agents
        if self.monitor is not None:
            out["monitor"] = self.monitor
        if self.functions is not None:
            out["functions"] = self.functions
        if self.tasks is not None:
            out["tasks"] = self.tasks
        if self.workflows is not None:
            out["workflows"] = self.workflows
        if self.hosting is not None:
            out["hosting"] = self.hosting
        return out


async def issue_bootstrap_key(settings: Settings, store: Store) -> str | None:
    """The secret of a new admin key if ``bootstrap_admin`` and the store has no key yet."""
    if not settings.bootstrap_admin or await store.api_keys.list(include_revoked=True):
        return None
    issued = await store.api_keys.create(BOOTSTRAP_KEY_NAME, "admin", actor="bootstrap")
    log.info("api.bootstrap_key_issued", prefix=issued.key.prefix)
    return issued.secret


@asynccontextmanager
async def open_node(settings: Settings, *, bootstrap: bool = True) -> AsyncIterator[Node]:
    """Open the store (migrating embedded SQLite) and start the runtime, the agent system
    (``Agents``, with ``netsuke.node.StoredTools`` giving stored definitions their function and
    delegation tools), an ``AgentMonitor`` fed from the bus, the function store (its sandbox
    starts on the first call), the task queue on the store, the workflow catalog and
    ``TaskHosting`` (the ``workers`` of the settings and the agents' task workers);
    sync ``agents_dir`` and, with ``bootstrap_admin`` and no key yet, issue an admin key
    (with ``bootstrap=False`` it is left to ``Node.issue_bootstrap_key``: ``netsuke serve``
    issues it only once it listens, so a start that cannot bind issues no key unseen).
    Closes all on exit (the runtime's shutdown stops every agent; their conversations are in
    the store)."""
    async with Store.open(settings.database_url) as store:
        await store.check_writable()  # a read-only data dir refuses to start, in one line
        secret = await issue_bootstrap_key(settings, store) if bootstrap else None
        # The sandbox starts its workers on the first call (SandboxConfig.from_env:
        # NETSUKE_SANDBOX_ISOLATION, NETSUKE_SANDBOX_POOL_SIZE); it closes after the runtime
        # has stopped every agent, so no turn in flight loses its function tools.
        sandbox = Sandbox(SandboxConfig.from_env())
        async with AsyncExitStack() as stack:
            stack.push_async_callback(sandbox.aclose)
            rt = await stack.enter_async_context(
                Runtime(settings.node, shutdown_timeout=settings.shutdown_timeout)
            )
            # NETSUKE_QUEUE_URL: the store's table, or Redis (one clear error when unusable)
            queue = await open_queue(settings.queue_url, store, events=rt.events)
            stack.push_async_callback(queue.close)
            if settings.agents_dir is not None:
                result = await sync_agents(store.agents, settings.agents_dir, actor="sync")
                log.info("api.agents_synced", directory=str(settings.agents_dir), **result)
                await _warn_unusable_models(
                    store, settings, [*result["created"], *result["updated"]]
                )
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
            monitor = AgentMonitor(rt.events)
            monitor.start()
            gate = ExecutionGate(
                max_running=settings.executions_max_running,
                per_caller=settings.executions_per_caller,
                max_waiting=settings.executions_max_waiting,
                max_wait_s=settings.executions_max_wait_s,
            )
            functions = FunctionStore(store, sandbox, events=rt.events, gate=gate)
            agent_system = await Agents.start(rt, store)
            # stored definitions reach their base_url only through the node's address guard
            agent_system.endpoint_guard = endpoint_guard(settings)
            # stored definitions get their stored functions and delegates as tools
            agent_system.tool_resolver = StoredTools(agent_system, functions)
            catalog = WorkflowCatalog(WorkflowRunner(store, events=rt.events))
            # the configured handlers and workflows, and the agents' task workers
            hosting = TaskHosting(
                queue,
                store,
                agent_system if settings.agent_tasks else None,
                settings.workers,
            )
            for workflow in hosting.workflows:
                catalog.add(workflow)
            await hosting.start()
            try:
                yield Node(
                    settings=settings,
                    store=store,
                    runtime=rt,
                    bootstrap_secret=secret,
                    agents=agent_system,
                    monitor=monitor,
                    functions=functions,
                    tasks=queue,
                    workflows=catalog,
                    hosting=hosting,
                )
            finally:
                await hosting.aclose()
                monitor.aclose()
                await catalog.aclose()
