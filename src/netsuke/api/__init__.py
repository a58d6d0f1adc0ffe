"""Netsuke's operations plane: the FastAPI app of a node (REST under ``/api/v1``, the events
WebSocket, webhooks, API keys with roles, audit, health, metrics and the dashboard).

::

    settings = load_settings()
    async with open_node(settings) as node:
        app = create_app(settings, store=node.store, runtime=node.runtime)

Errors are RFC 9457 problem+json (``_problems``); see ``docs/api.md``.
"""

from ._app import API_PREFIX, Node, create_app, open_node
from ._auth import Principal
from ._context import ApiContext
from ._problems import ProblemError
from ._settings import Settings, SettingsError, load_settings
from ._ssrf import TargetRefusedError, check_target
from ._telemetry import configure_tracing
from ._webhooks import WebhookDispatcher, sign, verify_signature

__all__ = [
    "API_PREFIX",
    "ApiContext",
    "Node",
    "Principal",
    "ProblemError",
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
