"""``create_app``: the FastAPI application of one node, and ``open_node`` to run one.

``create_app(settings, store=..., runtime=...)`` wires the routes (``/api/v1/...``, health,
metrics, the dashboard), problem+json errors and the request middleware around an already
opened store and runtime; its lifespan starts and stops the webhook dispatcher. The caller
owns the store and the runtime (``open_node`` opens both for ``netsuke serve``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.staticfiles import StaticFiles

from netsuke import __version__
from netsuke.events import EventBus
from netsuke.kernel import Runtime
from netsuke.node import Node
from netsuke.observability import get_logger
from netsuke.sandbox import ExecutionGate, Sandbox, SandboxConfig
from netsuke.store import NodeIdentity, Store

from ._auth import KeyCache, RateLimiter, cache_keys
from ._bodies import check_json_body
from ._cache_layer import CacheLayer
from ._context import ApiContext
from ._definition_cache import cache_definitions
from ._docs import install_docs
from ._forwarding import start_forwarding
from ._middleware import ApiMiddleware
from ._model_guard import definition_problems, endpoint_guard
from ._monitor import AgentMonitor
from ._pages import html_error
from ._problems import install_problem_handlers
from ._settings import Settings
from ._webhooks import WebhookDispatcher
from .routes import (
    agent_series,
    agents,
    audit,
    chat,
    control,
    dashboard,
    dashboard_ops,
    events,
    executions,
    functions,
    health,
    keys,
    manager,
    session_control,
    sessions,
    tasks,
    tree,
    webhooks,
    workflows,
)
from .routes import cluster as cluster_routes

__all__ = ["API_PREFIX", "ServerNode", "create_app", "open_node"]

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
        forwarding = await start_forwarding(app)  # a cluster: serve sessions to other nodes
        try:
            yield
        finally:
            if forwarding is not None:
                await forwarding.close()
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
        # NETSUKE_CACHE_URL: the node's shared cache layer (``open_node``), else none
        keys=KeyCache(store, layer=(extras or {}).get("cache")),
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
        tree,
        agent_series,
        cluster_routes,
    ):
        app.include_router(module.router, prefix=API_PREFIX)
    install_docs(app, API_PREFIX)
    app.include_router(health.router)
    app.include_router(dashboard_ops.router)  # first: its /agents/{name} and /tasks win
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


class ServerNode(Node):
    """The node ``netsuke serve`` runs: a ``netsuke.node.Node`` (the one composition root, so
    everything a library user knows about ``Node`` holds here) plus the server's services:
    its ``settings``, the ``AgentMonitor`` fed from the bus, and the admin key issued on first
    start (``bootstrap_secret``, else None; ``issue_bootstrap_key`` issues it when
    ``open_node`` was asked not to). ``extras`` is what ``create_app`` takes. Built only by
    ``open_node``."""

    settings: Settings
    monitor: AgentMonitor
    bootstrap_secret: str | None = None
    cluster: Any = None
    """The ``netsuke.cluster.ClusterNode`` when the node joined a cluster (``cluster``)."""
    cache: CacheLayer | None = None
    """The shared Redis cache of keys and definitions (``cache_url``), else None."""

    async def issue_bootstrap_key(self) -> str | None:
        """Issue the admin key when ``bootstrap_admin`` is on and the store holds no key (not
        even a revoked one); its secret, also kept in ``bootstrap_secret``, else None."""
        if self.bootstrap_secret is None:
            self.bootstrap_secret = await issue_bootstrap_key(self.settings, self.store)
        return self.bootstrap_secret

    @property
    def extras(self) -> dict[str, Any]:
        """The services for ``create_app(..., extras=node.extras)``: ``agents``, ``monitor``,
        ``functions``, ``tasks`` (the queue), ``workflows`` (the catalog), ``hosting``."""
        out: dict[str, Any] = {
            "agents": self.agents,
            "monitor": self.monitor,
            "functions": self.functions,
            "tasks": self.queue,
            "workflows": self.workflows,
        }
        if self.hosting is not None:
            out["hosting"] = self.hosting
        if self.cluster is not None:
            out["cluster"] = self.cluster
        if self.cache is not None:
            out["cache"] = self.cache
        return out


async def issue_bootstrap_key(settings: Settings, store: Store) -> str | None:
    """The secret of a new admin key if ``bootstrap_admin`` and the store has no key yet."""
    if not settings.bootstrap_admin or await store.api_keys.list(include_revoked=True):
        return None
    issued = await store.api_keys.create(BOOTSTRAP_KEY_NAME, "admin", actor="bootstrap")
    log.info("api.bootstrap_key_issued", prefix=issued.key.prefix)
    return issued.secret


@asynccontextmanager
async def open_node(settings: Settings, *, bootstrap: bool = True) -> AsyncIterator[ServerNode]:
    """``Node.open`` with the server's settings, and the server's services: the store (its
    embedded SQLite migrated), the sandbox (``SandboxConfig.from_env``, started on its first
    call), the runtime (``shutdown_timeout``), the definitions of ``agents_dir`` (synced;
    those whose model cannot work here are logged as ``api.agent_model_unusable``), the
    function store (the settings' ``ExecutionGate``), the agent system (the node's address
    guard on stored definitions' ``base_url``, ``StoredTools``), the task queue
    (``queue_url``), the workflow catalog and ``TaskHosting`` (``workers``, ``agent_tasks``);
    plus an ``AgentMonitor`` watching the bus from before the first agent starts and, with
    ``bootstrap_admin`` and no key yet, an admin key (with ``bootstrap=False`` it is left to
    ``ServerNode.issue_bootstrap_key``: ``netsuke serve`` issues it only once it listens, so
    a start that cannot bind issues no key unseen). Closes all on exit (the runtime's
    shutdown stops every agent; their conversations are in the store)."""
    bus = EventBus(settings.node)  # the runtime's bus, watched before any agent starts
    monitor = AgentMonitor(bus)
    monitor.start()
    gate = ExecutionGate(
        max_running=settings.executions_max_running,
        per_caller=settings.executions_per_caller,
        max_waiting=settings.executions_max_waiting,
        max_wait_s=settings.executions_max_wait_s,
    )
    joined: list[Any] = []  # the ClusterNode, once joined
    caches: list[CacheLayer] = []

    @asynccontextmanager
    async def runtime_context(store: Store) -> AsyncIterator[Runtime]:
        """Once the store is open: the shared cache around it, then the runtime (joined to
        the cluster when ``cluster`` is set: its lease lives in the store)."""
        async with AsyncExitStack() as stack:
            # NETSUKE_CACHE_URL: keys and definitions cached in Redis, invalidated on every
            # node through pub/sub (one clear error when Redis cannot be reached)
            if settings.cache_url:
                cache = await CacheLayer.open(settings.cache_url, ttl_s=settings.cache_ttl_s)
                stack.push_async_callback(cache.close)
                cache_keys(store, cache)
                cache_definitions(store, cache)
                caches.append(cache)
            if settings.cluster is None:
                yield await stack.enter_async_context(
                    Runtime(settings.node, shutdown_timeout=settings.shutdown_timeout, events=bus)
                )
                return
            from netsuke.cluster._member_node import join_from_settings

            cluster = await stack.enter_async_context(
                join_from_settings(settings, store.database, events=bus)
            )
            joined.append(cluster)
            # sessions are owned by this run of the node; another owner's sessions are taken
            # over only once its lease ran out by the database clock (the commit is fenced)
            member = cluster.membership
            assert member.incarnation is not None  # joined
            me = NodeIdentity(member.name, member.incarnation)
            store.conversations.set_ownership(me, member)
            yield cluster.runtime

    try:
        async with ServerNode.open(
            settings.database_url,
            node=settings.node,
            # NETSUKE_SANDBOX_ISOLATION, NETSUKE_SANDBOX_POOL_SIZE; its workers start on the
            # first call, and it closes after the runtime has stopped every agent, so no turn
            # in flight loses its function tools
            sandbox=Sandbox(SandboxConfig.from_env()),
            # NETSUKE_QUEUE_URL: the store's table, or a broker (one clear error when unusable)
            queue_url=settings.queue_url,
            workers=settings.workers,
            agent_tasks=settings.agent_tasks,
            agents_dir=settings.agents_dir,
            gate=gate,
            # stored definitions reach their base_url only through the node's address guard
            endpoint_guard=endpoint_guard(settings),
            runtime_context=runtime_context,
        ) as node:
            node.settings = settings
            node.monitor = monitor
            node.cluster = joined[0] if joined else None
            node.cache = caches[0] if caches else None
            if node.synced is not None:
                changed = [*node.synced["created"], *node.synced["updated"]]
                await _warn_unusable_models(node.store, settings, changed)
            if bootstrap:
                await node.issue_bootstrap_key()
            if node.cluster is None:
                yield node
            else:  # a gone member's sessions restart here by OTP rules (docs/cluster.md)
                from netsuke.cluster._failover import Failover

                async with Failover(node.cluster, node.agents):
                    yield node
    finally:
        monitor.aclose()
        await bus.aclose()  # the runtime closed it already, unless the node failed to open
