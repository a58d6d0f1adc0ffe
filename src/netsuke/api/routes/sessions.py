"""``/api/v1/sessions``: get-or-start a user's session with an agent, chat (JSON or SSE),
history, status, stop.

* ``POST /sessions {"agent", "user"?}``: get-or-start the session ``<agent>-<user>`` of a
  stored definition (201 when started, 200 when it was running). A ``user`` key acts only as
  itself (naming another user is 403); operators and admins name any user (default: the key's
  name).
* A session belongs to its user: a ``user`` key reaching another user's session gets **404**
  (its existence is not revealed). The owner comes from the running session's registry
  metadata or, for a stopped or evicted one, from its stored conversation.
* ``GET /sessions?agent=&limit=&cursor=``: running sessions (a ``user`` key: its own), by id.
* ``GET /sessions/{id}``: state (``running``/``idle``/``hibernated``, or ``stopped`` when only
  its conversation is stored), restarts, queue, turns, tokens, last activity, and the
  definition ``version`` the running session really runs (``None`` when stopped; it moves to
  a newer version at its next turn or restart, see ``/agents/{id}/status``).
* ``DELETE /sessions/{id}[?purge=true]``: stop the session (204); its conversation stays in
  the store unless ``purge`` (then it is deleted too).
* ``POST /sessions/{id}/messages {"message"}`` runs one turn and answers once it is committed
  (``output``, ``execution_id``, tokens, ``duration_ms``); the request's audit record is
  committed in the turn's transaction. With ``Accept: text/event-stream``
  or ``?stream=true`` the reply is Server-Sent Events: ``delta`` (``{"text"}``),
  ``tool_call_started``, ``tool_call_finished``, then ``completed`` (the committed turn) or
  ``error`` (a problem). An error before the first event is a plain problem response.
* ``Idempotency-Key`` on ``POST /sessions/{id}/messages`` (JSON replies; 1..200 visible ASCII
  characters, scoped to the session): the key, a hash of the body and the reply are committed
  in the turn's transaction. A retry with the key gets the stored reply (same body, header
  ``Idempotent-Replayed: true``) and runs nothing; the key with a different message is 422;
  while the first request runs on this node a duplicate is 409 (``Retry-After: 1``; it does
  not wait); a malformed key is 400 naming the header. A streamed request with a stored key
  gets one ``completed`` event. See ``docs/api.md``.
* ``GET /sessions/{id}/messages?limit=&cursor=``: the stored history, oldest first,
  paginated (pydantic-ai's message format).
* Agent errors map to problems as listed in ``netsuke.api._turns``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from netsuke.agents import AgentError, AgentNotFoundError, SessionMovedError
from netsuke.agents._system import request_hash
from netsuke.kernel import NetsukeError
from netsuke.observability import get_logger
from netsuke.store import REQUEST_KEY_MAX, NotFoundError, ValidationError, check_request_key

from .._auth import Principal
from .._chat_route import ChatRoute
from .._context import ApiContext
from .._forwarding import (
    NODE_HEADER,
    TURN_TIMEOUT,
    adopt,
    audit_to_wire,
    forward,
    forward_stream,
    gather_nodes,
    get_or_start,
    here,
    owner_elsewhere,
    required_labels,
    service_of,
)
from .._middleware import mark_audited, request_audit
from .._problems import ProblemError, problem_body
from .._turns import agent_problem, agents_of, dump_messages, event_json, jsonable, monitor_of
from ..deps import Caller, Ctx, Paging, get_ctx

__all__ = ["MessageRequest", "Reply", "Session", "SessionRequest", "router"]

router = APIRouter(prefix="/sessions", tags=["sessions"])
log = get_logger("netsuke.api")

SESSION_ID_PATTERN = r"^[A-Za-z][A-Za-z0-9_.@-]{0,199}$"
SessionId = Annotated[str, Path(pattern=SESSION_ID_PATTERN, description="`<agent>-<user>`.")]
NAME = r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$"
USER = r"^[A-Za-z0-9_.@-]{1,100}$"


class SessionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent: str = Field(pattern=NAME, description="A stored agent definition's name.")
    user: str | None = Field(default=None, pattern=USER, description="Default: the key's name.")


class Session(BaseModel):
    session_id: str
    agent: str | None
    user: str | None
    state: str
    restarts: int = 0
    queued: int = 0
    turns: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    last_activity: float | None = None
    version: int | None = None
    node: str | None = None
    """The node id serving the session (``name#incarnation`` in a cluster)."""
    owner: str | None = None
    """The session's owner process (``<node.id>``; in a cluster ``<name#incarnation.id>``),
    whose exit applies the agent's ``owner_policy``; kept across a failover."""


class SessionPage(BaseModel):
    items: list[Session]
    next_cursor: str | None = None


class MessageRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = Field(min_length=1, max_length=100_000)


class Reply(BaseModel):
    session_id: str
    output: Any
    execution_id: str
    tokens_in: int
    tokens_out: int
    duration_ms: float


class MessagePage(BaseModel):
    session_id: str
    items: list[dict[str, Any]]
    next_cursor: str | None = None


def owner_of(ctx: ApiContext, session_id: str) -> tuple[str | None, str | None] | None:
    """``(agent, user)`` of a running session from the registry, else None."""
    meta = ctx.runtime.registry.meta(session_id) if ctx.runtime.whereis(session_id) else None
    if isinstance(meta, dict) and meta.get("kind") == "agent":
        return meta.get("agent"), meta.get("user")
    return None


async def checked(ctx: ApiContext, caller: Principal, session_id: str) -> tuple[Any, Any, bool]:
    """``(agent, user, running)`` of a session the caller may touch; 404 otherwise."""
    found = owner_of(ctx, session_id)
    running = found is not None
    if found is None:
        try:
            conv = await ctx.store.conversations.get(session_id)
        except NotFoundError:
            raise ProblemError(404, "Not found", "no such session") from None
        found = (conv.agent_name, conv.user_id)
    if not caller.may_act_for(found[1]):
        raise ProblemError(404, "Not found", "no such session")  # never reveal another's
    return found[0], found[1], running


async def local_view(
    ctx: ApiContext, session_id: str, agent: Any, user: Any, running: bool
) -> Session:
    """The session as this node sees it (its own process and activity)."""
    act = monitor_of(ctx).session(session_id)
    base: dict[str, Any] = {
        "session_id": session_id,
        "agent": agent,
        "user": user,
        "node": here(ctx) if running else None,
    }
    if act is not None:
        base.update(
            turns=act.turns,
            tokens_in=act.tokens_in,
            tokens_out=act.tokens_out,
            last_activity=act.last_activity,
            restarts=act.restarts,
        )
    state = "stopped"
    if running:
        try:
            status = await agents_of(ctx).status(session_id)
            state = str(status.get("state", "running"))
            base.update(
                restarts=status.get("restarts", 0),
                queued=status.get("queued", 0),
                version=status.get("version"),
                owner=status.get("owner"),
            )
        except (AgentError, NetsukeError):
            state = "stopped"
    if state == "stopped":
        base["node"] = None
    return Session(state=state, **base)


_view = local_view


async def _session_view(
    ctx: ApiContext, session_id: str, agent: Any, user: Any, running: bool, response: Response
) -> Session:
    """The view from the node that runs the session (forwarded when that is another node)."""
    owner = None if running else await owner_elsewhere(ctx, session_id)
    if owner is not None:
        out = await forward(
            ctx, owner, "status", {"session": session_id, "agent": agent, "user": user}
        )
        response.headers[NODE_HEADER] = owner
        return Session.model_validate(out)
    response.headers[NODE_HEADER] = here(ctx)
    return await local_view(ctx, session_id, agent, user, running)


def _entries(ctx: ApiContext, agent: str | None, users: list[str] | None) -> list[Any]:
    entries = ctx.runtime.registry.match(
        where=lambda m: type(m) is dict and m.get("kind") == "agent" and m.get("user") is not None
    )
    rows = [
        e
        for e in entries
        if (users is None or e.meta.get("user") in users)
        and (agent is None or e.meta.get("agent") == agent)
    ]
    return rows


async def local_list(
    ctx: ApiContext, agent: str | None, users: list[str] | None
) -> list[dict[str, Any]]:
    """The views of the sessions running on this node (``users``: only theirs)."""
    return [
        (
            await local_view(ctx, str(e.key), e.meta.get("agent"), e.meta.get("user"), True)
        ).model_dump()
        for e in _entries(ctx, agent, users)
    ]


@router.post("", status_code=201, response_model=Session)
async def start_session(
    ctx: Ctx, caller: Caller, body: SessionRequest, response: Response
) -> Session:
    user = body.user or caller.name
    if not caller.may_act_for(user):
        raise ProblemError(403, "Forbidden", "a user key may only start its own sessions")
    try:
        await ctx.store.agents.get(body.agent)
    except NotFoundError:
        raise ProblemError(404, "Not found", f"no agent definition named {body.agent}") from None
    agents_of(ctx)
    sid = f"{body.agent}-{user}"
    found = owner_of(ctx, sid)
    if found is not None and found[1] != user:
        raise ProblemError(409, "Conflict", "the session name is held by another process")
    node, created, view = await get_or_start(
        ctx, body.agent, user, required=await required_labels(ctx, body.agent)
    )
    if not created:
        response.status_code = 200
    else:
        log.info("api.session_started", session=sid, agent=body.agent, user=user, node=node)
    response.headers["Location"] = f"/api/v1/sessions/{sid}"
    response.headers[NODE_HEADER] = node
    if view is not None:
        return Session.model_validate(view)
    return await local_view(ctx, sid, body.agent, user, True)


@router.get("", response_model=SessionPage)
async def list_sessions(
    ctx: Ctx,
    caller: Caller,
    page: Paging,
    agent: Annotated[str | None, Query(pattern=NAME)] = None,
) -> SessionPage:
    users = None if caller.role != "user" else [caller.name]
    rows = sorted(
        (e for e in _entries(ctx, agent, users) if caller.may_act_for(e.meta.get("user"))),
        key=lambda e: str(e.key),
    )
    if page.cursor is not None:
        rows = [e for e in rows if str(e.key) > page.cursor]
    if service_of(ctx) is None:  # one node: views of this page only
        more = len(rows) > page.limit
        rows = rows[: page.limit]
        items = [
            await local_view(ctx, str(e.key), e.meta.get("agent"), e.meta.get("user"), True)
            for e in rows
        ]
        return SessionPage(items=items, next_cursor=str(rows[-1].key) if more and rows else None)
    # a cluster: every live node's running sessions, merged by id
    views = {
        str(e.key): await local_view(ctx, str(e.key), e.meta.get("agent"), e.meta.get("user"), True)
        for e in rows
    }
    for _, answer in await gather_nodes(ctx, "sessions", {"agent": agent, "users": users}):
        for v in answer if isinstance(answer, list) else ():
            view = Session.model_validate(v)
            if view.session_id in views or not caller.may_act_for(view.user):
                continue
            if page.cursor is not None and view.session_id <= page.cursor:
                continue
            views[view.session_id] = view
    ordered = [views[k] for k in sorted(views)]
    more = len(ordered) > page.limit
    ordered = ordered[: page.limit]
    return SessionPage(
        items=ordered, next_cursor=ordered[-1].session_id if more and ordered else None
    )


@router.get("/{session_id}", response_model=Session)
async def get_session(
    ctx: Ctx, caller: Caller, session_id: SessionId, response: Response
) -> Session:
    agent, user, running = await checked(ctx, caller, session_id)
    return await _session_view(ctx, session_id, agent, user, running, response)


@router.delete("/{session_id}", status_code=204)
async def delete_session(
    ctx: Ctx,
    caller: Caller,
    session_id: SessionId,
    purge: Annotated[bool, Query(description="Delete the stored conversation too.")] = False,
) -> Response:
    _, _, running = await checked(ctx, caller, session_id)
    owner = None if running else await owner_elsewhere(ctx, session_id)
    if owner is not None:
        stopped = bool(await forward(ctx, owner, "stop", {"session": session_id}))
    else:
        stopped = await agents_of(ctx).stop_agent(session_id)
    log.info("api.session_deleted", session=session_id, stopped=stopped, purge=purge, node=owner)
    if purge:
        try:
            await ctx.store.conversations.delete(session_id)
        except NotFoundError:
            pass
    return Response(status_code=204, headers={NODE_HEADER: owner or here(ctx)})


def _wants_stream(request: Request, stream: bool | None) -> bool:
    if stream is not None:
        return stream
    return "text/event-stream" in request.headers.get("accept", "")


def _sse(name: str, data: Any) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def post_message(
    caller: Caller,
    request: Request,
    session_id: SessionId,
    body: MessageRequest,
    stream: Annotated[bool | None, Query(description="Stream the reply as SSE.")] = None,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="Run the turn at most once per key in this session; a retry gets the "
            "stored reply. 1..200 visible ASCII characters.",
        ),
    ] = None,
) -> Any:
    # the chat path: the context is read from the app, not solved as a dependency (each
    # dependency costs FastAPI about 40 calls per request; benchmarks/api_cost.py)
    ctx = get_ctx(request)
    key = _idempotency_key(request)  # read from the raw headers: two values are refused
    _, _, running = await checked(ctx, caller, session_id)
    owner = None
    if not running and service_of(ctx) is not None:  # a cluster: the owner may be elsewhere
        owner = await owner_elsewhere(ctx, session_id)
        if owner is None:  # its owner node is gone: this node takes it over, or the node
            owner = await adopt(ctx, session_id)  # carrying its agent's labels does
    if not _wants_stream(request, stream):
        # the request's audit record is committed in the turn's transaction
        audit = request_audit(request.scope, 200)
        node = owner or here(ctx)
        if owner is None:
            try:
                out = await run_local(ctx, session_id, body.message, key, audit)
            except _Moved as m:  # a live node owns it: forward the turn there (nothing ran)
                owner = node = m.owner
        if owner is not None:
            out = await _forward_run(ctx, owner, session_id, body.message, key, audit)
        headers = {NODE_HEADER: node}
        if out["replayed"]:  # nothing ran: the middleware records this request
            headers["Idempotent-Replayed"] = "true"
        else:
            mark_audited(request.scope)
        return Response(out["reply"], media_type="application/json", headers=headers)
    node = owner or here(ctx)
    if owner is not None:
        events: AsyncIterator[Any] = forward_stream(
            ctx,
            owner,
            "stream",
            {"session": session_id, "message": body.message, "request_id": key},
        ).__aiter__()
    else:
        events = stream_local(ctx, session_id, body.message, key).__aiter__()
    try:
        first = await events.__anext__()
    except NetsukeError as exc:
        raise _problem(exc) from None
    return StreamingResponse(
        _pump(first, events, str(request.url.path)),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no", NODE_HEADER: node},
    )


