"""Who is calling: API keys with roles, a short verification cache, and per-key rate limits.

Rules:

* A key is sent as ``Authorization: Bearer nsk_...`` (or ``X-API-Key``). The dashboard's
  browser sends it as the ``netsuke_key`` cookie (HttpOnly, SameSite=Strict), accepted for
  safe methods (GET, HEAD), the events WebSocket, and for a mutation only when it carries
  ``X-Netsuke-Dashboard: 1`` and an ``Origin`` naming this server (the dashboard's own
  scripts; a cross-site form cannot set the header: no CSRF). See ``deps.cookie_allowed``.
* Roles are ordered ``user < operator < admin``: an endpoint needing ``operator`` admits
  admins. A ``user`` key acts as the user named by the key (``Principal.user_id`` is the key's
  name) and sees and touches only that user's sessions; operators and admins act for any
  user (``Principal.may_act_for``).
* **What a key creates belongs to the key, not to its name.** Tasks and functions record
  their owner as ``Principal.owner_id`` (``<name>:<prefix>``; the prefix is the key's
  immutable id, 8 hex characters, unique), and idempotency keys are scoped by the prefix
  (``Principal.scope``). A key named ``alice:x`` or named like an operator's key therefore
  never reaches another key's tasks, functions or idempotent replies; a new key for the same
  user starts with none of the old key's tasks and functions (an operator still sees all).
* A verified key is cached for ``cache_s`` seconds (default 5) so a request costs no database
  read; revoking through this node drops it from the cache at once, other nodes within
  ``cache_s``. Concurrent requests with the same key share one verification (when the entry
  expires under load, one read refreshes it, not one per request in flight).
* With the shared cache (``NETSUKE_CACHE_URL``, ``_cache_layer``) a verified key is kept for
  the layer's ``ttl_s`` here and in Redis, and a key revoked through any node is refused by
  every node at once (pub/sub invalidation); while Redis is down every verification reads
  the store, so a revoked key is never accepted.
* A key's ``last_used_at`` is written at most once per ``touch_s`` seconds (default 60) per
  key and node, not once per request: ``keys ls`` shows it to within a minute.
* Each key has a token bucket: ``burst`` requests at once, refilled at ``per_minute``/60 per
  second. An empty bucket answers 429 with ``Retry-After`` (whole seconds, at least 1).
* A request that fails authentication (no key, an unknown or revoked key) takes a token from
  its **client address's** bucket (``anonymous_rate_limit_per_minute``/``_burst``); with the
  bucket empty it is answered 429 (``Retry-After``) instead of 401. A valid key is never
  limited by its address. Each failure counts in
  ``netsuke_api_auth_failures_total{reason="missing"|"invalid"|"limited"}`` and is logged as
  ``api.auth_failed`` at most once a second (with how many were not logged since), never
  as an audit row: anonymous requests change nothing, and one client must not make the node
  write and fsync a row per request.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from dataclasses import dataclass

from prometheus_client import Counter

from netsuke.observability import REGISTRY, get_logger
from netsuke.store import ApiKey, ApiKeyRepository, Role, Store, StoreError

from ._cache_layer import CACHE_REQUESTS, CacheLayer

__all__ = [
    "AUTH_FAILURES",
    "ROLE_RANK",
    "FailureLog",
    "InvalidatingApiKeys",
    "KeyCache",
    "Principal",
    "RateLimiter",
]

AUTH_FAILURES = Counter(
    "netsuke_api_auth_failures",
    "Requests that failed authentication: no key (missing), an unknown or revoked key "
    "(invalid), or refused by the per-address limit (limited)",
    ["reason"],
    registry=REGISTRY,
)
log = get_logger("netsuke.api")

ROLE_RANK: dict[str, int] = {"user": 0, "operator": 1, "admin": 2}


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of one request."""

    prefix: str
    name: str
    role: Role

    @property
    def actor(self) -> str:
        """How the audit log names this caller: ``<key name>:<key prefix>``."""
        return f"{self.name}:{self.prefix}"

    @property
    def owner_id(self) -> str:
        """The id ownership records carry for what this key creates (tasks, functions):
        ``actor``, unambiguous because it ends with the key's unique, fixed-length prefix."""
        return self.actor

    def scope(self, key: str) -> str:
        """``key`` (an idempotency key) scoped to this API key: ``<prefix>:<key>``."""
        return f"{self.prefix}:{key}"

    def owns(self, owner_id: str | None) -> bool:
        """Whether this caller may reach a task or function recorded with ``owner_id``
        (operators and admins reach all)."""
        return self.role != "user" or owner_id == self.owner_id

    @property
    def user_id(self) -> str | None:
        """The user a ``user`` key acts as; ``None`` for operators and admins (any user)."""
        return self.name if self.role == "user" else None

    def has(self, role: Role) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]

    def may_act_for(self, user_id: str | None) -> bool:
        """Whether this caller may see or touch a session of ``user_id``."""
        return self.role != "user" or user_id == self.name


