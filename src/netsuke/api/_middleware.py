"""One ASGI middleware around every HTTP request: ids, limits, metrics, traces, logs, audit.

In order, for each HTTP request:

1. **Request id**: the caller's ``X-Request-ID`` (if sane) or a new one; echoed in the
   response and bound (with the trace id) into structlog's context for every log line the
   request causes (``trace_id``/``span_id`` are added by the logging configuration).
2. **Body size**: a ``Content-Length`` above ``max_body_bytes`` is answered 413 before the
   body is read; a body without one is read up to the limit first.
3. **Trace**: an OpenTelemetry server span ``<METHOD> <route>``, continuing the caller's
   ``traceparent``, made current so lower layers' spans nest under it. Skipped entirely while
   no tracer provider is installed (the no-op default), which keeps the cost near zero.
4. **Metrics**: ``netsuke_api_requests_total{method,route,status}`` and
   ``netsuke_api_request_duration_seconds{method,route}``.
5. **Audit**: every mutating request (POST, PUT, PATCH, DELETE) under ``/api/`` by an
   authenticated caller gets an audit record (who, what, target, outcome, status) committed
   *before* its response starts, so a caller never sees an answer whose audit record is
   missing. Outcome: ``ok`` (2xx/3xx), ``denied`` (403), ``refused`` (other 4xx), ``error``
   (5xx). A route whose write has a hot path commits the record in that write's transaction
   (``request_audit`` then ``mark_audited``: a chat turn, a submitted task), so the record and
   the change exist together or not at all; for the others the middleware records it through
   the store's group commit. Requests without a valid key (401, or 429 from the per-address
   limit) change nothing and get no audit row: they are counted
   (``netsuke_api_auth_failures_total``) and logged at most once a second (see ``deps``).
6. **Access log**: one ``api.request`` line (method, route, status, duration, key prefix) per
   request that failed (4xx/5xx), was slow (``access_log_slow_ms``) or, of the others, a
   sampled share (``access_log_sample``, default every one). Query strings and headers are
   never logged (they may carry secrets).
"""

from __future__ import annotations

import random
import re
import time
import uuid
from typing import Any

import structlog
from opentelemetry import propagate, trace
from opentelemetry.trace import ProxyTracerProvider, SpanKind, Status, StatusCode
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from netsuke.observability import REGISTRY, get_logger, get_tracer
from netsuke.store import AuditValues, Store, audit_values

from ._problems import problem_response

__all__ = [
    "REQUESTS",
    "REQUEST_SECONDS",
    "ApiMiddleware",
    "mark_audited",
    "request_audit",
    "tracing_enabled",
]

log = get_logger("netsuke.api")
_tracer = get_tracer("netsuke.api")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})

