"""Every JSON request body passes one check before its route runs (``check_json_body``).

Installed as an application-wide dependency by ``create_app``, so no route (tasks, functions'
arguments and schemas, agents' config, webhooks, session messages, keys) can receive a body
that cannot be stored and served back: a lone surrogate or nesting deeper than
``netsuke.store.MAX_JSON_DEPTH`` is refused and the route (a function execution included)
never runs. The body FastAPI has already parsed is reused, not parsed again.

A refused body is answered as the route would answer the caller first: without a valid key
401 (429 over its rate), else 422 problem+json naming the field; the audit record names the
key.
"""

from __future__ import annotations

from starlette.requests import HTTPConnection, Request

from netsuke.store import ValidationError, json_problem

from .deps import authenticate, get_ctx

__all__ = ["check_json_body"]

_WITH_BODY = frozenset({"POST", "PUT", "PATCH", "DELETE"})


async def check_json_body(connection: HTTPConnection) -> None:
    """Refuse a JSON body holding a lone surrogate or nesting too deep (``ValidationError``,
    answered 422, after the caller's key is checked). Bodies that are not JSON are left to
    their route."""
    if not isinstance(connection, Request) or connection.method not in _WITH_BODY:
        return
    content_type = connection.headers.get("content-type", "").lower()
    if content_type and "json" not in content_type:
        return
    try:
        body = await connection.json()
    except (ValueError, RecursionError):  # malformed or empty: the route answers that itself
        return
    problem = json_problem(body)
    if problem is None:
        return
    authorization = connection.headers.get("authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    secret = credentials.strip() if scheme.lower() == "bearer" else None
    principal = await authenticate(
        get_ctx(connection), secret or connection.headers.get("x-api-key")
    )
    connection.state.principal = principal
    raise ValidationError(*problem)
