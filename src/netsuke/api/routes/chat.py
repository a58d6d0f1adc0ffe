"""The dashboard's chat page: a session agent owned by the page's WebSocket (seed 001).

* ``GET /chat/{agent}[?user=]``: the page (signed in with the ``netsuke_key`` cookie). A
  ``user`` key chats as itself; operators and admins may name the user (default: the key's
  name). The page shows the session's stored conversation (its last messages) as bubbles,
  the agent's model and ``owner_policy``.
* ``WS /dashboard/chat/{agent}/ws[?user=]``: the handler is a kernel scope
  (``runtime.scope()``) and becomes the **owner** of the session ``<agent>-<user>``
  (get-or-start, ``owner=`` the scope's pid; an existing session gets the socket as its new
  owner). When the socket closes (the tab is closed, reloaded or navigates away) the scope
  exits and the agent applies its ``owner_policy``: ``stop`` (default) ends the session,
  ``hibernate`` keeps its memory until a new owner comes.

Frames (JSON text). Client → server: ``{"message": "..."}``. Server → client: first
``{"type": "session", "session_id", "agent", "user", "node"}`` (``node``: the id of the node
running the session; in a cluster it may be another node, each turn then streams back from
it, and the socket owns the session there too), then per turn ``delta``
(``text``), ``tool_call_started``, ``tool_call_finished``, ``completed`` (output, execution
id, tokens, and ``html``: the output rendered as Markdown with raw HTML escaped), or
``error`` (a problem document, its ``type`` URI as ``problem_type``). Turns run one at a
time per socket; a bad frame gets a 422 ``error`` and the chat goes on. Close
codes: 4401 no or bad key (or a cookie from another origin), 4403 another user's session or
a bad user name, 4404 no such agent definition.
"""

from __future__ import annotations

import contextlib
import json
import re
from typing import Annotated, Any

from fastapi import APIRouter, Request, Response, WebSocket, WebSocketDisconnect
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse

from netsuke.kernel import Exited, NetsukeError
from netsuke.observability import get_logger
from netsuke.store import NotFoundError, ValidationError, check_json

