"""Netsuke's operations plane: the FastAPI app of a node (REST under ``/api/v1``, the events
WebSocket, webhooks, API keys with roles, audit, health, metrics and the dashboard).

::

    settings = load_settings()
    async with open_node(settings) as node:
        app = create_app(settings, store=node.store, runtime=node.runtime, extras=node.extras)

``open_node`` builds the node with ``netsuke.node.Node.open`` (the one composition root) and
yields a ``ServerNode``: that ``Node`` plus the server's settings, ``AgentMonitor`` and
bootstrap key. ``node.extras`` carries the node's agent system, monitor, function store, task
queue and workflow catalog to the routes. (``netsuke.api.Node``, the server's former separate
node class, is a deprecated name of ``ServerNode``.)

Errors are RFC 9457 problem+json (``_problems``); see ``docs/api.md``.
"""

import typing as _typing
import warnings as _warnings

from ._app import API_PREFIX, ServerNode, create_app, open_node
from ._auth import Principal
from ._context import ApiContext
from ._monitor import AgentMonitor
from ._problems import ProblemError
from ._settings import Settings, SettingsError, load_settings
from ._ssrf import TargetRefusedError, check_target
from ._telemetry import configure_tracing
from ._webhooks import WebhookDispatcher, sign, verify_signature

__all__ = [
    "API_PREFIX",
    "AgentMonitor",
    "ApiContext",
    "Principal",
    "ProblemError",
    "ServerNode",
    "Settings",
    "SettingsError",
    "TargetRefusedError",
    "WebhookDispatcher",
    "check_target",
    "configure_tracing",
    "create_app",
    "load_settings",
    "open_node",
    "sign",
    "verify_signature",
]


def __getattr__(name: str) -> _typing.Any:
    if name == "Node":  # the server's node was a class of its own; it is now a netsuke Node
        _warnings.warn(
            "netsuke.api.Node is deprecated: open_node yields a netsuke.api.ServerNode (a "
            "netsuke.node.Node with the server's services)",
            DeprecationWarning,
            stacklevel=2,
        )
        return ServerNode
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
