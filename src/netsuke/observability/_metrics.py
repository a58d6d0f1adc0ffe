from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

__all__ = ["REGISTRY", "register_collector", "render_metrics", "unregister_collector"]

REGISTRY = CollectorRegistry(auto_describe=True)
"""Netsuke's Prometheus registry (kept apart from the client's global one)."""


def register_collector(collector: Collector) -> None:
    """Add a collector to ``REGISTRY``; a second registration of the same object is ignored."""
    try:
        REGISTRY.register(collector)
    except ValueError:
        pass


def unregister_collector(collector: Collector) -> None:
    try:
        REGISTRY.unregister(collector)
    except KeyError:
        pass


def render_metrics() -> bytes:
    """The Prometheus text exposition of ``REGISTRY``."""
    return generate_latest(REGISTRY)