from .._auth import Principal
from .._forwarding import forward_stream, get_or_start, here, required_labels
from .._markdown import render_markdown
from .._pages import templates
from .._problems import ProblemError, problem_body
from .._transcript import transcript
from .._turns import agent_problem, agents_of
from ..deps import COOKIE, Ctx, authenticate, client_of, get_ctx
from .events import _same_origin
from .sessions import stream_local

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
log = get_logger("netsuke.api")
AgentName = Annotated[str, PathParam(pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")]
_USER = re.compile(r"^[A-Za-z0-9_.@-]{1,100}$")
_HISTORY = 400  # the last messages of a conversation shown when the page opens


def _user_for(principal: Principal, requested: str | None) -> str | None:
    """The user to chat as, or None when ``requested`` is bad or not allowed."""
    user = requested or principal.name
    if not _USER.match(user) or not principal.may_act_for(user):
        return None
    return user


@router.get("/chat/{agent}", response_class=HTMLResponse)
async def chat_page(
    ctx: Ctx, request: Request, agent: AgentName, user: str | None = None
) -> Response:
    cookie = request.cookies.get(COOKIE)
    try:
        viewer = (
            await authenticate(ctx, None, cookie=cookie, client=client_of(request))
            if cookie
            else None
        )
    except ProblemError:
        viewer = None
    if viewer is None:
        return RedirectResponse("/login", status_code=303)
    request.state.principal = viewer
    definition = await ctx.store.agents.get(agent)  # 404 when there is no such definition
    chat_user = _user_for(viewer, user)
    if chat_user is None:
        raise ProblemError(403, "Forbidden", "a user key may only chat as itself")
    session_id = f"{agent}-{chat_user}"
    try:
        messages = await ctx.store.conversations.history(session_id, limit=_HISTORY)
    except NotFoundError:
        messages = []  # a first visit
    return templates.TemplateResponse(
        request,
        "chat.html",
        {
            "title": f"Chat: {agent}",
            "viewer": viewer,
            "agent": agent,
            "user": chat_user,
            "session_id": session_id,
            "owner_policy": definition.config.get("owner_policy", "stop"),
            "model": definition.model,
            "items": transcript(messages),
        },
    )


async def _principal(websocket: WebSocket) -> Principal | None:
    ctx = get_ctx(websocket)
    auth = websocket.headers.get("authorization", "")
    secret = auth[7:] if auth.lower().startswith("bearer ") else None
    cookie = websocket.cookies.get(COOKIE) if _same_origin(websocket) else None
    try:
        return await authenticate(ctx, secret, cookie=cookie, client=client_of(websocket))
    except ProblemError:
        return None


@router.websocket("/dashboard/chat/{agent}/ws")
async def chat_socket(websocket: WebSocket, agent: str) -> None:
    ctx = get_ctx(websocket)
    await websocket.accept()
    principal = await _principal(websocket)
    if principal is None:
        await websocket.close(code=4401, reason="Unauthorized")
        return
    user = _user_for(principal, websocket.query_params.get("user"))
    if user is None:
        await websocket.close(code=4403, reason="Forbidden")
        return
    try:
        await ctx.store.agents.get(agent)
    except (NotFoundError, Exception):
        await websocket.close(code=4404, reason="No such agent")
        return
    agents_of(ctx)
    sid = f"{agent}-{user}"
    try:
        async with ctx.runtime.scope() as tab:
            # in a cluster the session may live on another node: the tab (a pid of this node)
            # owns it there too, and each turn is streamed back from that node
            try:
                node, _, _ = await get_or_start(
                    ctx, agent, user, owner=tab.pid, required=await required_labels(ctx, agent)
                )
            except NetsukeError as exc:
                await websocket.send_json(_error(agent_problem(exc)))
                await websocket.close(code=1011)
                return
            except ProblemError as problem:
                await websocket.send_json(_error(problem))
                await websocket.close(code=1011)
                return
            log.info("api.chat_opened", session=sid, owner=repr(tab.pid), node=node)
            await websocket.send_json(
                {"type": "session", "session_id": sid, "agent": agent, "user": user, "node": node}
            )
            await _converse(websocket, ctx, sid, None if node == here(ctx) else node)
    except (WebSocketDisconnect, Exited):
        pass
    log.info("api.chat_closed", agent=agent, user=user)


def _error(problem: ProblemError) -> dict[str, Any]:
    """An ``error`` frame: the problem document, its ``type`` URI as ``problem_type``."""
    body = problem_body(problem)
    return {**body, "type": "error", "problem_type": body["type"]}


async def _converse(websocket: WebSocket, ctx: Any, session_id: str, node: str | None) -> None:
    while True:
        try:
            frame = json.loads(await websocket.receive_text())
        except ValueError:
            frame = None
        message = frame.get("message") if isinstance(frame, dict) else None
        if not isinstance(message, str) or not message.strip() or len(message) > 100_000:
            await websocket.send_json(
                _error(ProblemError(422, "Validation failed", "message: a non-empty string"))
            )
            continue
        try:
            check_json(message, "message")  # the same check as every HTTP body
        except ValidationError as exc:
            await websocket.send_json(
                _error(ProblemError(422, "Validation failed", f"{exc.field}: {exc.reason}"))
            )
            continue
        events = (
            forward_stream(ctx, node, "stream", {"session": session_id, "message": message})
            if node is not None
            else stream_local(ctx, session_id, message, None)
        )
        try:
            async for name, data in events:
                if name == "completed":  # the final answer as safe HTML (Markdown, no raw HTML)
                    output = data["output"]
                    text = output if isinstance(output, str) else json.dumps(output, indent=2)
                    if not isinstance(output, str):
                        text = f"```json\n{text}\n```"
                    data["html"] = str(render_markdown(text))
                await websocket.send_json({"type": name, **data})
        except NetsukeError as exc:
            with contextlib.suppress(Exception):
                await websocket.send_json(_error(agent_problem(exc)))
        except ProblemError as problem:  # from the owner node, or losing it
            with contextlib.suppress(Exception):
                await websocket.send_json(_error(problem))
