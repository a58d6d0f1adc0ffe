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
it, and the socket owns the session there too; when that node is lost the socket follows
the session to where failover put it and sends another ``session`` frame, see ``_Chat``),
then per turn ``delta``
(``text``), ``tool_call_started``, ``tool_call_finished``, ``completed`` (output, execution
id, tokens, and ``html``: the output rendered as Markdown with raw HTML escaped), or
``error`` (a problem document, its ``type`` URI as ``problem_type``). Turns run one at a
time per socket; a bad frame gets a 422 ``error`` and the chat goes on. Close
codes: 4401 no or bad key (or a cookie from another origin), 4403 another user's session or
a bad user name, 4404 no such agent definition.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from typing import Annotated, Any

from fastapi import APIRouter, Request, Response, WebSocket, WebSocketDisconnect
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse

from netsuke.agents import SessionMovedError
from netsuke.kernel import Exited, NetsukeError, Pid
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
            chat = _Chat(websocket, ctx, agent, user, tab.pid)
            try:
                await chat.attach()
            except NetsukeError as exc:
                await websocket.send_json(_error(agent_problem(exc)))
                await websocket.close(code=1011)
                return
            except ProblemError as problem:
                await websocket.send_json(_error(problem))
                await websocket.close(code=1011)
                return
            log.info("api.chat_opened", session=sid, owner=repr(tab.pid), node=chat.node)
            await chat.converse()
    except (WebSocketDisconnect, Exited):
        pass
    log.info("api.chat_closed", agent=agent, user=user)


def _error(problem: ProblemError) -> dict[str, Any]:
    """An ``error`` frame: the problem document, its ``type`` URI as ``problem_type``."""
    body = problem_body(problem)
    return {**body, "type": "error", "problem_type": body["type"]}


class _Chat:
    """One socket's chat with the session ``<agent>-<user>``, which the socket's scope owns,
    on whichever node runs it.

    **Following a moved session** (a cluster): when a turn finds the session's node gone
    (``session-moved``: nothing ran; ``owner-lost``: the node went down during the turn, its
    outcome unknown) the socket looks the session up again with get-or-start (owner: this
    socket), which finds it where failover restarted it, or starts it where placement puts it
    (its memory comes from the store), and sends a new ``session`` frame with the node. A
    ``session-moved`` turn is then sent again (nothing ran); an ``owner-lost`` one is answered
    with its error frame (the caller decides: the turn may have been committed). The lookup
    is retried for up to ``FOLLOW_FOR`` seconds (the owner's node is judged down within about
    one second after a crash and ``down_after`` after a freeze), then the error frame goes
    out and the next message tries again."""

    FOLLOW_FOR = 20.0
    _MOVED = frozenset({"session-moved", "owner-lost"})

    def __init__(self, websocket: WebSocket, ctx: Any, agent: str, user: str, owner: Pid) -> None:
        self.websocket, self.ctx, self.agent, self.user, self.owner = (
            websocket, ctx, agent, user, owner,
        )  # fmt: skip
        self.session_id = f"{agent}-{user}"
        self.node: str | None = None  # the serving node's id; None: unknown

    @property
    def remote(self) -> str | None:
        """The node to forward turns to, ``None`` when this node runs the session."""
        return None if self.node == here(self.ctx) else self.node

    async def attach(self) -> None:
        """Get-or-start the session with this socket as its owner; tell the client where."""
        node, _, _ = await get_or_start(
            self.ctx,
            self.agent,
            self.user,
            owner=self.owner,
            required=await required_labels(self.ctx, self.agent),
        )
        self.node = node
        await self.websocket.send_json(
            {
                "type": "session",
                "session_id": self.session_id,
                "agent": self.agent,
                "user": self.user,
                "node": node,
            }
        )

    async def follow(self) -> bool:
        """Find the session again after its node was lost: True once attached (a ``session``
        frame sent), False past ``FOLLOW_FOR``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.FOLLOW_FOR
        delay = 0.2
        while True:
            try:
                await self.attach()
                log.info("api.chat_followed", session=self.session_id, node=self.node)
                return True
            except ProblemError as problem:
                if _kind(problem) not in self._MOVED | {"no-node-available"}:
                    raise
            except NetsukeError as exc:
                if not isinstance(exc, SessionMovedError):
                    raise
            if loop.time() + delay > deadline:
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def converse(self) -> None:
        while True:
            message = await self._receive()
            if message is not None:
                await self._turn(message)

    async def _receive(self) -> str | None:
        try:
            frame = json.loads(await self.websocket.receive_text())
        except ValueError:
            frame = None
        message = frame.get("message") if isinstance(frame, dict) else None
        if not isinstance(message, str) or not message.strip() or len(message) > 100_000:
            await self.websocket.send_json(
                _error(ProblemError(422, "Validation failed", "message: a non-empty string"))
            )
            return None
        try:
            check_json(message, "message")  # the same check as every HTTP body
        except ValidationError as exc:
            await self.websocket.send_json(
                _error(ProblemError(422, "Validation failed", f"{exc.field}: {exc.reason}"))
            )
            return None
        return message

    async def _turn(self, message: str) -> None:
        resent = False
        while True:
            try:
                if self.node is None and not await self.follow():
                    raise _moved_problem(self.session_id)
                await self._stream(message)
                return
            except (NetsukeError, ProblemError) as exc:
                problem = agent_problem(exc) if isinstance(exc, NetsukeError) else exc
                kind = _kind(problem)
                if kind in self._MOVED:
                    self.node = None  # look it up again, now or at the next message
                    # a forward nobody answered: nothing ran, send it again where it is now
                    # (a turn fenced here did run its tools: its error goes out instead)
                    if kind == "session-moved" and isinstance(exc, ProblemError) and not resent:
                        resent = True
                        continue
                with contextlib.suppress(Exception):
                    await self.websocket.send_json(_error(problem))
                return

    async def _stream(self, message: str) -> None:
        node = self.remote
        events = (
            forward_stream(
                self.ctx, node, "stream", {"session": self.session_id, "message": message}
            )
            if node is not None
            else stream_local(self.ctx, self.session_id, message, None)
        )
        async for name, data in events:
            if name == "completed":  # the final answer as safe HTML (Markdown, no raw HTML)
                output = data["output"]
                text = output if isinstance(output, str) else json.dumps(output, indent=2)
                if not isinstance(output, str):
                    text = f"```json\n{text}\n```"
                data["html"] = str(render_markdown(text))
            await self.websocket.send_json({"type": name, **data})


def _kind(problem: ProblemError) -> str:
    """A problem's type without its URI prefix (a forwarded problem carries the URI)."""
    return problem.type.rsplit("/", 1)[-1]


def _moved_problem(session_id: str) -> ProblemError:
    return ProblemError(
        503,
        "Session moved",
        f"the node of session {session_id!r} is gone and no node runs it yet: send again",
        type="session-moved",
        headers={"Retry-After": "1"},
    )
