"""Who is calling: API keys with roles, a short verification cache, and per-key rate limits.

Rules:

* A key is sent as ``Authorization: Bearer nsk_...`` (or ``X-API-Key``). The dashboard's
  browser sends it as the ``netsuke_key`` cookie (HttpOnly, SameSite=Strict), accepted only
  for safe methods (GET, HEAD) and the events WebSocket, so a cookie can never mutate
  anything (no CSRF).
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
  ``cache_s``.
* A key's ``last_used_at`` is written at most once per ``touch_s`` seconds (default 60) per
  key and node, not once per request: ``keys ls`` shows it to within a minute.
* Each key has a token bucket: ``burst`` requests at once, refilled at ``per_minute``/60 per
  second. An empty bucket answers 429 with ``Retry-After`` (whole seconds, at least 1).
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

from netsuke.observability import get_logger
from netsuke.store import ApiKey, Role, Store, StoreError

__all__ = ["ROLE_RANK", "KeyCache", "Principal", "RateLimiter"]

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
    """Verified keys by the sha256 of their secret, each kept ``cache_s`` seconds."""

    def __init__(self, store: Store, *, cache_s: float = 5.0, touch_s: float = 60.0) -> None:
        self._store = store
        self._cache_s = cache_s
        self._touch_s = touch_s
        self._entries: dict[str, tuple[float, Principal]] = {}
        self._touched: dict[str, float] = {}

    async def verify(self, secret: str) -> Principal | None:
        digest = hashlib.sha256(secret.encode()).hexdigest()
        now = time.monotonic()
        hit = self._entries.get(digest)
        if hit is not None and hit[0] > now:
            await self._touch(hit[1].prefix, now)
            return hit[1]
        key: ApiKey | None = await self._store.api_keys.verify(secret)
        if key is None:
            self._entries.pop(digest, None)
            return None
        principal = Principal(prefix=key.prefix, name=key.name, role=key.role)
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[digest] = (now + self._cache_s, principal)
        await self._touch(key.prefix, now)
        return principal

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
