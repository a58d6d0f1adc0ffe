"""``NETSUKE_CACHE_URL``: Redis as a cache shared by the nodes of one store, invalidated
through pub/sub.

Off by default (each node keeps its own short-lived cache of verified keys; a key revoked on
one node is refused by the others within ``cache_s``, 5 s). With
``NETSUKE_CACHE_URL=redis://host:6379/0`` every node:

* keeps verified API keys (by key prefix, with the secret's sha256) and agent definitions
  (head versions) in Redis for ``cache_ttl_s`` [60 s], and in its own memory as long;
* subscribes to one channel (``<prefix>:inval``); a change made through any node (a key
  revoked, a definition created, updated, rolled back or deleted) is applied to the node's own
  cache, deleted from Redis and published; every subscribed node drops the entry and
  confirms (a push to the invalidation's reply list), and the change is answered once every
  subscriber has confirmed (or after ``ack_s`` [1 s], logged as ``cache.invalidation_
  unconfirmed``): when a revocation is answered, no connected node accepts the key any more.

Rules (what keeps a revoked key from being served):

* **Writes to the store first, then the invalidation.** The invalidation script bumps the
  entry's generation, deletes it and publishes, atomically. A node fills Redis only with a
  script that checks the generation it read before going to the store, so a verification
  racing a revocation never writes the old answer back; a node's own memory is filled only if
  no invalidation arrived while it read.
* **Redis down: the store answers.** The cache is trusted only while this node's
  subscription is up (its connection answers; a ping every ``ping_s`` [1 s], down after
  three missed). While it is down, nothing cached is served: every verification and lookup
  reads the store (still one read per key at a time), so a key revoked anywhere is refused.
  When the subscription is back the node's memory is emptied first (invalidations may have
  been missed). A failed Redis call is logged and answered from the store.
* **A change made where Redis cannot be reached** is committed to the store and its
  invalidation is retried in the background until Redis takes it (``cache.invalidation_
  pending`` logged); nodes still connected may serve the old entry until then, and never
  longer than ``cache_ttl_s``. Changes made directly in the database (not through a node)
  reach the nodes through the TTL only.

Unreachable at start, or a malformed URL: one clear line (``CacheUnavailableError``) and the
node does not start. Counters: ``netsuke_cache_requests_total{kind, result}`` (hit_local,
hit_shared, miss, bypass), ``netsuke_cache_invalidations_total{kind, origin}``; gauge
``netsuke_cache_up``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from prometheus_client import Counter, Gauge

from netsuke.observability import REGISTRY, get_logger

__all__ = ["CacheLayer", "CacheUnavailableError", "check_cache_url"]

log = get_logger("netsuke.cache")

CACHE_REQUESTS = Counter(
    "netsuke_cache_requests",
    "Lookups through the shared cache by kind (key, agent) and result: hit_local (this "
    "node's memory), hit_shared (Redis), miss (read from the store), bypass (Redis down: "
    "read from the store)",
    ["kind", "result"],
    registry=REGISTRY,
)
CACHE_INVALIDATIONS = Counter(
    "netsuke_cache_invalidations",
    "Invalidations applied by kind and origin (local: a change made through this node; "
    "remote: received through Redis pub/sub)",
    ["kind", "origin"],
    registry=REGISTRY,
)
CACHE_UP = Gauge(
    "netsuke_cache_up",
    "1 while this node's cache subscription to Redis is up (the shared cache is trusted)",
    registry=REGISTRY,
)

# KEYS: entry, generation. ARGV: generation read before the store, value, ttl (ms).
_FILL = """
local gen = redis.call('GET', KEYS[2]) or '0'
if gen ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""
# KEYS: entry, generation, channel. ARGV: message, generation ttl (ms). Returns the number
# of subscribers the message reached.
_INVALIDATE = """
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('DEL', KEYS[1])
return redis.call('PUBLISH', KEYS[3], ARGV[1])
"""

Handler = Callable[[str], None]


class CacheUnavailableError(RuntimeError):
    """The cache's Redis cannot be reached, or its URL is unusable."""


def check_cache_url(url: str | None) -> str | None:
    """``url`` if it is empty or a usable ``redis://``/``rediss://`` URL; ``ValueError``."""
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError("expected redis://host:port/db or rediss://... (or unset: no cache)")
    if not parts.hostname:
        raise ValueError("a redis:// cache URL needs a host (redis://host:6379/0)")
    try:
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError:
        raise ValueError("the cache URL's port is not a number in 0..65535") from None
    for key, _ in parse_qsl(parts.query):
        if key != "prefix":
            raise ValueError(f"unknown cache URL option {key!r} (known: prefix)")
    return url


