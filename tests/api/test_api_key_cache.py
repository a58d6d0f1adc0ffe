"""The key cache: concurrent requests with one key share one verification (issue 21: when an
entry expires under load, one store read refreshes it, not one per request in flight)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from netsuke.api._auth import KeyCache

from .conftest import Live


@pytest.mark.timeout(30)
async def test_concurrent_verifications_of_one_key_share_one_store_read(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = live.node.store
    secret = await live.key("user", "ann")
    reads = 0
    verify = store.api_keys.verify

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal reads
        reads += 1
        return await verify(*args, **kwargs)

    monkeypatch.setattr(store.api_keys, "verify", counted)
    cache = KeyCache(store, cache_s=60)
    found = await asyncio.gather(*(cache.verify(secret) for _ in range(20)))
    assert reads == 1
    assert {p.name for p in found if p is not None} == {"ann"} and None not in found
    assert await cache.verify(secret) == found[0] and reads == 1  # cached
    wrong = await asyncio.gather(*(cache.verify(secret + "x") for _ in range(20)))
    assert wrong == [None] * 20 and reads == 2
