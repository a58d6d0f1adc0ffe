"""Logging for every layer: structlog, console or JSON lines, on stderr.

Rules (``configure_logging``):

* Every line carries the context bound with ``structlog.contextvars`` and the current trace
  and span ids.
* **Secrets never reach a line.** The value of a key naming a secret (``password``,
  ``secret``, ``token``, ``api_key``, ``authorization``, ``cookie``) becomes ``[redacted]``;
  then the rendered line is scrubbed of anything shaped like a secret (``scrub_secrets``):
  Netsuke API keys (``nsk_<prefix>_…`` keeps only the prefix), webhook secrets (``whsec_…``),
  ``Bearer``/``Basic`` credentials, ``sk-…`` model keys, ``Cookie:``/``Authorization:``
  values and the values of secret-named environment variables (``*_API_KEY``, ``*_TOKEN``,
  ``*SECRET*``, ``*PASSWORD*``) and of ``register_secret``.
* **Exceptions are rendered bounded**, the same way in both modes (``format_exception``): the
  innermost ``MAX_TRACEBACK_FRAMES`` (30) frames of each exception in the chain, at most
  ``MAX_EXCEPTION_CHARS`` (16,000) characters in all, and **never local variables** (they
  held request scopes with the caller's key, and rendering them froze the event loop for
  seconds). The cost is that of the standard library's traceback formatting.
* With ``capture_stdlib`` (``netsuke serve``), records of the standard ``logging`` module at
  WARNING or above (uvicorn's "Exception in ASGI application", asyncio's unretrieved task
  errors) go through the same pipeline, so they are bounded and scrubbed too.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import traceback
from collections.abc import Callable, MutableMapping
from types import TracebackType
from typing import Any

import structlog
from opentelemetry import trace

__all__ = [
    "MAX_EXCEPTION_CHARS",
    "MAX_TRACEBACK_FRAMES",
    "ConsoleLine",
    "add_trace_ids",
    "configure_logging",
    "format_exception",
    "get_logger",
    "merge_contextvars",
    "redact_secrets",
    "register_secret",
    "scrub_secrets",
]

_SECRET_WORDS = ("password", "secret", "token", "api_key", "apikey", "authorization", "cookie")
REDACTED = "[redacted]"
MAX_TRACEBACK_FRAMES = 30
MAX_EXCEPTION_CHARS = 16_000

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]

_PATTERNS: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = [
    (re.compile(r"\b(nsk_[0-9a-f]{8}_)[A-Za-z0-9_-]+"), r"\1" + REDACTED),
    (re.compile(r"\bwhsec_[A-Za-z0-9_-]+"), "whsec_" + REDACTED),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"), "sk-" + REDACTED),
    (re.compile(r"(?i)\b(bearer|basic)(\s+|%20)[A-Za-z0-9._~+/=-]+"), r"\1\2" + REDACTED),
    (
        re.compile(
            r"(?i)\b(authorization|proxy-authorization|cookie|set-cookie|x-api-key)"
            r"(\\?['\"]?\s*[:=,]\s*(?-i:b)?\\?['\"]?)(?:[A-Za-z]+\s+)?[^\s'\",;\\]+"
        ),
        r"\1\2" + REDACTED,
    ),
]
_SECRET_ENV = re.compile(r"(?i)(api_?key|token|secret|password|passwd|credential)")
_registered: set[str] = set()
_env_secrets: tuple[str, ...] = ()


def register_secret(value: str) -> None:
    """Scrub ``value`` from every log line from now on (values shorter than 8 characters
    are ignored: they would redact ordinary words)."""
    if len(value) >= 8:
        _registered.add(value)


def _secrets_from_env() -> tuple[str, ...]:
    return tuple(
        sorted(
            (v for k, v in os.environ.items() if _SECRET_ENV.search(k) and len(v) >= 8),
            key=len,
            reverse=True,
        )
    )


_TRIGGERS: list[tuple[tuple[str, ...], bool]] = [
    (("nsk_",), False),
    (("whsec_",), False),
    (("sk-",), False),
    (("bearer", "basic"), True),
    (("authorization", "cookie", "x-api-key"), True),
]
"""Per pattern of ``_PATTERNS``: substrings that any of its matches contains, and whether they
are looked for case-insensitively. An ASCII line without them cannot match the pattern, so its
(costly) substitution is skipped; a non-ASCII line runs every substitution (Unicode case
folding is wider than ``str.lower``)."""


def scrub_secrets(text: str) -> str:
    """``text`` with every secret-shaped substring replaced (see the module rules)."""
    for value in (*_env_secrets, *_registered):
        if value in text:
            text = text.replace(value, REDACTED)
    if not text.isascii():
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text
    lowered = text.lower()
    for (pattern, replacement), (words, anycase) in zip(_PATTERNS, _TRIGGERS, strict=True):
        within = lowered if anycase else text
        for word in words:
            if word in within:
                text = pattern.sub(replacement, text)
                if anycase:
                    lowered = text.lower()
                break
    return text


def format_exception(exc_info: ExcInfo | BaseException) -> str:
    """A bounded, locals-free rendering of an exception and its chain (module rules)."""
    if isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    try:
        rendered = "".join(
            traceback.TracebackException(
                exc_info[0],
                exc_info[1],
                exc_info[2],
                limit=-MAX_TRACEBACK_FRAMES,
                capture_locals=False,
                max_group_width=5,
                max_group_depth=3,
            ).format()
        )
    except Exception as failure:  # a broken __str__ or a pathological chain
        rendered = f"{exc_info[0].__name__} (traceback not rendered: {type(failure).__name__})"
    if len(rendered) > MAX_EXCEPTION_CHARS:
        half = MAX_EXCEPTION_CHARS // 2
        cut = len(rendered) - 2 * half
        rendered = f"{rendered[:half]}\n[... {cut} characters cut ...]\n{rendered[-half:]}"
    return rendered.rstrip("\n")


def _console_exception(sio: Any, exc_info: ExcInfo) -> None:
    sio.write("\n" + format_exception(exc_info))


_NOTHING: Any = object()
_NEEDS_REPR = re.compile(r"[ \t=\r\n\"']")


class ConsoleLine:
    """structlog's ``ConsoleRenderer(colors=False)`` line, built in one pass.

    The line is the same, character for character: timestamp, ``[level    ]`` padded to the
    longest level name, the event padded to 30 characters, ``[logger]``, then ``key=value``
    sorted by key (a string as is unless it holds a space, tab, ``=``, line break or quote;
    other values as their ``repr``). ``ConsoleRenderer`` formats every column through a
    formatter object and a ``StringIO`` (about 180 function calls for an access log line);
    this builds the same line with one join. Lines with a stack or an exception are rare and
    go to ``ConsoleRenderer`` itself."""

    def __init__(self, exception_formatter: Callable[[Any, ExcInfo], None]) -> None:
        self._full = structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=exception_formatter
        )
        names = structlog.dev.ConsoleRenderer.get_default_level_styles(colors=False)
        width = len(max(names, key=len))
        self._levels = {name: f"[{name.ljust(width)}]" for name in names}
        self._width = width

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> str:
        level = event.get("level", "")
        if (
            "stack" in event
            or "exception" in event
            or "exc_info" in event
            or not isinstance(level, str)
        ):
            return str(self._full(logger, method, event))
        parts: list[str] = []
        value = event.pop("timestamp", _NOTHING)
        if value is not _NOTHING:
            parts.append(str(value))
        if "level" in event:
            del event["level"]
            parts.append(self._levels.get(level) or f"[{level.ljust(self._width)}]")
        value = event.pop("event", _NOTHING)
        if value is not _NOTHING:
            parts.append(str(value).ljust(30))
        for key in ("logger", "logger_name"):
            value = event.pop(key, _NOTHING)
            if value is not _NOTHING:
                parts.append("[" + str(value) + "]")
        for key in sorted(event):
            value = event[key]
            if not isinstance(value, str) or _NEEDS_REPR.search(value) is not None:
                value = repr(value)
            parts.append(f"{key}={value}")
        return " ".join([p for p in parts if p]).rstrip(" ")


class _Scrubbed:
    """The renderer, then ``scrub_secrets`` over the rendered line."""

    def __init__(self, renderer: Callable[..., Any]) -> None:
        self._renderer = renderer

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> str:
        return scrub_secrets(str(self._renderer(logger, method, event)))


class _ToStructlog(logging.Handler):
    """Standard-library log records, passed through structlog's pipeline."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            logger = structlog.get_logger(record.name)
            kw: dict[str, Any] = {}
            if record.exc_info and record.exc_info[0] is not None:
                kw["exc_info"] = record.exc_info
            logger.log(record.levelno, record.getMessage(), **kw)
        except Exception:
            self.handleError(record)


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


