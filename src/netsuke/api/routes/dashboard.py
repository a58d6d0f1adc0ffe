"""The dashboard: server-rendered pages with small scripts, live over the events WebSocket.

* ``/login`` asks for an API key once; ``POST /dashboard/login`` checks it and sets the
  ``netsuke_key`` cookie (HttpOnly, SameSite=Strict), which the API accepts for reads, the
  events socket, and mutations sent by the dashboard's scripts (``deps.cookie_allowed``).
  ``POST /dashboard/logout`` clears it.
* ``/`` shows the agents and the sessions, updated live from ``definition.*`` and ``agent.*``
  events.
* ``/sessions`` lists the sessions the node has seen, then the stored conversations it has
  not (``stopped``, e.g. from before the node started; a user: its own); ``/sessions/{id}``
  shows one: state, its conversation, its executions (duration, tokens, model, status, error,
  the delegation chain as a tree) and stop / cancel / restart buttons that call the API (the
  API's role checks apply; buttons the viewer may not use are disabled). The panel reloads
  (``/sessions/{id}/panel``, htmx) on the session's ``agent.*`` and ``turn.*`` events.
* ``/favicon.ico`` is the SVG icon (``static/favicon.svg``).
* The operations pages (tree, agents, tasks, dead letters, workflows, functions, keys,
  webhooks, audit) are in ``dashboard_ops``.

Pages share ``_pages.templates``; errors of page requests render ``error.html``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, Field

from netsuke.store import Execution, NotFoundError

from .._auth import Principal
from .._context import ApiContext
from .._pages import templates
from .._problems import ProblemError
from .._transcript import transcript
from ..deps import COOKIE, Ctx, authenticate, client_of
from .sessions import Session, SessionId, _view, checked

__all__ = ["router", "templates"]

router = APIRouter(include_in_schema=False)
_FAVICON = Path(__file__).parent.parent / "static" / "favicon.svg"
_HISTORY = 400  # the last messages of a conversation shown on the session page
_EXECUTIONS = 50  # the newest executions shown on the session page
_STORED = 200  # stored conversations listed on /sessions besides the sessions seen


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


@router.get("/favicon.ico")
async def favicon() -> Response:
    return FileResponse(_FAVICON, media_type="image/svg+xml")


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


def _sessions_seen(ctx: ApiContext, viewer: Principal) -> list[Any]:
    monitor = ctx.extras.get("monitor")
    if monitor is None:
        return []
    return [s for s in monitor.sessions() if s.user is not None and viewer.may_act_for(s.user)]


@dataclass
class StoredSession:
    """A session known only by its stored conversation (e.g. from before the node started)."""

    session: str
    agent: str
    user: str | None
    last_activity: Any
    messages: int
    state: str = "stopped"
    restarts: int = 0
    turns: str = "—"
    tokens_in: str = "—"
    tokens_out: str = "—"


async def _sessions_listed(ctx: ApiContext, viewer: Principal) -> list[Any]:
    """The sessions the monitor has seen, then stored conversations it has not (stopped)."""
    seen = _sessions_seen(ctx, viewer)
    known = {s.session for s in seen}
    mine = None if viewer.has("operator") else viewer.name
    stored = await ctx.store.conversations.list(user_id=mine, limit=_STORED)
    rows: list[Any] = list(seen)
    for conv in stored.items:
        if conv.session_id in known or conv.user_id is None:
            continue
        if not viewer.may_act_for(conv.user_id):
            continue
        rows.append(
            StoredSession(
                conv.session_id,
                conv.agent_name,
                conv.user_id,
                conv.updated_at,
                conv.message_count,
            )
        )
    return rows


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
            "title": "Overview",
            "viewer": viewer,
            "agents": page.items,
            "sessions_enabled": "monitor" in ctx.extras,
            "sessions": _sessions_seen(ctx, viewer)[:20],
        },
    )


@router.get("/sessions", response_class=HTMLResponse)
async def sessions_page(ctx: Ctx, request: Request) -> Response:
    viewer = await _viewer(ctx, request)
    if viewer is None:
        return RedirectResponse("/login", status_code=303)
    return templates.TemplateResponse(
        request,
        "sessions.html",
        {
            "title": "Sessions",
            "viewer": viewer,
            "sessions_enabled": "monitor" in ctx.extras,
            "sessions": await _sessions_listed(ctx, viewer),
        },
    )


@dataclass
class ExecutionNode:
    """An execution and the executions it caused (delegations, tool calls), for the tree."""

    execution: Execution
    model: str | None = None
    children: list[ExecutionNode] = field(default_factory=list)


async def _execution_tree(ctx: ApiContext, session_id: str, agent: str | None) -> list[Any]:
    """The session's newest executions as trees: each root with the chain below it."""
    listed = (await ctx.store.executions.list(session_id=session_id, limit=_EXECUTIONS)).items
    models: dict[tuple[str, int], str] = {}

    async def model_of(ex: Execution) -> str | None:
        version = ex.details.get("version") if isinstance(ex.details, dict) else None
        name = ex.agent_name
        if name is None:
            return None
        if not isinstance(version, int):
            with contextlib.suppress(NotFoundError):
                return (await ctx.store.agents.get(name)).model
            return None
        if (name, version) not in models:
            with contextlib.suppress(NotFoundError):
                for v in await ctx.store.agents.versions(name):
                    models[(name, v.version)] = v.model
        return models.get((name, version))

    ids = {ex.id for ex in listed}
    shown: set[str] = set()
    roots: list[ExecutionNode] = []
    for ex in listed:
        if ex.id in shown or (ex.parent_id is not None and ex.parent_id in ids):
            continue
        try:
            chain = await ctx.store.executions.chain(ex.id)
        except NotFoundError:
            chain = [ex]
        nodes: dict[str, ExecutionNode] = {}
        for step in chain:
            node = ExecutionNode(step, await model_of(step))
            nodes[step.id] = node
            shown.add(step.id)
            parent = nodes.get(step.parent_id) if step.parent_id is not None else None
            if parent is not None:
                parent.children.append(node)
        roots.append(nodes[ex.id])
    return roots


