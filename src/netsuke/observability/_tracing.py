from __future__ import annotations

from typing import Any

from opentelemetry import trace

__all__ = ["get_tracer"]


def get_tracer(name: str) -> Any:
    """An OpenTelemetry tracer; a no-op until an SDK and exporter are configured."""
    return trace.get_tracer(name)
