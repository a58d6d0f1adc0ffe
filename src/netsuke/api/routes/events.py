"""``GET /api/v1/events``: the node's event bus over a WebSocket, filtered by topic patterns.

Connect with ``?topics=agent.*,definition.*`` (comma-separated globs, or repeat the
parameter; default ``*``) and a key: ``Authorization: Bearer ...`` or, from the dashboard, the
``netsuke_key`` cookie (then the ``Origin`` must be this server's). Frames are JSON text:

* first ``{"type": "welcome", "topics": [...], "node": ...}``,
* then ``{"type": "event", "id", "topic", "node", "seq", "time", "data"}`` per event, in
  publish order. A ``user`` key receives only events whose ``data.user`` is its user.

A slow client loses the oldest buffered events first (counted by the bus) and is never allowed
to slow a producer. Close codes: 4401 no or bad key, 4429 rate limited, 4400 bad topic
pattern, 1001 when the server shuts down.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
from urllib.parse import urlsplit

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from netsuke.events import Event

from .._auth import Principal
from .._problems import ProblemError
from ..deps import COOKIE, authenticate, client_of, get_ctx

__all__ = ["router"]

router = APIRouter(tags=["events"])


def _patterns(websocket: WebSocket) -> list[str]:
    raw = websocket.query_params.getlist("topics") or ["*"]
    return [p.strip() for item in raw for p in item.split(",") if p.strip()] or ["*"]


def _visible(principal: Principal, event: Event) -> bool:
    return principal.role != "user" or event.data.get("user") == principal.user_id


def _same_origin(websocket: WebSocket) -> bool:
    origin = websocket.headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc == websocket.headers.get("host")


@router.websocket("/events")
async def events(websocket: WebSocket) -> None:
    ctx = get_ctx(websocket)
    await websocket.accept()
    auth = websocket.headers.get("authorization", "")
    secret = auth[7:] if auth.lower().startswith("bearer ") else None
    secret = secret or websocket.headers.get("x-api-key")
    cookie = websocket.cookies.get(COOKIE) if _same_origin(websocket) else None
    try:
        principal = await authenticate(ctx, secret, cookie=cookie, client=client_of(websocket))
    except ProblemError as exc:
        await websocket.close(code=4429 if exc.status == 429 else 4401, reason=exc.title)
        return
    patterns = _patterns(websocket)
    try:
        subscription = ctx.runtime.events.subscribe(patterns[0] if len(patterns) == 1 else "*")
        for pattern in patterns[1:]:
            ctx.runtime.events.subscribe(pattern).close()  # validates each pattern
    except ValueError as exc:
        await websocket.close(code=4400, reason=str(exc)[:120])
        return
    multi = len(patterns) > 1
    await websocket.send_json({"type": "welcome", "topics": patterns, "node": ctx.runtime.node})

    async def pump() -> None:
        async for event in subscription:
            if multi and not any(fnmatch.fnmatchcase(event.topic, p) for p in patterns):
                continue
            if _visible(principal, event):
                await websocket.send_json({"type": "event", **event.to_dict()})

    sender = asyncio.create_task(pump())
    try:
        while True:
            receiving = asyncio.create_task(websocket.receive())
            done, _ = await asyncio.wait({sender, receiving}, return_when=asyncio.FIRST_COMPLETED)
            if sender in done:
                receiving.cancel()
                break
            message = receiving.result()
            if message["type"] == "websocket.disconnect":
                break
    except WebSocketDisconnect:
        pass
    finally:
        subscription.close()
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sender
        if sender.done() and not sender.cancelled() and sender.exception() is None:
            with contextlib.suppress(Exception):
                await websocket.close(code=1001)
