"""``NETSUKE_QUEUE_URL``: which backend a node's task queue runs on.

* ``sql`` [default]: the store's ``tasks`` table (``SqlTaskBackend``);
* ``redis://[:password@]host:port/db`` or ``rediss://...``: Redis Streams
  (``RedisTaskBackend``); ``?durability=warn`` opens a server without ``appendfsync always``
  (logged as an error) instead of refusing it; ``?prefix=`` sets the key prefix
  [``{netsuke}:q``].

A malformed URL is refused when the settings load (``check_queue_url``); an unreachable
broker or one that is not durable stops the start with one line (``QueueUnavailableError``,
``QueueDurabilityError``). JetStream (``nats://``) is not implemented yet and refused as such.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from netsuke.events import EventBus
from netsuke.store import Store

from ._queue import TaskQueue
from ._redis_backend import Durability, RedisTaskBackend

__all__ = ["check_queue_url", "open_queue"]

_OPTIONS = frozenset({"durability", "prefix"})


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
        raise ValueError("the JetStream queue (nats://) is not implemented yet; use sql or redis")
    raise ValueError("expected sql, redis://host:port/db or rediss://...")


async def open_queue(url: str, store: Store, *, events: EventBus | None = None) -> TaskQueue:
    """The task queue ``url`` names (see the module documentation)."""
    check_queue_url(url)
    if url == "sql":
        return TaskQueue.sql(store, events=events)
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    options = {k: query.pop(k) for k in list(query) if k in _OPTIONS}
    plain = urlunsplit(parts._replace(query=urlencode(query)))
    durability: Durability = "warn" if options.get("durability") == "warn" else "require"
    backend = await RedisTaskBackend.open(
        plain, prefix=options.get("prefix", "{netsuke}:q"), durability=durability
    )
    return TaskQueue(backend, events=events)
