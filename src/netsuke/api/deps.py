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
    "get_ctx",
    "require",
]

COOKIE = "netsuke_key"
SAFE_METHODS = frozenset({"GET", "HEAD"})
_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer nsk_...`")


def get_ctx(request: HTTPConnection) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


Ctx = Annotated[ApiContext, Depends(get_ctx)]


def get_store(ctx: Ctx) -> Store:
    return ctx.store


StoreDep = Annotated[Store, Depends(get_store)]


async def authenticate(
    ctx: ApiContext, secret: str | None, *, cookie: str | None = None
) -> Principal:
    """The principal for ``secret`` (or, if none, ``cookie``), rate limited. Raises 401/429."""
    key = secret or cookie
    if not key:
        raise ProblemError(
            401,
            "Unauthorized",
            "send an API key: Authorization: Bearer nsk_...",
            headers={"WWW-Authenticate": "Bearer"},
        )
    principal = await ctx.keys.verify(key)
    if principal is None:
        raise ProblemError(
            401,
            "Unauthorized",
            "the API key is unknown or revoked",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
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


async def get_caller(
    request: Request,
    ctx: Ctx,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    secret = bearer.credentials if bearer is not None else request.headers.get("x-api-key")
    cookie = request.cookies.get(COOKIE) if request.method in SAFE_METHODS else None
    principal = await authenticate(ctx, secret, cookie=cookie)
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


def get_paging(
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size.")] = 50,
    cursor: Annotated[
        str | None,
        Query(max_length=200, description="`next_cursor` of the previous page."),
    ] = None,
) -> PageParams:
    return PageParams(limit=limit, cursor=cursor)


Paging = Annotated[PageParams, Depends(get_paging)]
