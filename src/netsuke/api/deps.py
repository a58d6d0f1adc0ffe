"""``Annotated`` dependency aliases for the routes: the context, the caller, roles, paging.

::

    @router.get("/things")
    async def things(ctx: Ctx, caller: Caller, page: Paging) -> ...

* ``Caller``: the authenticated principal (401 without a valid key; 429 over its rate).
* ``Operator`` / ``Admin``: the same, requiring at least that role (403 otherwise).
* ``Paging``: ``limit`` (1..1000, default 50) and ``cursor`` from the query string.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from netsuke.store import Role, Store

from ._auth import Principal
from ._context import ApiContext
from ._problems import ProblemError

__all__ = [
    "COOKIE",
    "Admin",
    "Caller",
    "Ctx",
    "Operator",
    "Paging",
    "StoreDep",
    "authenticate",
    "client_of",
    "cookie_allowed",
    "get_ctx",
    "require",
]

COOKIE = "netsuke_key"
SAFE_METHODS = frozenset({"GET", "HEAD"})
# The header the dashboard's scripts send with a mutation (see ``cookie_allowed``).
DASHBOARD_HEADER = "x-netsuke-dashboard"
_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer nsk_...`")


def get_ctx(request: HTTPConnection) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


# The dependencies are coroutines: FastAPI runs a plain ``def`` dependency in its thread pool,
# a thread hop per request for a field lookup.
async def _ctx(request: HTTPConnection) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


Ctx = Annotated[ApiContext, Depends(_ctx)]


async def get_store(ctx: Ctx) -> Store:
    return ctx.store


StoreDep = Annotated[Store, Depends(get_store)]


def client_of(connection: HTTPConnection) -> str | None:
    """The caller's address (the peer of the connection; a proxy in front counts as one)."""
    client = connection.client
    return client.host if client is not None else None


def _unauthenticated(ctx: ApiContext, reason: str, client: str | None) -> ProblemError:
    """401 for a failed authentication, or 429 once ``client`` failed too often (see
    ``_auth``); counted and sampled into the log either way."""
    wait = ctx.anonymous.take(client) if client is not None else 0.0
    if wait > 0:
        ctx.auth_failures.failed("limited", client)
        return ProblemError(
            429,
            "Too many requests",
            "too many requests without a valid API key from this address",
            type="rate-limited",
            headers={"Retry-After": ctx.anonymous.retry_after(wait)},
        )
    ctx.auth_failures.failed(reason, client)
    if reason == "missing":
        return ProblemError(
            401,
            "Unauthorized",
            "send an API key: Authorization: Bearer nsk_...",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return ProblemError(
        401,
        "Unauthorized",
        "the API key is unknown or revoked",
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


async def authenticate(
    ctx: ApiContext,
    secret: str | None,
    *,
    cookie: str | None = None,
    client: str | None = None,
) -> Principal:
    """The principal for ``secret`` (or, if none, ``cookie``), rate limited. Raises 401/429;
    a failure from ``client`` (an address) takes from that address's bucket."""
    key = secret or cookie
    if not key:
        raise _unauthenticated(ctx, "missing", client)
    principal = await ctx.keys.verify(key)
    if principal is None:
        raise _unauthenticated(ctx, "invalid", client)
    wait = ctx.limiter.take(principal.prefix)
    if wait > 0:
        raise ProblemError(
            429,
            "Too many requests",
            f"rate limit of {ctx.limiter.per_minute} requests per minute for this key",
            type="rate-limited",
            headers={"Retry-After": ctx.limiter.retry_after(wait)},
        )
    return principal


def cookie_allowed(request: Request) -> bool:
    """Whether ``request`` may authenticate with the key cookie: any ``GET``/``HEAD``, and a
    mutation only from the dashboard's own scripts: it carries ``X-Netsuke-Dashboard: 1`` (a
    form on another site cannot set a header, and a script elsewhere would need a CORS
    preflight this server never grants) and an ``Origin`` naming this server."""
    if request.method in SAFE_METHODS:
        return True
    if request.headers.get(DASHBOARD_HEADER) != "1":
        return False
    origin = request.headers.get("origin")
    return origin is not None and urlsplit(origin).netloc == request.headers.get("host")


async def get_caller(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    # the context is read here, not declared as a ``Ctx`` dependency: FastAPI solves a
    # sub-dependency's own tree on every use before looking in its cache (about 50 calls)
    secret = bearer.credentials if bearer is not None else request.headers.get("x-api-key")
    cookie = request.cookies.get(COOKIE) if cookie_allowed(request) else None
    principal = await authenticate(
        get_ctx(request), secret, cookie=cookie, client=client_of(request)
    )
    request.state.principal = principal
    return principal


Caller = Annotated[Principal, Depends(get_caller)]


def require(role: Role) -> object:
    """A dependency admitting callers with at least ``role`` (403 otherwise)."""

    async def check(caller: Caller) -> Principal:
        if not caller.has(role):
            raise ProblemError(
                403, "Forbidden", f"this needs the {role} role; the key has {caller.role}"
            )
        return caller

    return Depends(check)


Operator = Annotated[Principal, require("operator")]
Admin = Annotated[Principal, require("admin")]


@dataclass(frozen=True)
class PageParams:
    limit: int
    cursor: str | None


async def get_paging(
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size.")] = 50,
    cursor: Annotated[
        str | None,
        Query(max_length=200, description="`next_cursor` of the previous page."),
    ] = None,
) -> PageParams:
    return PageParams(limit=limit, cursor=cursor)


Paging = Annotated[PageParams, Depends(get_paging)]