class _ChatRoute(ChatRoute):
    body_model = MessageRequest
    session_pattern = SESSION_ID_PATTERN


# FastAPI's handler, with its common case solved directly (``netsuke.api._chat_route``)
router.add_api_route(
    "/{session_id}/messages",
    post_message,
    methods=["POST"],
    response_model=Reply,
    responses={200: {"content": {"text/event-stream": {}}}},
    route_class_override=_ChatRoute,
)


class _Moved(Exception):
    """A turn here was refused because the live node ``owner`` owns the session."""

    def __init__(self, owner: str) -> None:
        super().__init__(owner)
        self.owner = owner


async def run_local(
    ctx: ApiContext,
    session_id: str,
    message: str,
    key: str | None,
    audit: tuple[Any, ...] | None,
) -> dict[str, Any]:
    """Run one turn on this node: ``{"reply": JSON text, "replayed": bool}`` once committed
    (with ``audit`` in the turn's transaction); ``ProblemError`` for a failed turn."""
    agents = agents_of(ctx)
    try:
        r = await agents.run_turn(
            session_id, message, audit=(audit,) if audit else (), request_id=key
        )
    except SessionMovedError as exc:
        if exc.owner_id is not None and service_of(ctx) is not None:
            raise _Moved(exc.owner_id) from None
        raise _problem(exc) from None
    except NetsukeError as exc:
        raise _problem(exc) from None
    if r.replayed or r.reply is not None:
        assert r.reply is not None
        return {"reply": r.reply, "replayed": bool(r.replayed)}
    reply = Reply(
        session_id=session_id,
        output=jsonable(r.output),
        execution_id=r.execution_id,
        tokens_in=r.tokens_in,
        tokens_out=r.tokens_out,
        duration_ms=r.duration_ms,
    )
    # serialised here, once: FastAPI would validate the model again, then encode it twice
    return {"reply": reply.model_dump_json(), "replayed": False}


