"""Logs, metrics and traces, used by every layer and depending on none of them.

* Logs: structlog, JSON or console, with context (pid, name, node, ...). ``configure_logging``.
* Metrics: Prometheus. Hot-path counters are plain integers read at scrape time by collectors,
  so counting costs nothing on a message path. ``REGISTRY`` is the registry they join.
* Traces: OpenTelemetry's API; with no SDK installed the tracer is a no-op.
"""

from ._logging import (
    MAX_EXCEPTION_CHARS,
    add_trace_ids,
    configure_logging,
    format_exception,
    get_logger,
    redact_secrets,
    register_secret,
    scrub_secrets,
)
from ._metrics import REGISTRY, register_collector, render_metrics, unregister_collector
from ._tracing import get_tracer

__all__ = [
    "MAX_EXCEPTION_CHARS",
    "REGISTRY",
    "add_trace_ids",
    "configure_logging",
    "format_exception",
    "get_logger",
    "get_tracer",
    "redact_secrets",
    "register_collector",
    "register_secret",
    "render_metrics",
    "scrub_secrets",
    "unregister_collector",
]
