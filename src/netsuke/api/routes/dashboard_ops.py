"""The dashboard's operations pages (issue 20: tree, agents, tasks, admin pages).

Every page needs the sign-in cookie (``/login`` otherwise) and the role its API needs; a
signed-in caller without it gets a 403 page and no data. Pages render on the server and are
kept live by ``static/ops.js`` over ``/api/v1/events``.

* ``/tree`` (operator): the supervision tree (``GET /api/v1/tree``), re-read on each
  ``agent.*``, ``process.restarted`` and ``supervisor.gave_up`` event.
* ``/agents`` (any key): definitions; ``/agents/new`` and ``/agents/{name}/edit`` (operator):
  a form and a YAML editor, checked as you type by ``POST /api/v1/agent-drafts/check``;
  ``/agents/{name}``: definition, versions with a diff and rollback, metrics over time
  (``/api/v1/agents/{name}/series``, uPlot) and logs followed live (operator).
* ``/tasks`` (any key; a user sees its own), ``/tasks/{id}``, ``/dead-letters`` (operator,
  requeue and purge), ``/workflows`` (operator: workflows and runs).
* ``/functions`` (any key: a user sees its own), ``/keys``, ``/webhooks``, ``/audit`` (admin).
* ``/cluster`` (operator): the members (``GET /api/v1/cluster/nodes``), their load, where each
  session runs (``GET /api/v1/cluster/sessions``) and node events followed live (``cluster.*``);
  a node alone says so and still shows itself.

**Actions.** The pages' buttons call the API itself (``/api/v1/...``) with the key cookie,
``X-Netsuke-Dashboard: 1`` and this server's ``Origin``, the only way the API takes the cookie
for a write (``deps.cookie_allowed``: no CSRF); the API's roles, validation, audit and problem
documents apply unchanged.
"""

from __future__ import annotations

import contextlib
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse

from netsuke.routing import TaskNotFoundError
from netsuke.store import AgentDraft, NotFoundError, Role, dump_agent_yaml

from .._auth import Principal
from .._cluster_view import nodes_view, sessions_view
from .._tree import supervision_tree
from ..deps import Ctx
from .dashboard import _viewer, templates
from .functions import owner as function_owner
from .tasks import checked as task_checked

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