class KeyCache:
    """Verified keys by the sha256 of their secret, each kept ``cache_s`` seconds; with a
    shared cache ``layer``, kept ``layer.ttl_s`` while the layer is live and not trusted at
    all while it is down (see the module documentation)."""

    def __init__(
        self,
        store: Store,
        *,
        cache_s: float = 5.0,
        touch_s: float = 60.0,
        layer: CacheLayer | None = None,
    ) -> None:
        self._store = store
        self._cache_s = cache_s
        self._touch_s = touch_s
        self._entries: dict[str, tuple[float, Principal]] = {}
        self._touched: dict[str, float] = {}
        self._pending: dict[str, asyncio.Task[Principal | None]] = {}
        self.layer = layer
        if layer is not None:
            layer.on_invalidate("key", self.forget)
            layer.on_reset(self._entries.clear)

    async def verify(self, secret: str) -> Principal | None:
        digest = hashlib.sha256(secret.encode()).hexdigest()
        layer = self.layer
        if layer is None or layer.live:
            hit = self._entries.get(digest)
            now = time.monotonic()
            if hit is not None and hit[0] > now:
                if layer is not None:
                    CACHE_REQUESTS.labels("key", "hit_local").inc()
                await self._touch(hit[1].prefix, now)
                return hit[1]
        # One lookup per key at a time, in a task of its own: the requests waiting for it
        # share its answer, and a waiter that is cancelled does not cancel it for the others.
        lookup = self._pending.get(digest)
        if lookup is None:
            lookup = asyncio.ensure_future(self._lookup(digest, secret))
            self._pending[digest] = lookup
            lookup.add_done_callback(lambda done: self._settled(digest, done))
        return await asyncio.shield(lookup)

    def _settled(self, digest: str, lookup: asyncio.Task[Principal | None]) -> None:
        self._pending.pop(digest, None)
        if not lookup.cancelled():
            lookup.exception()  # retrieved even when every waiter was cancelled

    async def _lookup(self, digest: str, secret: str) -> Principal | None:
        layer = self.layer
        generation = layer.generation if layer is not None else 0
        prefix = _prefix_of(secret)
        shared = None
        if layer is not None and prefix is not None:
            shared = await layer.read("key", prefix)
            if shared is not None and isinstance(shared[0], dict):
                value = shared[0]
                if value.get("digest") == digest:
                    CACHE_REQUESTS.labels("key", "hit_shared").inc()
                    principal = Principal(prefix=prefix, name=value["name"], role=value["role"])
                    self._keep(digest, principal, generation)
                    await self._touch(prefix, time.monotonic())
                    return principal
        if layer is not None:
            CACHE_REQUESTS.labels("key", "miss" if shared is not None else "bypass").inc()
        key: ApiKey | None = await self._store.api_keys.verify(secret)
        if key is None:
            self._entries.pop(digest, None)
            return None
        principal = Principal(prefix=key.prefix, name=key.name, role=key.role)
        if layer is not None and shared is not None:
            value = {"digest": digest, "name": key.name, "role": key.role}
            await layer.fill("key", key.prefix, value, shared[1])
        self._keep(digest, principal, generation)
        await self._touch(key.prefix, time.monotonic())
        return principal

    def _keep(self, digest: str, principal: Principal, generation: int) -> None:
        """Remember a verified key, unless an invalidation arrived while it was read."""
        layer = self.layer
        if layer is not None and not (layer.live and layer.generation == generation):
            return
        if len(self._entries) > 10_000:
            self._entries.clear()
        ttl = layer.ttl_s if layer is not None else self._cache_s
        self._entries[digest] = (time.monotonic() + ttl, principal)

    async def _touch(self, prefix: str, now: float) -> None:
        """Record the key's use, at most once per ``touch_s``; a failure never fails a request."""
        last = self._touched.get(prefix)
        if last is not None and now - last < self._touch_s:
            return
        if len(self._touched) > 10_000:
            self._touched.clear()
        self._touched[prefix] = now
        try:
            await self._store.api_keys.touch(prefix)
        except StoreError as exc:
            log.warning("api.key_touch_failed", prefix=prefix, error=type(exc).__name__)

    def forget(self, prefix: str) -> None:
        """Drop a (revoked) key from the cache."""
        for digest, (_, principal) in list(self._entries.items()):
            if principal.prefix == prefix:
                del self._entries[digest]


