"""The dashboard: server-rendered pages with small scripts, live over the events WebSocket.

* ``/login`` asks for an API key once; ``POST /dashboard/login`` checks it and sets the
  ``netsuke_key`` cookie (HttpOnly, SameSite=Strict), which the API accepts only for reads and
  the events socket. ``POST /dashboard/logout`` clears it.
* ``/tasks`` shows the task queue (a user: its own tasks) and, for operators, the dead
  letters, updated live from ``task.*`` events.
* ``/`` shows the agents (and, once the agents layer is installed, their sessions), updated
  live from ``definition.*`` and ``agent.*`` events; ``/agents/{name}`` shows a definition as
  YAML and its versions, reloading when it changes.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ConfigDict, Field

from netsuke.store import dump_agent_yaml

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


@router.get("/agents/{name}", response_class=HTMLResponse)
async def agent_page(
    ctx: Ctx,
    request: Request,
    name: Annotated[str, PathParam(pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")],
) -> Response:
    viewer = await _viewer(ctx, request)
    if viewer is None:
        return RedirectResponse("/login", status_code=303)
    definition = await ctx.store.agents.get(name)
    versions = await ctx.store.agents.versions(name)
    monitor = ctx.extras.get("monitor")
    operator = viewer.has("operator") and monitor is not None
    sessions = len(
        ctx.runtime.registry.match(
            where=lambda m: type(m) is dict and m.get("agent") == name and m.get("user") is not None
        )
    )
    return templates.TemplateResponse(
        request,
        "agent.html",
        {
            "title": name,
            "viewer": viewer,
            "agent": definition,
            "yaml": dump_agent_yaml(definition),
            "versions": list(reversed(versions)),
            # metrics and logs need the operator role, as in the API
            "metrics": monitor.metrics(name) if operator and monitor else None,
            "logs": list(reversed(monitor.logs(name, 50))) if operator and monitor else [],
            "sessions": sessions,
        },
    )


@router.get("/tasks", response_class=HTMLResponse)
async def tasks_page(ctx: Ctx, request: Request) -> Response:
    viewer = await _viewer(ctx, request)
    if viewer is None:
        return RedirectResponse("/login", status_code=303)
    queue = ctx.extras.get("tasks")
    tasks: list[Any] = []
    dead: list[Any] = []
    operator = viewer.has("operator")
    if queue is not None:
        if operator:
            tasks = list((await queue.list(limit=100)).items)
            dead = list((await queue.dead_letters(limit=100)).items)
        else:  # a user: its own submissions (see routes/tasks.py)
            entries = await ctx.store.audit.list(
                actor=viewer.owner_id, action="task.submit", limit=100
            )
            for entry in entries.items:
                with contextlib.suppress(Exception):
                    tasks.append(await queue.get(entry.target.removeprefix("task:")))
    hosting = ctx.extras.get("hosting")  # why a queued task waits, when nothing here takes it
    waiting = {t.id: hosting.detail(t) for t in tasks} if hosting is not None else {}
    return templates.TemplateResponse(
        request,
        "tasks.html",
        {
            "title": "Tasks",
            "viewer": viewer,
            "tasks": tasks,
            "dead": dead,
            "operator": operator,
            "waiting": waiting,
        },
    )
