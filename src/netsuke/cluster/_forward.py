"""Operations forwarded to the node that owns a session (issue 17): an op-level RPC over NATS.

Every node runs one ``SessionService`` with **one wildcard subscription**,
``<prefix>.fwd.<node id>.>``: requests to this node arrive on ``...q.<op>``, and the replies
to this node's own forwarded requests on ``...r.<n>`` (a reply inbox per node, not per
request). A request is one frame (the cluster codec's JSON) carrying ``{"a": args, "t":
timeout}``, with the W3C trace context in its headers; the owner answers on the reply subject
with zero or more chunks ``{"c": value}`` (a stream) and one end marker, ``{"ok": value}`` or
``{"err": {"type", "message", "data"}}``.

The caller's timeout bounds the whole exchange. A forwarded request never hangs:

* nobody holds the owner's subject (the node is gone): NATS answers "no responders" at once,
  ``OwnerUnreachableError``: nothing ran;
* the owner is judged down by the transport (``cluster.node_down``/``node_left`` on the bus)
  or this node's connection broke while waiting: ``OwnerLostError``: the outcome is unknown;
* the caller's timeout passes: ``ForwardTimeoutError``: the outcome is unknown.

Trust: frames on the cluster's NATS are trusted (the NATS server's credentials and TLS are the
boundary, as for kernel frames): the receiving node authenticated and authorised the request;
the owner runs what it is asked. The codec guarantees that no frame runs code or crashes the
node; a frame that does not decode is dropped and counted.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import structlog
from nats.aio.msg import Msg
from opentelemetry import propagate, trace
from prometheus_client import Counter

from netsuke.events import Event, topics
from netsuke.observability import REGISTRY

from .._nats_flush import flush_subscriptions
from ._codec import DecodeError, EncodeError, decode, encode

__all__ = [
    "ForwardError",
    "ForwardTimeoutError",
    "OwnerLostError",
    "OwnerUnreachableError",
    "RemoteOpError",
    "SessionService",
]

log = structlog.get_logger("netsuke.cluster")
tracer = trace.get_tracer("netsuke.cluster")

FORWARDED = Counter(
    "netsuke_cluster_forwarded_requests",
    "Requests this node forwarded to a session's owner, by op and outcome (ok, error, "
    "unreachable, owner_lost, timeout).",
    ["op", "outcome"],
    registry=REGISTRY,
)
SERVED = Counter(
    "netsuke_cluster_forwarded_served",
    "Forwarded requests this node served as a session's owner, by op and outcome.",
    ["op", "outcome"],
    registry=REGISTRY,
)

Handler = Callable[[dict[str, Any]], Awaitable[Any] | AsyncIterator[Any]]


class ForwardError(Exception):
    """A forwarded request did not get an answer from the owner."""

    def __init__(self, node: str, op: str, message: str) -> None:
        super().__init__(f"{op} forwarded to {node}: {message}")
        self.node = node
        self.op = op


class OwnerUnreachableError(ForwardError):
    """No node holds the owner's subject (it is gone): the request was not delivered."""


class OwnerLostError(ForwardError):
    """The owner went down (or this node's NATS connection broke) while the request was in
    flight: it may or may not have run."""


class ForwardTimeoutError(ForwardError):
    """The caller's timeout passed before the end of the answer: outcome unknown."""


