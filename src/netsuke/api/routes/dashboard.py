"""The dashboard: server-rendered pages with small scripts, live over the events WebSocket.

* ``/login`` asks for an API key once; ``POST /dashboard/login`` checks it and sets the
  ``netsuke_key`` cookie (HttpOnly, SameSite=Strict), which the API accepts only for reads and
  the events socket. ``POST /dashboard/logout`` clears it.
* ``/`` shows the agents (and, once the agents layer is installed, their sessions), updated
  live from ``definition.*`` and ``agent.*`` events.
* The operations pages (tree, agents, tasks, dead letters, workflows, functions, keys,
  webhooks, audit) are in ``dashboard_ops``.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ConfigDict, Field

from .._auth import Principal
from .._problems import ProblemError
from ..deps import COOKIE, Ctx, authenticate, client_of

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=str(Path(__file__).parent.parent / "templates"))


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1, max_length=200)


async def _viewer(ctx: Ctx, request: Request) -> Principal | None:
    cookie = request.cookies.get(COOKIE)
    if not cookie:
        return None
    try:
        principal = await authenticate(ctx, None, cookie=cookie, client=client_of(request))
    except ProblemError:
        return None
    request.state.principal = principal
    return principal


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request) -> Response:
    return templates.TemplateResponse(request, "login.html", {"title": "Sign in"})


@router.post("/dashboard/login", status_code=204)
async def login(ctx: Ctx, request: Request, body: LoginRequest) -> Response:
    principal = await authenticate(ctx, body.key, client=client_of(request))
    request.state.principal = principal
    response = Response(status_code=204)
    response.set_cookie(
        COOKIE,
        body.key,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        max_age=12 * 3600,
    )
    return response


@router.post("/dashboard/logout", status_code=204)
async def logout() -> Response:
    response = Response(status_code=204)
    response.delete_cookie(COOKIE)
    return response


@router.get("/", response_class=HTMLResponse)
async def index(ctx: Ctx, request: Request) -> Response:
    viewer = await _viewer(ctx, request)
    if viewer is None:
        return RedirectResponse("/login", status_code=303)
    page = await ctx.store.agents.list(limit=500)
    return templates.TemplateResponse(
        request,
        "index.html",
        {
            "title": "Agents",
            "viewer": viewer,
            "agents": page.items,
            "sessions_enabled": "monitor" in ctx.extras,
            "sessions": [
                s
                for s in (ctx.extras["monitor"].sessions() if "monitor" in ctx.extras else [])
                if s.user is not None and viewer.may_act_for(s.user)
            ],
        },
    )
