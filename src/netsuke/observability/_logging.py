from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog
from opentelemetry import trace

__all__ = ["add_trace_ids", "configure_logging", "get_logger", "redact_secrets"]

_SECRET_WORDS = ("password", "secret", "token", "api_key", "apikey", "authorization", "cookie")
REDACTED = "[redacted]"


def add_trace_ids(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A structlog processor: ``trace_id`` and ``span_id`` of the current OpenTelemetry span
    (hex, as exporters print them), when one is recording."""
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event.setdefault("trace_id", format(ctx.trace_id, "032x"))
        event.setdefault("span_id", format(ctx.span_id, "016x"))
    return event


def redact_secrets(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A structlog processor: the value of any key naming a secret (password, secret, token,
    api_key, authorization, cookie; any case, as part of the key) becomes ``[redacted]``, so a
    secret passed to a log call by mistake never reaches the output."""
    for key in event:
        lowered = key.lower()
        if any(word in lowered for word in _SECRET_WORDS) and event[key] is not None:
            event[key] = REDACTED
    return event


_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


def configure_logging(level: str = "info", *, json: bool = False) -> None:
    """Configure structlog for the process: ``level`` (debug..critical) and JSON or console,
    on stderr. Until it is called, Netsuke logs only warnings and errors (on stderr).

    Every line carries the context bound with ``structlog.contextvars.bind_contextvars`` (agent,
    session, execution ids), the current trace and span ids, and has secret-named keys redacted.

    Raises ``ValueError`` for an unknown level."""
    try:
        lvl = _LEVELS[level.lower()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r}; one of {sorted(_LEVELS)}") from None
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            add_trace_ids,
            redact_secrets,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info if json else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )


def _stderr_logger(*_args: Any) -> structlog.PrintLogger:
    # sys.stderr is looked up per logger, so a replaced stderr (tests, daemons) is honoured
    return structlog.PrintLogger(sys.stderr)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)


def _quiet_default() -> None:
    """The library's default until someone configures logging: warnings and errors only, on
    stderr (structlog's own default prints every level to stdout, mixed into the program's
    output). ``configure_logging`` (``netsuke serve`` calls it) or the application's own
    ``structlog.configure`` replaces it; a configuration made before import is kept."""
    if not structlog.is_configured():
        configure_logging("warning")


_quiet_default()
