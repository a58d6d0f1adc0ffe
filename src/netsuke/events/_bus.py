"""The event bus: typed events, topic-pattern subscriptions, producers that never block.

Semantics
---------
* ``publish(topic, **data)`` is synchronous, O(matching subscribers), never awaits and never
  raises because of a subscriber. It returns the ``Event`` it published.
* Each subscription owns a bounded buffer [``buffer=1000``]. When a slow subscriber's buffer is
  full, the **oldest** event in it is dropped (``overflow="drop_oldest"``, the default: a live
  view wants the newest state) or the new one is (``overflow="drop_newest"``). Either way the
  drop is counted on the subscription (``sub.dropped``), on the bus (``bus.dropped``) and in
  Prometheus (``netsuke_events_dropped_total``). A producer is never slowed by a subscriber.
* Patterns are shell globs on dotted topics (``"agent.*"``, ``"task.dead_lettered"``, ``"*"``);
  ``*`` matches across dots. Matching is cached per topic, so a publish costs a dict lookup
  plus one append per matching subscriber.
* Events are delivered to each subscriber in publish order. ``seq`` grows by one per publish
  on a bus; ``id`` is ``"{node}-{boot}-{seq}"``, where ``boot`` is drawn once per bus (the
  start time in milliseconds, hex, plus 16 random bits), so ids stay unique across restarts
  of a node (a webhook receiver can deduplicate on them) and sort by start time.
* ``listen(pattern, handler)`` runs ``handler(event)`` (sync or async) in a task of its own
  for each event, in order; an exception in a handler is logged and counted, and the listener
  keeps going. ``aclose()`` closes every subscription and awaits the listener tasks.

The catalogue of topics Netsuke itself publishes is ``TOPICS`` (``_topics.py``).
"""

from __future__ import annotations

import asyncio
import fnmatch
import inspect
import itertools
import re
import secrets
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from netsuke.observability import get_logger, register_collector

__all__ = ["Event", "EventBus", "Overflow", "Subscription", "SubscriptionClosed"]

log = get_logger("netsuke.events")

Overflow = Literal["drop_oldest", "drop_newest"]
Handler = Callable[["Event"], Awaitable[None] | None]

_TOPIC = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)*$")
_PATTERN = re.compile(r"^[a-z0-9_.*?\[\]!-]+$")


class SubscriptionClosed(Exception):
    """Raised by ``Subscription.get`` once the subscription is closed and drained."""


@dataclass(frozen=True, slots=True)
class Event:
    """One state change. ``data`` holds JSON-compatible values only."""

    topic: str
    data: Mapping[str, Any]
    node: str
    seq: int
    time: float = field(default_factory=time.time)
    boot: str = ""
    """The publishing bus's start token (see the module documentation)."""

    @property
    def id(self) -> str:
        return f"{self.node}-{self.boot}-{self.seq}" if self.boot else f"{self.node}-{self.seq}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for WebSocket and webhook payloads)."""
        return {
            "id": self.id,
            "topic": self.topic,
            "node": self.node,
            "seq": self.seq,
            "time": self.time,
            "data": dict(self.data),
        }


def check_topic(topic: str) -> str:
    if not isinstance(topic, str) or not _TOPIC.match(topic):
        raise ValueError(f"bad event topic {topic!r}: lowercase words joined by dots")
    return topic


def check_pattern(pattern: str) -> str:
    if not isinstance(pattern, str) or not pattern or not _PATTERN.match(pattern):
        raise ValueError(f"bad topic pattern {pattern!r}: a glob such as 'agent.*'")
    return pattern


class Subscription:
    """A bounded, ordered stream of the events whose topic matches ``pattern``.

    Use ``async for event in sub`` (ends when the subscription is closed), ``await sub.get()``
    or ``sub.get_nowait()``; ``close()`` (or ``async with``) unsubscribes.
    """

    __slots__ = (
        "__weakref__",
        "_bus",
        "_queue",
        "_waiter",
        "buffer",
        "closed",
        "delivered",
        "dropped",
        "overflow",
        "pattern",
    )

    def __init__(self, bus: EventBus, pattern: str, buffer: int, overflow: Overflow) -> None:
        self._bus = bus
        self.pattern = pattern
        self.buffer = buffer
        self.overflow = overflow
        self._queue: deque[Event] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.delivered = 0
        self.dropped = 0

    def _push(self, event: Event) -> None:
        q = self._queue
        if len(q) >= self.buffer:
            self.dropped += 1
            self._bus.dropped += 1
            if self.overflow == "drop_newest":
                return
            q.popleft()
        q.append(event)
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def pending(self) -> int:
        """Events buffered and not yet taken."""
        return len(self._queue)

    def get_nowait(self) -> Event | None:
        """The next buffered event, or ``None``."""
        if self._queue:
            self.delivered += 1
            return self._queue.popleft()
        return None

    async def get(self, timeout: float | None = None) -> Event:
        """The next event. ``SubscriptionClosed`` once closed and drained; ``TimeoutError``
        after ``timeout`` seconds."""
        while not self._queue:
            if self.closed:
                raise SubscriptionClosed(self.pattern)
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                if timeout is None:
                    await self._waiter
                else:
                    async with asyncio.timeout(timeout):
                        await self._waiter
            finally:
                self._waiter = None
        self.delivered += 1
        return self._queue.popleft()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        while True:
            try:
                yield await self.get()
            except SubscriptionClosed:
                return

    def close(self) -> None:
        """Unsubscribe. Buffered events can still be read; then iteration ends."""
        if self.closed:
            return
        self.closed = True
        self._bus._remove(self)
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<Subscription {self.pattern!r} pending={len(self._queue)} "
            f"dropped={self.dropped} closed={self.closed}>"
        )


