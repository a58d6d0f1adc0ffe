"""``ApiContext``: what every route reaches through ``deps``: settings, store, node, helpers.

One context per app, built by ``create_app`` and kept on ``app.state.ctx``. Lower layers plug
in here as they land (the agents layer's session manager, the sandbox's function runner, the
routing layer's queue): a route module for them takes what it needs from the context.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from netsuke.kernel import Runtime
from netsuke.store import Store

from ._auth import FailureLog, KeyCache, RateLimiter
from ._settings import Settings
from ._webhooks import WebhookDispatcher

__all__ = ["ApiContext"]


@dataclass
class ApiContext:
    settings: Settings
    store: Store
    runtime: Runtime
    keys: KeyCache
    limiter: RateLimiter
    webhooks: WebhookDispatcher
    anonymous: RateLimiter = field(default_factory=lambda: RateLimiter(60, 30))
    """Failed authentications per client address (``deps.authenticate``)."""
    auth_failures: FailureLog = field(default_factory=FailureLog)
    extras: dict[str, Any] = field(default_factory=dict)
    """Services of layers above the kernel and store, by name (e.g. ``"sessions"``)."""