def _redact(url: str) -> str:
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"


class CacheLayer:
    """One node's connection to the shared cache. Build it with ``open``; ``close`` it."""

    def __init__(
        self,
        client: Any,
        url: str,
        *,
        prefix: str = "{netsuke}:c",
        ttl_s: float = 60.0,
        ping_s: float = 1.0,
        ack_s: float = 1.0,
    ) -> None:
        self.client = client
        self.ack_s = ack_s
        self.url = url
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.ping_s = ping_s
        self.channel = f"{prefix}:inval"
        self.generation = 0
        """Bumped by every invalidation applied here and every change of ``live``: a lookup
        fills this node's memory only if it did not move while the lookup read."""
        self._live = False
        self._handlers: dict[str, list[Handler]] = {}
        self._reset: list[Callable[[], None]] = []
        self._listener: asyncio.Task[None] | None = None
        self._pending: list[tuple[str, str]] = []
        self._retry: asyncio.Task[None] | None = None
        self._fill = client.register_script(_FILL)
        self._invalidate = client.register_script(_INVALIDATE)
        self._connected = asyncio.Event()

    @classmethod
    async def open(cls, url: str, *, ttl_s: float = 60.0, ping_s: float = 1.0) -> CacheLayer:
        """Connect to ``url``, subscribe, and return once the subscription is up;
        ``CacheUnavailableError`` (one line) when Redis cannot be reached."""
        check_cache_url(url)
        try:
            import redis.asyncio as aioredis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
        except ImportError:
            raise CacheUnavailableError(
                "the Redis cache needs redis-py: pip install 'netsuke[redis]'"
            ) from None
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        prefix = query.pop("prefix", "{netsuke}:c")
        plain = urlunsplit(parts._replace(query=urlencode(query)))
        try:
            client = aioredis.Redis.from_url(
                plain,
                socket_connect_timeout=2,
                socket_timeout=2,
                max_connections=64,
                # no silent reconnection: a lost connection must be seen (see ``live``)
                retry=Retry(NoBackoff(), 0),
            )
        except ValueError as exc:
            raise CacheUnavailableError(f"bad cache URL: {exc}") from None
        try:
            await client.ping()
        except Exception as exc:
            await client.aclose()
            raise CacheUnavailableError(
                f"cannot reach the cache's Redis at {_redact(url)}: {type(exc).__name__}: {exc}"
            ) from None
        self = cls(client, url, prefix=prefix, ttl_s=ttl_s, ping_s=ping_s)
        self._listener = asyncio.create_task(self._listen(), name="netsuke-cache-listener")
        try:
            await asyncio.wait_for(self._connected.wait(), timeout=10)
        except TimeoutError:
            await self.close()
            raise CacheUnavailableError(
                f"cannot subscribe to the cache's Redis at {_redact(url)}"
            ) from None
        log.info("cache.opened", url=_redact(url), ttl_s=ttl_s)
        return self

    @property
    def live(self) -> bool:
        """Whether the subscription is up: only then is anything cached trusted."""
        return self._live

    def on_invalidate(self, kind: str, handler: Handler) -> None:
        """Call ``handler(id)`` for each invalidation of ``kind`` (local or received)."""
        self._handlers.setdefault(kind, []).append(handler)

    def on_reset(self, handler: Callable[[], None]) -> None:
        """Call ``handler()`` whenever the subscription goes down or comes back: every
        entry kept in memory must go (invalidations may have been missed)."""
        self._reset.append(handler)

    def _set_live(self, live: bool) -> None:
        if live == self._live:
            return
        self._live = live
        self.generation += 1
        CACHE_UP.set(1 if live else 0)
        for handler in self._reset:
            handler()
        if live:
            log.info("cache.up", url=_redact(self.url))
        else:
            log.warning("cache.down", url=_redact(self.url), detail="reading the store")

    def _apply(self, kind: str, ident: str, origin: str) -> None:
        self.generation += 1
        CACHE_INVALIDATIONS.labels(kind, origin).inc()
        for handler in self._handlers.get(kind, ()):
            handler(ident)

    def _keys(self, kind: str, ident: str) -> tuple[str, str]:
        return f"{self.prefix}:{kind}:{ident}", f"{self.prefix}:gen:{kind}:{ident}"

    async def read(self, kind: str, ident: str) -> tuple[Any, str] | None:
        """``(value, generation)`` from Redis (value ``None`` on a miss), or ``None`` when the
        cache is not to be trusted (down, or the call failed: read the store)."""
        if not self._live:
            return None
        entry, gen = self._keys(kind, ident)
        try:
            raw, generation = await self.client.mget(entry, gen)
        except Exception as exc:
            log.warning("cache.read_failed", kind=kind, error=type(exc).__name__)
            return None
        value = json.loads(raw) if raw is not None else None
        return value, (generation.decode() if generation is not None else "0")

    async def fill(self, kind: str, ident: str, value: Any, generation: str) -> None:
        """Keep ``value`` unless ``ident`` was invalidated since ``generation`` was read."""
        entry, gen = self._keys(kind, ident)
        try:
            await self._fill(
                keys=[entry, gen],
                args=[generation, json.dumps(value), int(self.ttl_s * 1000)],
            )
        except Exception as exc:
            log.warning("cache.fill_failed", kind=kind, error=type(exc).__name__)

    async def invalidate(self, kind: str, ident: str) -> None:
        """Drop ``ident`` here at once, then from Redis and every subscribed node (retried in
        the background while Redis cannot be reached)."""
        self._apply(kind, ident, "local")
        if not await self._publish(kind, ident):
            self._pending.append((kind, ident))
            log.error(
                "cache.invalidation_pending",
                kind=kind,
                id=ident,
                detail="Redis unreachable; retried until it takes it",
            )
            if self._retry is None or self._retry.done():
                self._retry = asyncio.create_task(self._retry_pending())

    async def _publish(self, kind: str, ident: str) -> bool:
        entry, gen = self._keys(kind, ident)
        token = secrets.token_hex(8)
        acks = f"{self.prefix}:ack:{token}"
        try:
            reached = int(
                await self._invalidate(
                    keys=[entry, gen, self.channel],
                    args=[f"{kind} {ident} {token}", int(max(self.ttl_s * 10, 86_400) * 1000)],
                )
            )
        except Exception as exc:
            log.warning("cache.publish_failed", kind=kind, error=type(exc).__name__)
            return False
        # wait until every subscriber reached has dropped the entry
        deadline = time.monotonic() + self.ack_s
        confirmed = 0
        try:
            while confirmed < reached:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                if await self.client.blpop([acks], timeout=max(left, 0.01)) is not None:
                    confirmed += 1
        except Exception as exc:
            log.warning("cache.ack_failed", kind=kind, error=type(exc).__name__)
        if confirmed < reached:
            log.warning(
                "cache.invalidation_unconfirmed",
                kind=kind,
                id=ident,
                reached=reached,
                confirmed=confirmed,
            )
        return True

    async def _confirm(self, token: str) -> None:
        acks = f"{self.prefix}:ack:{token}"
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.rpush(acks, 1)
            pipe.pexpire(acks, int(self.ack_s * 1000) + 10_000)
            await pipe.execute()
        except Exception as exc:
            log.warning("cache.confirm_failed", error=type(exc).__name__)

    async def _retry_pending(self) -> None:
        delay = 0.2
        while self._pending:
            await asyncio.sleep(delay)
            kind, ident = self._pending[0]
            if await self._publish(kind, ident):
                self._pending.pop(0)
                log.info("cache.invalidation_published", kind=kind, id=ident)
                delay = 0.2
            else:
                delay = min(delay * 2, 5.0)

    async def _listen(self) -> None:
        delay = 0.1
        while True:
            pubsub = self.client.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                last_pong = time.monotonic()
                next_ping = last_pong + self.ping_s
                while True:
                    msg = await pubsub.get_message(timeout=self.ping_s / 4)
                    now = time.monotonic()
                    if msg is not None:
                        kind = msg.get("type")
                        if kind == "subscribe":
                            if self._live:  # subscribed again: messages may be lost
                                self._set_live(False)
                            self._set_live(True)
                            self._connected.set()
                            delay = 0.1
                        elif kind == "message":
                            data = msg["data"]
                            text = data.decode() if isinstance(data, bytes) else str(data)
                            what, ident, token = [*text.split(" ", 2), "", ""][:3]
                            self._apply(what, ident, "remote")
                            if token:
                                await self._confirm(token)
                        elif kind == "pong":
                            last_pong = now
                    if now >= next_ping:
                        await pubsub.ping()
                        next_ping = now + self.ping_s
                    if now - last_pong > 3 * self.ping_s + 1:
                        raise ConnectionError("no answer to three pings")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._live:
                    log.warning("cache.subscription_lost", error=type(exc).__name__)
                self._set_live(False)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def close(self) -> None:
        for task in (self._listener, self._retry):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._live:
            self._live = False
            CACHE_UP.set(0)
        await self.client.aclose()
