"""What every dashboard page shares: the Jinja2 templates (with the ``iso`` filter and the
``_macros.html`` helpers) and the HTML error page.

Times are rendered as ``<time datetime="ISO">`` (UTC text as a fallback); ``dashboard.js``
shows them in the browser's local time zone, so no page ever shows epoch seconds.

``error_page`` answers a failed browser request (a ``GET`` of a dashboard page that accepts
``text/html``) with ``error.html`` in the base layout, keeping the status code; the JSON API,
``/static`` and the dashboard's own ``POST`` endpoints keep answering problem+json (see
``_problems.install_problem_handlers``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi.templating import Jinja2Templates
from starlette.requests import Request
from starlette.responses import Response

__all__ = ["error_page", "html_error", "templates", "to_iso", "wants_html"]

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))

_NOT_PAGES = ("/api/", "/static/", "/dashboard/", "/healthz", "/readyz", "/metrics")


def _as_datetime(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(float(value), UTC)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return None


def to_iso(value: Any) -> str:
    """A datetime (naive = UTC) or epoch seconds as an ISO 8601 string in UTC ("" for none)."""
    dt = _as_datetime(value)
    return "" if dt is None else dt.astimezone(UTC).isoformat(timespec="seconds")


def _utc_text(value: Any) -> str:
    dt = _as_datetime(value)
    return "" if dt is None else dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


templates.env.filters["iso"] = to_iso
templates.env.filters["utc_text"] = _utc_text


def wants_html(request: Request) -> bool:
    """Whether a failed ``request`` came from a browser opening a dashboard page."""
    if request.method not in ("GET", "HEAD"):
        return False
    if request.url.path.startswith(_NOT_PAGES):
        return False
    return "text/html" in request.headers.get("accept", "")


def error_page(
    request: Request,
    status: int,
    title: str,
    detail: str | None,
    headers: dict[str, str] | None = None,
) -> Response:
    """The HTML error page for ``status`` (the base layout, the signed-in viewer if known)."""
    hints = {
        401: "Sign in again.",
        403: "Your key's role does not allow this page.",
        404: "Nothing here: the link may be old, or the thing was deleted.",
        429: "Too many requests: wait a moment, then reload.",
        500: "The server failed. The error is in its log under this page's request id.",
        503: "The server cannot answer now; retry in a moment.",
    }
    keep = {k: v for k, v in (headers or {}).items() if k.lower() not in ("content-type",)}
    response = templates.TemplateResponse(
        request,
        "error.html",
        {
            "title": f"{status} {title}",
            "viewer": getattr(request.state, "principal", None),
            "live": False,  # no live updates on an error page
            "status": status,
            "heading": title,
            "detail": detail,
            "hint": hints.get(status, ""),
            "request_id": getattr(request.state, "request_id", None),
        },
        status_code=status,
        headers=keep,
    )
    return response


def html_error(request: Request, problem: Response) -> Response | None:
    """``problem`` (a problem+json response) as an error page when ``request`` is a browser's
    page request, else None (the problem is answered as it is)."""
    if not wants_html(request):
        return None
    try:
        body = json.loads(bytes(problem.body))
    except ValueError:
        body = {}
    drop = ("content-length", "content-type")
    headers = {k: v for k, v in problem.headers.items() if k.lower() not in drop}
    return error_page(
        request,
        problem.status_code,
        str(body.get("title") or "Error"),
        body.get("detail") if isinstance(body.get("detail"), str) else None,
        headers,
    )
