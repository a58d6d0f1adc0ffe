"""RFC 9457 problem details: every error the API returns is ``application/problem+json``.

```
ProblemError(status, title, detail, type, extensions)   raised by routes and dependencies
```

Mapping of lower layers' errors (``install_problem_handlers``):

| raised | status | type |
|---|---|---|
| request body/query/path not valid (pydantic) | 422 | ``validation`` (``errors``: field, reason) |
| ``store.ValidationError(field, reason)`` | 422 | ``validation`` |
| ``store.NotFoundError`` | 404 | ``not-found`` |
| ``store.AlreadyExistsError`` | 409 | ``already-exists`` (``current_version``) |
| ``store.ConflictError`` | 412 | ``version-mismatch`` (``current_version``) |
| an HTTP error from routing (404, 405) | same | ``http`` |
| the store cannot take writes now (locked, full, read-only, I/O) | 503 | ``store-unavailable`` |
| anything else | 500 | ``internal`` (no detail: the log has it, with the request id) |

A ``store-unavailable`` problem carries ``reason`` (``store.unavailable_reason``) and
``Retry-After`` (1 s when locked, else 30 s); nothing was changed by the request.

Input values are never echoed back (they may hold secrets), only field paths and reasons.

A browser opening a dashboard page gets the same status as an HTML page instead (the ``html``
hook of ``install_problem_handlers``: ``_pages.html_error``); the API never does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from netsuke.observability import get_logger
from netsuke.store import (
    AlreadyExistsError,
    ConflictError,
    NotFoundError,
    ValidationError,
    unavailable_reason,
)

__all__ = [
    "PROBLEM_JSON",
    "ProblemError",
    "install_problem_handlers",
    "problem_body",
    "problem_response",
    "store_unavailable",
]

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://netsuke.dev/problems/"
log = get_logger("netsuke.api")


class ProblemError(Exception):
    """An error answered as problem+json. ``headers`` are added to the response."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str | None = None,
        *,
        type: str | None = None,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        self.status = status
        self.title = title
        self.detail = detail
        self.type = type or _slug(title)
        self.headers = headers or {}
        self.extensions = extensions
        super().__init__(f"{status} {title}: {detail}")


def _slug(title: str) -> str:
    return "-".join(title.lower().split())


def problem_body(exc: ProblemError, instance: str | None = None) -> dict[str, Any]:
    """The problem+json document of ``exc`` (for answers that are not plain responses, such
    as an ``error`` event of a Server-Sent Events stream)."""
    body: dict[str, Any] = {
        "type": TYPE_BASE + exc.type,
        "title": exc.title,
        "status": exc.status,
    }
    if exc.detail:
        body["detail"] = exc.detail
    if instance:
        body["instance"] = instance
    body.update(exc.extensions)
    return body


def problem_response(
    status: int,
    title: str,
    detail: str | None = None,
    *,
    type: str = "about:blank",
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": type if type == "about:blank" else TYPE_BASE + type,
        "title": title,
        "status": status,
    }
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    body.update(extensions)
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def store_unavailable(reason: str) -> ProblemError:
    """503 for a store that cannot take writes now (``reason``: ``unavailable_reason``):
    nothing was changed, the caller may retry after ``Retry-After`` seconds."""
    return ProblemError(
        503,
        "Store unavailable",
        f"the store cannot take writes now ({reason}); nothing was changed, retry later",
        type="store-unavailable",
        headers={"Retry-After": "1" if reason == "locked" else "30"},
        reason=reason,
    )


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    out = ""
    for part in parts:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out or "(root)"


def install_problem_handlers(
    app: FastAPI, html: Callable[[Request, Response], Response | None] | None = None
) -> None:
    """Answer every error raised in ``app`` as problem+json (see the module table). ``html``
    may answer a browser's page request instead (an HTML error page), returning None for
    every other request."""

    def instance(request: Request) -> str:
        return request.url.path

    def answer(request: Request, problem: JSONResponse) -> Response:
        page = html(request, problem) if html is not None else None
        return page if page is not None else problem

    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError) -> Response:
        return answer(
            request,
            problem_response(
                exc.status,
                exc.title,
                exc.detail,
                type=exc.type,
                instance=instance(request),
                headers=exc.headers,
                **exc.extensions,
            ),
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = [{"field": _field(tuple(e["loc"])), "reason": e["msg"]} for e in exc.errors()]
        return answer(
            request,
            problem_response(
                422,
                "Validation failed",
                "; ".join(f"{e['field']}: {e['reason']}" for e in errors[:5]),
                type="validation",
                instance=instance(request),
                errors=errors,
            ),
        )

    @app.exception_handler(ValidationError)
    async def _store_invalid(request: Request, exc: ValidationError) -> Response:
        return answer(
            request,
            problem_response(
                422,
                "Validation failed",
                f"{exc.field}: {exc.reason}",
                type="validation",
                instance=instance(request),
                errors=[{"field": exc.field, "reason": exc.reason}],
            ),
        )

    @app.exception_handler(NotFoundError)
    async def _not_found(request: Request, exc: NotFoundError) -> Response:
        return answer(
            request,
            problem_response(
                404, "Not found", str(exc), type="not-found", instance=instance(request)
            ),
        )

    @app.exception_handler(ConflictError)
    async def _conflict(request: Request, exc: ConflictError) -> Response:
        if isinstance(exc, AlreadyExistsError):
            return answer(
                request,
                problem_response(
                    409,
                    "Already exists",
                    str(exc),
                    type="already-exists",
                    instance=instance(request),
                    current_version=exc.current_version,
                ),
            )
        return answer(
            request,
            problem_response(
                412,
                "Version mismatch",
                str(exc),
                type="version-mismatch",
                instance=instance(request),
                current_version=exc.current_version,
                headers={"ETag": f'"{exc.current_version}"'},
            ),
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        return answer(
            request,
            problem_response(
                exc.status_code,
                _TITLES.get(exc.status_code, "HTTP error"),
                str(exc.detail) if exc.detail else None,
                type="http",
                instance=instance(request),
                headers=dict(exc.headers or {}),
            ),
        )

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> Response:
        reason = unavailable_reason(exc)
        if reason is not None:
            log.warning(
                "api.store_unavailable",
                path=request.url.path,
                reason=reason,
                error_type=type(exc).__name__,
            )
            return await _problem(request, store_unavailable(reason))
        log.error(
            "api.internal_error",
            path=request.url.path,
            error_type=type(exc).__name__,
            exc_info=exc,
        )
        return answer(
            request,
            problem_response(
                500,
                "Internal server error",
                "the request failed; the server log has the details under this request id",
                type="internal",
                instance=instance(request),
                request_id=request.headers.get("x-request-id")
                or getattr(request.state, "request_id", None),
            ),
        )


_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable",
    413: "Content too large",
    415: "Unsupported media type",
}