_CONTEXT_VARS: dict[str, Any] | None = getattr(structlog.contextvars, "_CONTEXT_VARS", None)
_PREFIX_LEN = len(structlog.contextvars.STRUCTLOG_KEY_PREFIX)


def merge_contextvars(
    logger: Any, method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A structlog processor: ``structlog.contextvars.merge_contextvars``, reading only the
    variables structlog made for bound keys instead of copying and walking the whole context
    (every library's variables: OpenTelemetry's, anyio's, ...) on every line."""
    if _CONTEXT_VARS is None:  # another structlog: its own, slower way
        return structlog.contextvars.merge_contextvars(logger, method, event)
    for name, var in list(_CONTEXT_VARS.items()):
        value = var.get(Ellipsis)
        if value is not Ellipsis:
            event.setdefault(name[_PREFIX_LEN:], value)
    return event


_render_exception = structlog.processors.ExceptionRenderer(format_exception)


def _exceptions(
    logger: Any, method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """``ExceptionRenderer(format_exception)``, called only for a line that carries
    ``exc_info`` (without it, it does nothing)."""
    if "exc_info" in event:
        return _render_exception(logger, method, event)
    return event


def redact_secrets(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A structlog processor: the value of any key naming a secret (password, secret, token,
    api_key, authorization, cookie; any case, as part of the key) becomes ``[redacted]``, so a
    secret passed to a log call by mistake never reaches the output."""
    for key in event:
        secret = _secret_keys.get(key)
        if secret is None:
            secret = _names_secret(key)
        if secret and event[key] is not None:
            event[key] = REDACTED
    return event


_secret_keys: dict[str, bool] = {}
"""Whether a key names a secret, per key seen (log calls use a small set of keys; a line per
request would otherwise test each key against every word again)."""
_SECRET_KEYS_MAX = 4096


def _names_secret(key: str) -> bool:
    lowered = key.lower()
    secret = any(word in lowered for word in _SECRET_WORDS)
    if len(_secret_keys) >= _SECRET_KEYS_MAX:
        _secret_keys.clear()  # keys made from data: never an unbounded cache
    _secret_keys[key] = secret
    return secret


_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


def configure_logging(
    level: str = "info", *, json: bool = False, capture_stdlib: bool = False
) -> None:
    """Configure structlog for the process: ``level`` (debug..critical) and JSON or console,
    on stderr (see the module rules: context, trace ids, secrets redacted and scrubbed,
    exceptions bounded and without locals). Until it is called, Netsuke logs only warnings and
    errors (on stderr). With ``capture_stdlib``, standard-library records at WARNING and above
    are rendered the same way.

    Raises ``ValueError`` for an unknown level."""
    global _env_secrets
    try:
        lvl = _LEVELS[level.lower()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r}; one of {sorted(_LEVELS)}") from None
    _env_secrets = _secrets_from_env()
    renderer: Any = structlog.processors.JSONRenderer() if json else ConsoleLine(_console_exception)
    structlog.configure(
        processors=[
            merge_contextvars,
            add_trace_ids,
            redact_secrets,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _exceptions,
            _Scrubbed(renderer),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _ToStructlog)]:
        root.removeHandler(handler)
    if capture_stdlib:
        root.addHandler(_ToStructlog(logging.WARNING))


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
