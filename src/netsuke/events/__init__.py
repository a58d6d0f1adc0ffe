"""Netsuke's event bus: typed state-change events with topic-pattern subscriptions.

A bottom layer like ``observability``: every other layer publishes into the node's bus
(``Runtime.events``); the API streams it over WebSocket and webhooks. A slow subscriber never
blocks a producer: buffers are bounded and drops are counted. See ``_bus`` for the semantics and
``TOPICS`` for the catalogue.
"""

from . import _topics as topics
from ._bus import Event, EventBus, Overflow, Subscription, SubscriptionClosed, check_pattern
from ._topics import TOPICS

__all__ = [
    "TOPICS",
    "Event",
    "EventBus",
    "Overflow",
    "Subscription",
    "SubscriptionClosed",
    "check_pattern",
    "topics",
]
