"""The chat route's handler: FastAPI's, with its common case solved directly.

``POST /api/v1/sessions/{id}/messages`` is the API's hot path. FastAPI solves a route's
parameters generically on every request: each dependency (the app-wide body check, the key
check and its bearer scheme) is solved with its own path, query, header and cookie parameter
passes, a cache key and a classification of its callable, and the body's content type is parsed
with ``email.message``: about 300 function calls per request before the route runs
(``benchmarks/api_cost.py``).

``ChatRoute`` keeps FastAPI's handler and puts in front of it the request FastAPI would solve
without an error: no query string, ``Content-Type: application/json``, a session id matching
the route's pattern, a body that is JSON and a valid ``MessageRequest``, no dependency
overrides. For it, the handler calls the same dependencies in FastAPI's order (``check_json_body``,
the bearer scheme, ``get_caller``: their answers, 401, 429 or 422, are raised as FastAPI would
raise them) and the route with the same arguments. Every other request goes to FastAPI's
handler unchanged, before anything with an effect ran (a key check takes from the key's rate
bucket), so a refused request gets FastAPI's own answer.

The shortcut is installed only when FastAPI built the route with exactly these dependencies
(checked when the handler is built; ``ChatRoute.fast_handlers`` counts the handlers built with
it, ``served_fast`` the requests served by it).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import routing as fastapi_routing
from fastapi.routing import APIRoute
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError
from starlette.requests import Request
from starlette.responses import Response

from ._bodies import check_json_body
from .deps import _bearer, get_caller

__all__ = ["ChatRoute"]

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class ChatRoute(APIRoute):
    """An ``APIRoute`` for the chat endpoint (see the module documentation). The route's
    endpoint takes ``caller``, ``request``, ``session_id``, ``body``, ``stream`` and
    ``idempotency_key``, its body model is the ``body_model`` class attribute and its session
    id pattern ``session_pattern``."""

    body_model: type[BaseModel]
    session_pattern: str
    fast_handlers = 0
    served_fast = 0

    def get_route_handler(self) -> Handler:
        full = super().get_route_handler()
        if not self._solved_as_expected():
            return full
        ChatRoute.fast_handlers += 1
        endpoint = self.endpoint
        model = self.body_model
        session_id_ok = re.compile(self.session_pattern.removeprefix("^").removesuffix("$"))

        async def handler(request: Request) -> Response:
            scope = request.scope
            session_id = scope.get("path_params", {}).get("session_id")
            if (
                scope.get("query_string")
                or request.headers.get("content-type") != "application/json"
                or not isinstance(session_id, str)
                or session_id_ok.fullmatch(session_id) is None
                or request.app.dependency_overrides
            ):
                return await full(request)
            try:
                body = model.model_validate(await request.json())
            except (ValueError, PydanticValidationError):  # FastAPI answers it (422)
                return await full(request)
            # FastAPI's order: the app's dependency, then the route's (the bearer scheme
            # within the key check); each raises what it raises under FastAPI
            await check_json_body(request)
            caller = await get_caller(request, await _bearer(request))
            ChatRoute.served_fast += 1
            response: Response = await endpoint(
                caller=caller,
                request=request,
                session_id=session_id,
                body=body,
                stream=None,
                idempotency_key=request.headers.get("idempotency-key"),
            )
            return response

        return handler

    def _solved_as_expected(self) -> bool:
        """Whether FastAPI builds this handler with the dependencies ``handler`` calls: the
        app's ``check_json_body``, then ``get_caller`` (with the bearer scheme), and the
        parameters it passes."""
        route: Any = self
        var = getattr(fastapi_routing, "_effective_route_context_var", None)
        context = var.get() if var is not None else None
        if context is not None and getattr(context, "original_route", None) is self:
            route = context  # the route as included into the app (the app's dependencies)
        dependant = getattr(route, "dependant", None)
        if dependant is None:
            return False
        calls = [d.call for d in dependant.dependencies]
        if calls != [check_json_body, get_caller]:
            return False
        caller = dependant.dependencies[1]
        if [d.call for d in caller.dependencies] != [_bearer] or caller.name != "caller":
            return False
        names = {
            "path": [p.name for p in dependant.path_params],
            "query": [p.name for p in dependant.query_params],
            "header": [p.name for p in dependant.header_params],
            "cookie": [p.name for p in dependant.cookie_params],
            "body": [p.name for p in dependant.body_params],
        }
        return (
            names
            == {
                "path": ["session_id"],
                "query": ["stream"],
                "header": ["idempotency_key"],
                "cookie": [],
                "body": ["body"],
            }
            and dependant.request_param_name == "request"
        )