REQUESTS = Counter(
    "netsuke_api_requests",
    "API requests by method, route template and status",
    ["method", "route", "status"],
    registry=REGISTRY,
)
REQUEST_SECONDS = Histogram(
    "netsuke_api_request_duration_seconds",
    "API request latency by method and route template",
    ["method", "route"],
    registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def tracing_enabled() -> bool:
    """Whether an OpenTelemetry SDK tracer provider is installed."""
    return not isinstance(trace.get_tracer_provider(), ProxyTracerProvider)


def route_template(scope: Scope) -> str | None:
    """The full template of the matched route (``/api/v1/agents/{agent_id}``), or ``None``.

    Routes of included routers know only their own part of the path, so the prefix is taken
    from the request path in front of the rendered route."""
    route = scope.get("route")
    fmt: str | None = getattr(route, "path_format", None) or getattr(route, "path", None)
    if not fmt:
        return None
    rendered = fmt
    for name, value in scope.get("path_params", {}).items():
        rendered = rendered.replace("{" + name + "}", str(value))
    path: str = scope["path"]
    return path[: len(path) - len(rendered)] + fmt if path.endswith(rendered) else fmt


def _outcome(status: int) -> str:
    if status < 400:
        return "ok"
    if status in (401, 403):
        return "denied"
    return "refused" if status < 500 else "error"


def _audit_row(scope: Scope, status: int) -> AuditValues:
    principal = scope["state"].get("principal")
    route = route_template(scope) or scope["path"]
    return audit_values(
        actor=principal.actor if principal is not None else "anonymous",
        action=f"{scope['method']} {route}"[:64],
        target=scope["path"][:300],
        outcome=_outcome(status),
        details={"status": status, "request_id": scope["state"].get("request_id")},
    )


def request_audit(scope: Scope, status: int) -> AuditValues:
    """The audit record of this request as answered ``status``, for a route that commits it
    in its own write's transaction; after that write committed, the route calls
    ``mark_audited`` and the middleware records nothing more."""
    return _audit_row(scope, status)


def mark_audited(scope: Scope) -> None:
    """The request's audit record was committed with the route's write."""
    scope["state"]["audited"] = True


class ApiMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        store: Store,
        max_body_bytes: int,
        access_log_sample: float = 1.0,
        access_log_slow_ms: float = 1000.0,
    ) -> None:
        self.app = app
        self.store = store
        self.max_body_bytes = max_body_bytes
        self.access_log_sample = access_log_sample
        self.slow_s = access_log_slow_ms / 1000.0
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def _observe(self, method: str, route: str, status: int, elapsed: float) -> None:
        """Count and time the request (label children cached: ``labels()`` costs more than
        ``inc``/``observe``)."""
        key = (method, route, status)
        pair = self._children.get(key)
        if pair is None:
            if len(self._children) > 5000:
                self._children.clear()
            pair = self._children[key] = (
                REQUESTS.labels(method, route, str(status)),
                REQUEST_SECONDS.labels(method, route),
            )
        pair[0].inc()
        pair[1].observe(elapsed)

    def _logged(self, status: int, elapsed: float) -> bool:
        """Whether this request gets an access log line (see the module documentation)."""
        if status >= 400 or elapsed >= self.slow_s:
            return True
        sample = self.access_log_sample
        return sample >= 1.0 or (sample > 0.0 and random.random() < sample)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        method: str = scope["method"]
        headers = dict(scope["headers"])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        id_header = (b"x-request-id", request_id.encode())
        status_box = [500]

        span = None
        token: Any = None
        if tracing_enabled():
            carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers.items()}
            span = _tracer.start_span(
                f"HTTP {method}", context=propagate.extract(carrier), kind=SpanKind.SERVER
            )
            span.set_attribute("http.request.method", method)
            span.set_attribute("http.request_id", request_id)
            token = trace.use_span(span, end_on_exit=False)
            token.__enter__()
        structlog.contextvars.bind_contextvars(request_id=request_id)

        audited = method in MUTATING and scope["path"].startswith("/api/")

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_box[0] = message["status"]
                message["headers"] = [*message.get("headers", []), id_header]
                state = scope["state"]
                if audited and state.get("principal") is not None and not state.get("audited"):
                    await self._audit(scope, message["status"])
            await send(message)

        try:
            length = headers.get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
                await self._too_large(scope, receive, send_wrapper, request_id)
            elif length is None and method in MUTATING:
                body = await self._read_limited(receive)
                if body is None:
                    await self._too_large(scope, receive, send_wrapper, request_id)
                else:
                    await self.app(scope, _replay(body, receive), send_wrapper)
            else:
                await self.app(scope, receive, send_wrapper)
        finally:
            status = status_box[0]
            route = route_template(scope) or "(unmatched)"
            elapsed = time.perf_counter() - started
            self._observe(method, route, status, elapsed)
            if self._logged(status, elapsed):
                principal = scope["state"].get("principal")
                log.info(
                    "api.request",
                    method=method,
                    route=route,
                    status=status,
                    duration_ms=round(elapsed * 1000, 3),
                    key_prefix=principal.prefix if principal is not None else None,
                )
            if span is not None:
                span.update_name(f"{method} {route}")
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                token.__exit__(None, None, None)
                span.end()
            structlog.contextvars.unbind_contextvars("request_id")

    async def _read_limited(self, receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send, rid: str) -> None:
        response = problem_response(
            413,
            "Content too large",
            f"request bodies are limited to {self.max_body_bytes} bytes",
            type="content-too-large",
            instance=scope["path"],
        )
        await response(scope, receive, send)

    async def _audit(self, scope: Scope, status: int) -> None:
        try:
            await self.store.audit.write((_audit_row(scope, status),))
        except Exception as exc:  # the answer still goes out; the failure is logged loudly
            log.error("api.audit_failed", error=repr(exc), path=scope["path"])


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