def _prefix_of(secret: str) -> str | None:
    """The prefix of a well-formed ``nsk_<prefix>_<secret>`` key, else ``None``."""
    parts = secret.split("_", 2)
    if len(parts) != 3 or parts[0] != "nsk" or len(parts[1]) != 8:
        return None
    if not all(c in "0123456789abcdef" for c in parts[1]):
        return None
    return parts[1]


class InvalidatingApiKeys(ApiKeyRepository):
    """``ApiKeyRepository`` whose ``revoke`` also invalidates the key in the shared cache
    (on every node) once the revocation is committed. ``cache_keys`` installs it."""

    def __init__(self, inner: ApiKeyRepository, layer: CacheLayer) -> None:
        super().__init__(inner._db)
        self.layer = layer

    async def revoke(self, prefix: str, *, actor: str | None = None) -> ApiKey:
        revoked = await super().revoke(prefix, actor=actor)
        await self.layer.invalidate("key", prefix)
        return revoked


def cache_keys(store: Store, layer: CacheLayer) -> InvalidatingApiKeys:
    """Route ``store.api_keys`` revocations through the shared cache's invalidation."""
    keys = InvalidatingApiKeys(store.api_keys, layer)
    store.api_keys = keys
    return keys


class RateLimiter:
    """Token buckets per key prefix. ``per_minute=0`` disables limiting."""

    def __init__(self, per_minute: int, burst: int) -> None:
        self.per_minute = per_minute
        self.burst = burst
        self._rate = per_minute / 60.0
        self._buckets: dict[str, tuple[float, float]] = {}
        self.limited = 0

    def take(self, key: str) -> float:
        """Take one token for ``key``: 0.0 if allowed, else the seconds until one is free."""
        if self.per_minute <= 0:
            return 0.0
        now = time.monotonic()
        tokens, last = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self._rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        self.limited += 1
        return (1.0 - tokens) / self._rate

    @staticmethod
    def retry_after(wait: float) -> str:
        return str(max(1, math.ceil(wait)))


class FailureLog:
    """Failed authentications, logged as ``api.auth_failed`` at most once per ``interval_s``:
    the line names the last failure's reason and client and how many were ``suppressed``
    since the previous line (all of them are counted in ``AUTH_FAILURES``)."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self._next = 0.0
        self._suppressed = 0

    def failed(self, reason: str, client: str | None) -> None:
        AUTH_FAILURES.labels(reason).inc()
        now = time.monotonic()
        if now < self._next:
            self._suppressed += 1
            return
        self._next = now + self.interval_s
        suppressed, self._suppressed = self._suppressed, 0
        log.warning("api.auth_failed", reason=reason, client=client, suppressed=suppressed)
