"""Agent definitions (head versions) through the shared cache (``NETSUKE_CACHE_URL``).

``cache_definitions(store, layer)`` puts a ``CachedAgentRepository`` in ``store.agents``: its
``get(name)`` (the current version) answers from this node's memory, else from Redis, else
from the store (and fills both); every write through it (create, update, rollback, delete,
sync) invalidates the names it touched on every node once committed. Reads of a given
version go to the store (versions are immutable; they are rarely read). While the cache's
subscription is down every ``get`` reads the store (see ``_cache_layer``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from netsuke.store import AgentDefinition, AgentDraft, AgentRepository, Store, SyncResult

from ._cache_layer import CACHE_REQUESTS, CacheLayer

__all__ = ["CachedAgentRepository", "cache_definitions"]


class CachedAgentRepository(AgentRepository):
    """``AgentRepository`` over the same database, with head versions cached."""

    def __init__(self, inner: AgentRepository, layer: CacheLayer) -> None:
        super().__init__(inner._db)
        self.layer = layer
        self._entries: dict[str, tuple[float, AgentDefinition]] = {}
        layer.on_invalidate("agent", self._forget)
        layer.on_reset(self._entries.clear)

    def _forget(self, name: str) -> None:
        self._entries.pop(name, None)

    def _keep(self, name: str, definition: AgentDefinition, generation: int) -> None:
        layer = self.layer
        if layer.live and layer.generation == generation:
            if len(self._entries) > 10_000:
                self._entries.clear()
            self._entries[name] = (time.monotonic() + layer.ttl_s, definition)

    async def get(self, name: str, version: int | None = None) -> AgentDefinition:
        if version is not None:
            return await super().get(name, version)
        layer = self.layer
        if layer.live:
            hit = self._entries.get(name)
            if hit is not None and hit[0] > time.monotonic():
                CACHE_REQUESTS.labels("agent", "hit_local").inc()
                return hit[1]
        generation = layer.generation
        shared = await layer.read("agent", name)
        if shared is not None and shared[0] is not None:
            definition = AgentDefinition.model_validate(shared[0])
            CACHE_REQUESTS.labels("agent", "hit_shared").inc()
            self._keep(name, definition, generation)
            return definition
        CACHE_REQUESTS.labels("agent", "miss" if shared is not None else "bypass").inc()
        definition = await super().get(name)  # NotFoundError: nothing is cached
        if shared is not None:
            await layer.fill("agent", name, definition.model_dump(mode="json"), shared[1])
        self._keep(name, definition, generation)
        return definition

    async def _changed(self, *names: str) -> None:
        for name in names:
            await self.layer.invalidate("agent", name)

    async def create(
        self, draft: AgentDraft | Mapping[str, Any], *, actor: str | None = None, comment: str = ""
    ) -> AgentDefinition:
        saved = await super().create(draft, actor=actor, comment=comment)
        await self._changed(saved.name)
        return saved

    async def update(
        self,
        draft: AgentDraft | Mapping[str, Any],
        *,
        expected_version: int,
        actor: str | None = None,
        comment: str = "",
    ) -> AgentDefinition:
        saved = await super().update(
            draft, expected_version=expected_version, actor=actor, comment=comment
        )
        await self._changed(saved.name)
        return saved

    async def rollback(
        self,
        name: str,
        to_version: int,
        *,
        expected_version: int | None = None,
        actor: str | None = None,
    ) -> AgentDefinition:
        saved = await super().rollback(
            name, to_version, expected_version=expected_version, actor=actor
        )
        await self._changed(name)
        return saved

    async def delete(self, name: str, *, expected_version: int, actor: str | None = None) -> None:
        await super().delete(name, expected_version=expected_version, actor=actor)
        await self._changed(name)

    async def sync(
        self,
        drafts: Sequence[AgentDraft | Mapping[str, Any]],
        *,
        actor: str | None = None,
        comment: str = "sync",
        sources: Sequence[str] | None = None,
    ) -> SyncResult:
        result = await super().sync(drafts, actor=actor, comment=comment, sources=sources)
        await self._changed(*result["created"], *result["updated"])
        return result


def cache_definitions(store: Store, layer: CacheLayer) -> CachedAgentRepository:
    """Route ``store.agents`` through the shared cache; returns the cached repository."""
    cached = CachedAgentRepository(store.agents, layer)
    store.agents = cached
    return cached
