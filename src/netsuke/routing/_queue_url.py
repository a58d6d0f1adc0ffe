"""``NETSUKE_QUEUE_URL``: which backend a node's task queue runs on.

* ``sql`` [default]: the store's ``tasks`` table (``SqlTaskBackend``);
* ``redis://[:password@]host:port/db`` or ``rediss://...``: Redis Streams
  (``RedisTaskBackend``); ``?durability=warn`` opens a server without ``appendfsync always``
  (logged as an error) instead of refusing it; ``?prefix=`` sets the key prefix
  [``{netsuke}:q``];
* ``nats://[user:password@]host:port``: NATS JetStream (``JetStreamTaskBackend``);
  ``?durability=warn`` opens a server without ``sync_interval: always`` (logged as an error)
  instead of refusing it; ``?monitor=http://host:8222`` where the server's ``/varz`` says so
  [``http://<host>:8222``]; ``?prefix=`` its streams' and bucket's prefix [``NETSUKE``];
  ``?ack_wait=`` seconds [``30``], the consumers' redelivery timer; ``?work_streams=`` 1..16
  for a new prefix [``4``] (an existing prefix keeps its own; another number is refused).

A malformed URL is refused when the settings load (``check_queue_url``); an unreachable
broker or one that is not durable stops the start with one line (``QueueUnavailableError``,
``QueueDurabilityError``).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from netsuke.events import EventBus
from netsuke.store import Store

from ._jetstream_backend import JetStreamTaskBackend
from ._queue import TaskQueue
from ._redis_backend import Durability, RedisTaskBackend

__all__ = ["check_queue_url", "open_queue"]

_OPTIONS = frozenset({"durability", "prefix"})
_NATS_OPTIONS = frozenset({"durability", "prefix", "monitor", "ack_wait", "work_streams"})


def check_queue_url(url: str) -> str:
    """``url`` if it names a supported queue backend; ``ValueError`` saying why not."""
    if url == "sql":
        return url
    parts = urlsplit(url)
    if parts.scheme in ("redis", "rediss"):
        if not parts.hostname:
            raise ValueError("a redis:// queue URL needs a host (redis://host:6379/0)")
        try:
            parts.port  # noqa: B018  (raises on a bad port)
        except ValueError:
            raise ValueError("the queue URL's port is not a number in 0..65535") from None
        for key, value in parse_qsl(parts.query):
            if key == "durability" and value not in ("require", "warn"):
                raise ValueError("durability must be require or warn")
        return url
    if parts.scheme == "nats":
        if not parts.hostname:
            raise ValueError("a nats:// queue URL needs a host (nats://host:4222)")
        try:
            parts.port  # noqa: B018  (raises on a bad port)
        except ValueError:
            raise ValueError("the queue URL's port is not a number in 0..65535") from None
        for key, value in parse_qsl(parts.query):
            if key not in _NATS_OPTIONS:
                raise ValueError(f"unknown nats:// queue option {key!r}")
            if key == "durability" and value not in ("require", "warn"):
                raise ValueError("durability must be require or warn")
            if key == "prefix" and not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", value):
                raise ValueError("prefix must be 1..32 letters, digits, _ or -")
            if key == "ack_wait":
                try:
                    seconds = float(value)
                except ValueError:
                    seconds = 0.0
                if not 0 < seconds <= 86400:
                    raise ValueError("ack_wait must be a number of seconds in (0, 86400]")
            if key == "work_streams" and not (value.isdigit() and 1 <= int(value) <= 16):
                raise ValueError("work_streams must be a whole number in 1..16")
            if key == "monitor" and urlsplit(value).scheme not in ("http", "https"):
                raise ValueError("monitor must be an http:// or https:// URL")
        return url
    raise ValueError("expected sql, redis://host:port/db, rediss://... or nats://host:port")


async def open_queue(url: str, store: Store, *, events: EventBus | None = None) -> TaskQueue:
    """The task queue ``url`` names (see the module documentation)."""
    check_queue_url(url)
    if url == "sql":
        return TaskQueue.sql(store, events=events)
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    known = _NATS_OPTIONS if parts.scheme == "nats" else _OPTIONS
    options = {k: query.pop(k) for k in list(query) if k in known}
    plain = urlunsplit(parts._replace(query=urlencode(query)))
    durability: Durability = "warn" if options.get("durability") == "warn" else "require"
    if parts.scheme == "nats":
        jetstream = await JetStreamTaskBackend.open(
            urlunsplit(parts._replace(query="")),
            prefix=options.get("prefix", "NETSUKE"),
            durability=durability,
            monitor=options.get("monitor"),
            ack_wait=float(options.get("ack_wait", 30.0)),
            work_streams=int(options["work_streams"]) if "work_streams" in options else None,
        )
        return TaskQueue(jetstream, events=events)
    backend = await RedisTaskBackend.open(
        plain, prefix=options.get("prefix", "{netsuke}:q"), durability=durability
    )
    return TaskQueue(backend, events=events)