async def _forward_run(
    ctx: ApiContext,
    owner: str,
    session_id: str,
    message: str,
    key: str | None,
    audit: tuple[Any, ...],
) -> dict[str, Any]:
    args = {
        "session": session_id,
        "message": message,
        "request_id": key,
        "audit": audit_to_wire(audit),
    }
    try:
        out: dict[str, Any] = await forward(ctx, owner, "run", args, timeout=TURN_TIMEOUT)
        return out
    except ProblemError as p:
        if p.type != "owner-lost" or key is None:
            raise
        # the owner died mid-turn: if the turn was committed, its stored reply is the answer
        stored = await ctx.store.conversations.find_request(session_id, key)
        if stored is None or stored.body_hash != request_hash(message):
            raise
        return {"reply": stored.reply, "replayed": True}


async def stream_local(
    ctx: ApiContext, session_id: str, message: str, key: str | None
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """One turn on this node as ``(event name, data)`` pairs (``event_json``)."""
    async for event in agents_of(ctx).stream(session_id, message, request_id=key):
        yield event_json(event)


def _idempotency_key(request: Request) -> str | None:
    """The request's ``Idempotency-Key`` (None without one); 400 naming the header when it is
    not 1..200 visible ASCII characters or given twice."""
    values = request.headers.getlist("idempotency-key")
    if not values:
        return None
    key = values[0]
    if len(values) > 1 or not 0 < len(key) <= REQUEST_KEY_MAX or not key.isascii():
        raise _bad_key()
    try:
        check_request_key(key)
    except ValidationError:
        raise _bad_key() from None
    return key


def _bad_key() -> ProblemError:
    return ProblemError(
        400,
        "Bad request",
        f"Idempotency-Key must be one value of 1..{REQUEST_KEY_MAX} visible ASCII characters",
        type="bad-idempotency-key",
        field="Idempotency-Key",
    )


def _problem(exc: NetsukeError) -> ProblemError:
    if isinstance(exc, AgentNotFoundError):
        return ProblemError(404, "Not found", "the session is not running; POST /sessions first")
    return agent_problem(exc)


async def _pump(first: Any, events: AsyncIterator[Any], instance: str) -> AsyncIterator[bytes]:
    try:
        yield _sse(*first)
        async for event in events:
            yield _sse(*event)
    except NetsukeError as exc:
        problem = _problem(exc)
        yield _sse("error", problem_body(problem, instance))
    except ProblemError as problem:  # from the owner node, or losing it
        yield _sse("error", problem_body(problem, instance))
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()


@router.get("/{session_id}/messages", response_model=MessagePage)
async def history(ctx: Ctx, caller: Caller, session_id: SessionId, page: Paging) -> MessagePage:
    await checked(ctx, caller, session_id)
    start = 0
    if page.cursor is not None:
        if not page.cursor.isdigit() or len(page.cursor) > 12:
            raise ProblemError(422, "Validation failed", "cursor: not a cursor from this listing")
        start = int(page.cursor)
    try:
        messages = await ctx.store.conversations.history(session_id)
    except NotFoundError:
        messages = []  # started, no turn committed yet
    chunk = messages[start : start + page.limit]
    end = start + len(chunk)
    return MessagePage(
        session_id=session_id,
        items=dump_messages(chunk),
        next_cursor=str(end) if end < len(messages) else None,
    )


# The chat path is tried first: FastAPI tries an included router's routes in order, twice per
# request (to match, then to handle), about 15 calls for each route tried before the one that
# matches (benchmarks/api_cost.py). The paths are disjoint; POST before GET on ``/messages``
# as before, so a wrong method gets the same 405.
router.routes.insert(
    0,
    router.routes.pop(
        next(i for i, r in enumerate(router.routes) if getattr(r, "endpoint", None) is post_message)
    ),
)