class EventBus:
    """An in-process publish/subscribe bus. See the module documentation."""

    def __init__(self, node: str = "local", *, buffer: int = 1000) -> None:
        if buffer < 1:
            raise ValueError("buffer must be >= 1")
        self.node = node
        self.default_buffer = buffer
        self._subs: list[Subscription] = []
        self._routes: dict[str, tuple[Subscription, ...]] = {}
        self._seq = itertools.count(1)
        self.boot = f"{time.time_ns() // 1_000_000:x}{secrets.token_hex(2)}"
        self._listeners: set[asyncio.Task[None]] = set()
        self.published = 0
        self.dropped = 0
        self.handler_errors = 0
        _collector.buses.add(self)

    # --------------------------------------------------------------- publishing

    def publish(self, topic: str, /, **data: Any) -> Event:
        """Publish an event on ``topic`` with ``data``; returns it. Never blocks."""
        routes = self._routes.get(topic)
        if routes is None:
            routes = self._route(check_topic(topic))
        event = Event(topic, data, self.node, next(self._seq), time.time(), self.boot)
        self.published += 1
        for sub in routes:
            sub._push(event)
        return event

    def forward(self, event: Event) -> None:
        """Deliver an event published elsewhere (another node) to local subscribers, as is."""
        routes = self._routes.get(event.topic)
        if routes is None:
            routes = self._route(check_topic(event.topic))
        for sub in routes:
            sub._push(event)

    def _route(self, topic: str) -> tuple[Subscription, ...]:
        routes = tuple(s for s in self._subs if fnmatch.fnmatchcase(topic, s.pattern))
        if len(self._routes) > 10_000:
            self._routes.clear()
        self._routes[topic] = routes
        return routes

    # ------------------------------------------------------------- subscribing

    def subscribe(
        self, pattern: str = "*", *, buffer: int | None = None, overflow: Overflow = "drop_oldest"
    ) -> Subscription:
        """A new subscription to the topics matching ``pattern``."""
        check_pattern(pattern)
        size = self.default_buffer if buffer is None else buffer
        if size < 1:
            raise ValueError("buffer must be >= 1")
        if overflow not in ("drop_oldest", "drop_newest"):
            raise ValueError(f"overflow must be drop_oldest or drop_newest: {overflow!r}")
        sub = Subscription(self, pattern, size, overflow)
        self._subs.append(sub)
        self._routes.clear()
        return sub

    def _remove(self, sub: Subscription) -> None:
        try:
            self._subs.remove(sub)
        except ValueError:
            return
        self._routes.clear()

    def listen(
        self,
        pattern: str,
        handler: Handler,
        *,
        buffer: int | None = None,
        overflow: Overflow = "drop_oldest",
    ) -> Subscription:
        """Run ``handler(event)`` for each matching event in a task of its own; returns the
        subscription (close it to stop). Needs a running event loop."""
        sub = self.subscribe(pattern, buffer=buffer, overflow=overflow)
        task = asyncio.get_running_loop().create_task(self._pump(sub, handler))
        self._listeners.add(task)
        task.add_done_callback(self._listeners.discard)
        return sub

    async def _pump(self, sub: Subscription, handler: Handler) -> None:
        async for event in sub:
            try:
                out = handler(event)
                if inspect.isawaitable(out):
                    await out
            except Exception as exc:
                self.handler_errors += 1
                log.warning(
                    "event_handler_failed",
                    pattern=sub.pattern,
                    topic=event.topic,
                    error=repr(exc),
                )

    def subscriptions(self) -> list[Subscription]:
        return list(self._subs)

    async def aclose(self) -> None:
        """Close every subscription and wait for the listeners to finish."""
        for sub in list(self._subs):
            sub.close()
        tasks = list(self._listeners)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


class _BusCollector:
    def __init__(self) -> None:
        self.buses: weakref.WeakSet[EventBus] = weakref.WeakSet()

    def collect(self) -> Iterable[Metric]:
        pub = CounterMetricFamily("netsuke_events_published", "Events published", labels=["node"])
        drop = CounterMetricFamily(
            "netsuke_events_dropped",
            "Events dropped because a subscriber's buffer was full",
            labels=["node"],
        )
        errs = CounterMetricFamily(
            "netsuke_event_handler_errors", "Event listener handler failures", labels=["node"]
        )
        subs = GaugeMetricFamily(
            "netsuke_event_subscriptions", "Open subscriptions", labels=["node"]
        )
        for bus in list(self.buses):
            pub.add_metric([bus.node], bus.published)
            drop.add_metric([bus.node], bus.dropped)
            errs.add_metric([bus.node], bus.handler_errors)
            subs.add_metric([bus.node], len(bus._subs))
        return [pub, drop, errs, subs]

    def describe(self) -> Iterable[Metric]:
        return []


_collector = _BusCollector()
register_collector(_collector)
