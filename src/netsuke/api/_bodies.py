"""Every JSON request body passes one check before its route runs (``check_json_body``).

Installed as an application-wide dependency by ``create_app``, so no route (tasks, functions'
arguments and schemas, agents' config, webhooks, session messages, keys, the dashboard's
forms) can receive a body that cannot be stored and served back: a lone surrogate or nesting
deeper than ``netsuke.store.MAX_JSON_DEPTH`` is a 422 problem+json naming the field
(``payload.x``), and the route (a function execution included) never runs. The body FastAPI
has already parsed is reused, not parsed again.
"""

from __future__ import annotations

from starlette.requests import HTTPConnection, Request

from netsuke.store import check_json

__all__ = ["check_json_body"]

_WITH_BODY = frozenset({"POST", "PUT", "PATCH", "DELETE"})


async def check_json_body(connection: HTTPConnection) -> None:
    """Refuse (``ValidationError`` → 422) a JSON body holding a lone surrogate or nesting
    too deep. Bodies that are not JSON are left to their route."""
    if not isinstance(connection, Request) or connection.method not in _WITH_BODY:
        return
    content_type = connection.headers.get("content-type", "").lower()
    if content_type and "json" not in content_type:
        return
    try:
        body = await connection.json()
    except (ValueError, RecursionError):  # malformed or empty: the route answers that itself
        return
    check_json(body)