class RemoteOpError(Exception):
    """The owner's handler raised: its type name, message and structured ``data`` (an
    exception with a ``to_wire()`` method sends that dict)."""

    def __init__(self, type_name: str, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message
        self.data = data or {}


class _Pending:
    __slots__ = ("node", "op", "queue")

    def __init__(self, node: str, op: str) -> None:
        self.node = node
        self.op = op
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()


class SessionService:
    """Serve registered ops to the cluster and forward ops to other nodes (see the module
    documentation). ``transport`` is the node's connected ``NatsTransport``; ``events``
    (the runtime's bus) tells which peers went down."""

    def __init__(self, transport: Any, events: Any = None) -> None:
        self.transport = transport
        self.node_id: str = transport.node_id
        self.prefix: str = transport.prefix
        self._events = events
        self._handlers: dict[str, tuple[Handler, bool]] = {}
        self._pending: dict[str, _Pending] = {}
        self._ids = itertools.count(1)
        self._sub: Any = None
        self._listen: Any = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._base = f"{self.prefix}.fwd.{self.node_id}."

    # ---------------------------------------------------------------- lifecycle

    def handle(self, op: str, handler: Handler, *, stream: bool = False) -> None:
        """Serve ``op``: ``handler(args)`` returns the answer (a coroutine), or, with
        ``stream``, is an async iterator of chunks (the answer is then ``None``)."""
        self._handlers[op] = (handler, stream)

    async def start(self) -> None:
        nc = self.transport.nc
        if nc is None:
            raise RuntimeError("the transport is not connected")
        self._sub = await nc.subscribe(f"{self._base}>", cb=self._on_msg)
        await flush_subscriptions(nc)
        if self._events is not None:
            self._listen = self._events.listen("cluster.node_*", self._on_node_event)

    async def close(self) -> None:
        if self._listen is not None:
            self._listen.close()
            self._listen = None
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception:  # the connection may be closed already
                pass
            self._sub = None
        for p in list(self._pending.values()):
            p.queue.put_nowait(("lost", "this node is stopping"))
        for t in list(self._tasks):
            t.cancel()

    async def _on_node_event(self, event: Event) -> None:
        if event.topic not in (topics.CLUSTER_NODE_DOWN, topics.CLUSTER_NODE_LEFT):
            return
        peer = event.data.get("peer")
        for p in list(self._pending.values()):
            if p.node == peer:
                p.queue.put_nowait(("lost", f"node down ({event.data.get('cause', 'left')})"))

    # ------------------------------------------------------------------ caller

    async def call(self, node: str, op: str, args: dict[str, Any], *, timeout: float) -> Any:
        """Run ``op`` on ``node`` and return its answer (see the module documentation)."""
        out: Any = None
        async for kind, value in self._exchange(node, op, args, timeout):
            if kind == "ok":
                out = value
        return out

    async def stream(
        self, node: str, op: str, args: dict[str, Any], *, timeout: float
    ) -> AsyncIterator[tuple[str, Any]]:
        """Run the streaming ``op`` on ``node``: ``("chunk", value)`` for each chunk, then
        ``("ok", answer)``; raises as ``call`` does."""
        async for item in self._exchange(node, op, args, timeout):
            yield item

    async def _exchange(
        self, node: str, op: str, args: dict[str, Any], timeout: float
    ) -> AsyncIterator[tuple[str, Any]]:
        nc = self.transport.nc
        if nc is None:
            raise OwnerLostError(node, op, "this node is not connected to NATS")
        rid = str(next(self._ids))
        pending = _Pending(node, op)
        self._pending[rid] = pending
        outcome = "error"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        started = time.perf_counter()
        try:
            with tracer.start_as_current_span(
                f"cluster.forward {op}", attributes={"peer": node, "op": op}
            ):
                headers: dict[str, str] = {}
                propagate.inject(headers)
                data = encode({"a": args, "t": timeout})
                try:
                    await nc.publish(
                        f"{self.prefix}.fwd.{node}.q.{op}",
                        data,
                        reply=f"{self._base}r.{rid}",
                        headers=headers or None,
                    )
                except Exception as e:  # not sent (connection closed, draining)
                    outcome = "unreachable"
                    raise OwnerUnreachableError(node, op, f"not sent: {e!r}") from e
                while True:
                    left = deadline - loop.time()
                    if left <= 0:
                        outcome = "timeout"
                        raise ForwardTimeoutError(node, op, f"no answer within {timeout} s")
                    try:
                        kind, value = await asyncio.wait_for(pending.queue.get(), left)
                    except TimeoutError:
                        continue
                    if kind == "chunk":
                        yield kind, value
                    elif kind == "ok":
                        outcome = "ok"
                        yield kind, value
                        return
                    elif kind == "err":
                        outcome = "error"
                        raise RemoteOpError(
                            str(value.get("type", "Error")),
                            str(value.get("message", "")),
                            value.get("data") if isinstance(value.get("data"), dict) else None,
                        )
                    elif kind == "noresp":
                        outcome = "unreachable"
                        raise OwnerUnreachableError(node, op, "no node holds its subject")
                    else:
                        outcome = "owner_lost"
                        raise OwnerLostError(node, op, str(value))
        finally:
            del self._pending[rid]
            FORWARDED.labels(op, outcome).inc()
            log.debug(
                "cluster_forwarded",
                op=op,
                peer=node,
                outcome=outcome,
                ms=round((time.perf_counter() - started) * 1000, 2),
            )

    # ------------------------------------------------------------------- owner

    async def _on_msg(self, msg: Msg) -> None:
        tail = msg.subject[len(self._base) :]
        if tail.startswith("r."):
            p = self._pending.get(tail[2:])
            if p is None:
                return  # the caller gave up
            if msg.headers and msg.headers.get("Status") == "503":
                p.queue.put_nowait(("noresp", None))
                return
            try:
                f = decode(msg.data)
            except DecodeError:
                log.warning("cluster_forward_frame_dropped", subject=msg.subject)
                return
            if not isinstance(f, dict):
                return
            if "c" in f:
                p.queue.put_nowait(("chunk", f["c"]))
            elif "ok" in f:
                p.queue.put_nowait(("ok", f["ok"]))
            else:
                err = f.get("err")
                p.queue.put_nowait(("err", err if isinstance(err, dict) else {}))
            return
        if not tail.startswith("q.") or not msg.reply:
            return
        task = asyncio.get_running_loop().create_task(self._serve(tail[2:], msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, op: str, msg: Msg) -> None:
        nc = self.transport.nc
        reply = msg.reply
        ctx = propagate.extract(msg.headers) if msg.headers else None
        outcome = "ok"
        with tracer.start_as_current_span(
            f"cluster.serve {op}", context=ctx, attributes={"op": op}
        ):
            try:
                f = decode(msg.data)
                args = f.get("a") if isinstance(f, dict) else None
                if not isinstance(args, dict):
                    raise ValueError("malformed forwarded request")
                found = self._handlers.get(op)
                if found is None:
                    raise LookupError(f"no such op {op!r}")
                handler, streaming = found
                if streaming:
                    gen = handler(args)
                    assert inspect.isasyncgen(gen)
                    async for value in gen:
                        await nc.publish(reply, encode({"c": value}))
                    await nc.publish(reply, encode({"ok": None}))
                else:
                    value = await handler(args)  # type: ignore[misc]
                    await nc.publish(reply, encode({"ok": value}))
            except asyncio.CancelledError:
                raise
            except Exception as e:
                outcome = "error"
                data = None
                to_wire = getattr(e, "to_wire", None)
                if callable(to_wire):
                    try:
                        data = to_wire()
                    except Exception:
                        data = None
                err = {"type": type(e).__name__, "message": str(e)[:500], "data": data}
                try:
                    body = encode({"err": err})
                except EncodeError:
                    body = encode({"err": {**err, "data": None}})
                try:
                    await nc.publish(reply, body)
                except Exception as pe:  # the caller learns it from its own wait
                    log.warning("cluster_forward_reply_failed", op=op, error=repr(pe))
            finally:
                SERVED.labels(op, outcome).inc()
