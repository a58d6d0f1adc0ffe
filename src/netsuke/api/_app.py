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

from fastapi import APIRouter, FastAPI
from fastapi.staticfiles import StaticFiles

from netsuke import __version__
from netsuke.agents import Agents
from netsuke.events import topics
from netsuke.kernel import Runtime
from netsuke.node import StoredTools
from netsuke.observability import get_logger
from netsuke.routing import TaskQueue, WorkflowRunner
from netsuke.sandbox import FunctionStore, Sandbox, SandboxConfig
from netsuke.store import Store, sync_agents

from ._auth import KeyCache, RateLimiter
from ._context import ApiContext
from ._middleware import ApiMiddleware
from ._monitor import AgentMonitor
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
    functions,
    health,
    keys,
    manager,
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
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
        lifespan=lifespan,
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
        webhooks=dispatcher,
        extras=dict(extras or {}),
    )
    install_problem_handlers(app)
    api = APIRouter(prefix=API_PREFIX)
    for module in (
        control,
        agents,
        sessions,
        functions,
        tasks,
        workflows,
        audit,
        keys,
        webhooks,
        events,
        manager,
    ):
        api.include_router(module.router)
    app.include_router(api)
    app.include_router(health.router)
    app.include_router(dashboard.router)
    app.include_router(chat.router)
    app.mount(
        "/static",
        StaticFiles(directory=str(Path(__file__).parent / "static")),
        name="static",
    )
    app.add_middleware(ApiMiddleware, store=store, max_body_bytes=settings.max_body_bytes)
    return app


@dataclass
class Node:
    """An opened store and runtime, the node's agent system and its monitor, plus the admin
    key issued on first start (else None). ``extras`` is what ``create_app`` takes."""

    settings: Settings
    store: Store
    runtime: Runtime
    bootstrap_secret: str | None
    agents: Agents | None = None
    monitor: AgentMonitor | None = None
    functions: FunctionStore | None = None
    tasks: TaskQueue | None = None
    workflows: WorkflowCatalog | None = None

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
        return out


@asynccontextmanager
async def open_node(settings: Settings) -> AsyncIterator[Node]:
    """Open the store (migrating embedded SQLite) and start the runtime, the agent system
    (``Agents``, with ``netsuke.node.StoredTools`` giving stored definitions their function and
    delegation tools), an ``AgentMonitor`` fed from the bus, the function store (its sandbox
    starts on the first call), the task queue on the store and an empty workflow catalog;
    sync ``agents_dir`` and, with ``bootstrap_admin`` and no key yet, issue an admin key.
    Closes all on exit (the runtime's shutdown stops every agent; their conversations are in
    the store)."""
    async with Store.open(settings.database_url) as store:
        secret: str | None = None
        if settings.bootstrap_admin and not await store.api_keys.list(include_revoked=True):
            issued = await store.api_keys.create(BOOTSTRAP_KEY_NAME, "admin", actor="bootstrap")
            secret = issued.secret
        # The sandbox starts its workers on the first call (SandboxConfig.from_env:
        # NETSUKE_SANDBOX_ISOLATION, NETSUKE_SANDBOX_POOL_SIZE); it closes after the runtime
        # has stopped every agent, so no turn in flight loses its function tools.
        sandbox = Sandbox(SandboxConfig.from_env())
        async with AsyncExitStack() as stack:
            stack.push_async_callback(sandbox.aclose)
            rt = await stack.enter_async_context(
                Runtime(settings.node, shutdown_timeout=settings.shutdown_timeout)
            )
            if settings.agents_dir is not None:
                result = await sync_agents(store.agents, settings.agents_dir, actor="sync")
                log.info("api.agents_synced", directory=str(settings.agents_dir), **result)
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
            functions = FunctionStore(store, sandbox, events=rt.events)
            agent_system = await Agents.start(rt, store)
            # stored definitions get their stored functions and delegates as tools
            agent_system.tool_resolver = StoredTools(agent_system, functions)
            queue = TaskQueue.sql(store, events=rt.events)
            catalog = WorkflowCatalog(WorkflowRunner(store, events=rt.events))
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
                )
            finally:
                monitor.aclose()
                await catalog.aclose()
                await queue.close()