async def _session_context(ctx: ApiContext, viewer: Principal, session_id: str) -> dict[str, Any]:
    agent, user, running = await checked(ctx, viewer, session_id)  # 404 when not visible
    view: Session = await _view(ctx, session_id, agent, user, running)
    policy = "stop"
    if agent is not None:
        with contextlib.suppress(NotFoundError):
            policy = (await ctx.store.agents.get(agent)).config.get("owner_policy", "stop")
    return {
        "title": f"Session {session_id}",
        "viewer": viewer,
        "session": view,
        "owner_policy": policy,
        "running": running,
        "may_act": viewer.may_act_for(user),
        "operator": viewer.has("operator"),
        "executions": await _execution_tree(ctx, session_id, agent),
    }


@router.get("/sessions/{session_id}", response_class=HTMLResponse)
async def session_page(ctx: Ctx, request: Request, session_id: SessionId) -> Response:
    viewer = await _viewer(ctx, request)
    if viewer is None:
        return RedirectResponse("/login", status_code=303)
    context = await _session_context(ctx, viewer, session_id)
    try:
        messages = await ctx.store.conversations.history(session_id, limit=_HISTORY)
    except NotFoundError:
        messages = []
    context["items"] = transcript(messages)
    return templates.TemplateResponse(request, "session.html", context)


@router.get("/sessions/{session_id}/panel", response_class=HTMLResponse)
async def session_panel(ctx: Ctx, request: Request, session_id: SessionId) -> Response:
    """The session page's state and executions (reloaded by htmx on the session's events)."""
    viewer = await _viewer(ctx, request)
    if viewer is None:
        raise ProblemError(401, "Unauthorized", "sign in again")
    context = await _session_context(ctx, viewer, session_id)
    return templates.TemplateResponse(request, "_session_panel.html", context)