AgentName = Annotated[str, PathParam(pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")]
TaskIdParam = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9_.:-]{1,100}$")]


async def _page(
    request: Request,
    viewer: Principal | None,
    template: str,
    role: Role,
    title: str,
    **context: Any,
) -> Response:
    """``template`` for ``viewer`` if it has ``role``; /login when signed out, else 403."""
    if viewer is None:
        return RedirectResponse("/login", status_code=303)
    if not viewer.has(role):
        return templates.TemplateResponse(
            request,
            "ops_denied.html",
            {"title": title, "viewer": viewer, "role": role},
            status_code=403,
        )
    return templates.TemplateResponse(
        request, template, {"title": title, "viewer": viewer, **context}
    )


def _may(viewer: Principal | None, role: Role) -> bool:
    return viewer is not None and viewer.has(role)


# ------------------------------------------------------------------ tree


@router.get("/tree", response_class=HTMLResponse)
async def tree_page(ctx: Ctx, request: Request) -> Response:
    viewer = await _viewer(ctx, request)
    tree = await supervision_tree(ctx) if _may(viewer, "operator") else {}
    return await _page(request, viewer, "tree.html", "operator", "Supervision tree", tree=tree)


# ------------------------------------------------------------------ cluster


@router.get("/cluster", response_class=HTMLResponse)
async def cluster_page(ctx: Ctx, request: Request) -> Response:
    viewer = await _viewer(ctx, request)
    view: dict[str, Any] = {}
    sessions: dict[str, Any] = {"sessions": []}
    if _may(viewer, "operator"):
        view = await nodes_view(ctx)
        sessions = await sessions_view(ctx, limit=200, cursor=None)
    return await _page(
        request,
        viewer,
        "cluster.html",
        "operator",
        "Cluster",
        view=view,
        sessions=sessions["sessions"],
        more=sessions.get("next_cursor") is not None,
    )


# ------------------------------------------------------------------ agents


@router.get("/agents", response_class=HTMLResponse)
async def agents_page(ctx: Ctx, request: Request) -> Response:
    viewer = await _viewer(ctx, request)
    items = list((await ctx.store.agents.list(limit=500)).items) if _may(viewer, "user") else []
    return await _page(request, viewer, "agents.html", "user", "Agents", agents=items)


@router.get("/agents/new", response_class=HTMLResponse)
async def agent_new(ctx: Ctx, request: Request) -> Response:
    viewer = await _viewer(ctx, request)
    draft = AgentDraft(name="my-agent")
    return await _page(
        request,
        viewer,
        "agent_edit.html",
        "operator",
        "New agent",
        agent=draft,
        version=None,
        yaml=dump_agent_yaml(draft),
        initial=draft.model_dump(mode="json"),
    )


@router.get("/agents/{name}/edit", response_class=HTMLResponse)
async def agent_edit(ctx: Ctx, request: Request, name: AgentName) -> Response:
    viewer = await _viewer(ctx, request)
    if not _may(viewer, "operator"):
        return await _page(request, viewer, "agent_edit.html", "operator", f"Edit {name}")
    definition = await ctx.store.agents.get(name)
    return await _page(
        request,
        viewer,
        "agent_edit.html",
        "operator",
        f"Edit {name}",
        agent=definition,
        version=definition.version,
        yaml=dump_agent_yaml(definition),
        # every field, those the form does not show too (config, schemas, model settings)
        initial=definition.draft().model_dump(mode="json"),
    )


@router.get("/agents/{name}", response_class=HTMLResponse)
async def agent_page(ctx: Ctx, request: Request, name: AgentName) -> Response:
    viewer = await _viewer(ctx, request)
    if viewer is None:
        return await _page(request, viewer, "agent.html", "user", name)
    definition = await ctx.store.agents.get(name)
    versions = list(reversed(await ctx.store.agents.versions(name)))
    monitor = ctx.extras.get("monitor")
    operator = viewer.has("operator")
    sessions = len(
        ctx.runtime.registry.match(
            where=lambda m: type(m) is dict and m.get("agent") == name and m.get("user") is not None
        )
    )
    # metrics, charts and logs need the operator role, as in the API
    watch = operator and monitor is not None
    return await _page(
        request,
        viewer,
        "agent.html",
        "user",
        name,
        agent=definition,
        yaml=dump_agent_yaml(definition),
        versions=[{"v": v, "yaml": dump_agent_yaml(v)} for v in versions],
        metrics=monitor.metrics(name) if watch and monitor is not None else None,
        logs=list(reversed(monitor.logs(name, 100))) if watch and monitor is not None else [],
        sessions=sessions,
        operator=operator,
    )


# ------------------------------------------------------------------ tasks


@router.get("/tasks", response_class=HTMLResponse)
async def tasks_page(ctx: Ctx, request: Request) -> Response:
    viewer = await _viewer(ctx, request)
    queue = ctx.extras.get("tasks")
    tasks: list[Any] = []
    depth: dict[str, int] = {}
    operator = viewer is not None and viewer.has("operator")
    if queue is not None and viewer is not None:
        if operator:
            for status in ("queued", "leased", "succeeded", "dead"):
                depth[status] = await queue.count(status)
            # the newest 200 (the queue lists oldest first), newest on top
            newest = max(0, sum(depth.values()) - 200)
            tasks = list(reversed((await queue.list(limit=200, offset=newest)).items))
        else:  # a user: its own submissions (as GET /api/v1/tasks)
            entries = await ctx.store.audit.list(
                actor=viewer.owner_id, action="task.submit", limit=200
            )
            for entry in entries.items:
                with contextlib.suppress(TaskNotFoundError):  # purged
                    tasks.append(await queue.get(entry.target.removeprefix("task:")))
    hosting = ctx.extras.get("hosting")
    waiting = {t.id: hosting.detail(t) for t in tasks} if hosting is not None else {}
    return await _page(
        request,
        viewer,
        "tasks.html",
        "user",
        "Tasks",
        tasks=tasks,
        depth=depth,
        operator=operator,
        waiting=waiting,
        enabled=queue is not None,
    )


@router.get("/tasks/{task_id}", response_class=HTMLResponse)
async def task_page(ctx: Ctx, request: Request, task_id: TaskIdParam) -> Response:
    viewer = await _viewer(ctx, request)
    task = None
    if viewer is not None:  # the API's checks: 503 without a queue, a user reaches its own
        task = await task_checked(ctx, viewer, task_id)
    hosting = ctx.extras.get("hosting")
    detail = hosting.detail(task) if hosting is not None and task is not None else None
    return await _page(
        request,
        viewer,
        "task.html",
        "user",
        f"Task {task_id}",
        task=task,
        detail=detail,
    )


@router.get("/dead-letters", response_class=HTMLResponse)
async def dead_letters_page(ctx: Ctx, request: Request) -> Response:
    viewer = await _viewer(ctx, request)
    queue = ctx.extras.get("tasks")
    dead: list[Any] = []
    if queue is not None and viewer is not None and viewer.has("operator"):
        dead = list((await queue.dead_letters(limit=500)).items)
    return await _page(request, viewer, "dead_letters.html", "operator", "Dead letters", dead=dead)


@router.get("/workflows", response_class=HTMLResponse)
async def workflows_page(ctx: Ctx, request: Request) -> Response:
    viewer = await _viewer(ctx, request)
    catalog = ctx.extras.get("workflows")
    workflows: list[Any] = []
    runs: list[Any] = []
    if catalog is not None and viewer is not None and viewer.has("operator"):
        workflows = sorted(catalog.workflows.values(), key=lambda w: w.name)
        ids = await ctx.store.workflows.list()
        for run_id in list(reversed(ids))[:100]:
            with contextlib.suppress(NotFoundError):
                runs.append(await catalog.runner.get(run_id))
    return await _page(
        request,
        viewer,
        "workflows.html",
        "operator",
        "Workflows",
        workflows=workflows,
        runs=runs,
        enabled=catalog is not None,
    )


# ------------------------------------------------------------------ admin pages


@router.get("/functions", response_class=HTMLResponse)
async def functions_page(ctx: Ctx, request: Request) -> Response:
    viewer = await _viewer(ctx, request)
    items: list[Any] = []
    if viewer is not None:
        listed = await ctx.store.functions.list(limit=500)
        items = [f for f in listed.items if viewer.owns(await function_owner(ctx, f.name))]
    return await _page(request, viewer, "functions.html", "user", "Functions", functions=items)


@router.get("/keys", response_class=HTMLResponse)
async def keys_page(ctx: Ctx, request: Request) -> Response:
    viewer = await _viewer(ctx, request)
    keys = (
        await ctx.store.api_keys.list(include_revoked=True)
        if viewer is not None and viewer.has("admin")
        else []
    )
    return await _page(request, viewer, "keys.html", "admin", "API keys", keys=keys)


@router.get("/webhooks", response_class=HTMLResponse)
async def webhooks_page(ctx: Ctx, request: Request) -> Response:
    viewer = await _viewer(ctx, request)
    hooks: list[Any] = []
    if viewer is not None and viewer.has("admin"):
        hooks = list((await ctx.store.webhooks.list(limit=500)).items)
    return await _page(request, viewer, "webhooks.html", "admin", "Webhooks", webhooks=hooks)


@router.get("/audit", response_class=HTMLResponse)
async def audit_page(
    ctx: Ctx,
    request: Request,
    actor: Annotated[str | None, Query(max_length=200)] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    target: Annotated[str | None, Query(max_length=300)] = None,
) -> Response:
    viewer = await _viewer(ctx, request)
    filters = {"actor": actor or None, "action": action or None, "target": target or None}
    entries: list[Any] = []
    if _may(viewer, "admin"):
        listed = await ctx.store.audit.list(
            actor=filters["actor"], action=filters["action"], target=filters["target"], limit=200
        )
        entries = list(listed.items)
    return await _page(
        request, viewer, "audit.html", "admin", "Audit log", entries=entries, filters=filters
    )
