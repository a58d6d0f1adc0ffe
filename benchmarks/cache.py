"""Shared cache benchmark: API-key verification and agent-definition lookup with and without
the Redis layer (``NETSUKE_CACHE_URL``), against the store.

What the layer changes for a node is where a lookup that its own memory does not hold is
answered: Redis (one ``MGET``) instead of the store (a SQL read and, for a key, a hash
compare). Each figure runs ``CONCURRENCY`` callers looping over ``KEYS`` distinct keys (or
definitions), each lookup after dropping the entry from the node's memory, so every lookup
is such a miss: with the layer it is answered by Redis (filled once), without it by the
store (the floor column). The store is SQLite (WAL, ``synchronous=FULL``) on this machine's
disk; Redis is a local ``redis-server`` on loopback.

Also (informational): a verification answered from the node's memory (the hot path, the
same code with or without the layer), and the time a revocation takes to be confirmed by
every subscribed node (two layers on the same Redis: publish, both drop, both confirm).

Target: the layer is kept for a lookup only if it answers faster than the store (ratio > 1).

Usage: ``python benchmarks/cache.py [--quick] [--json]``.
"""

from __future__ import annotations

import sys

# benchmarks/queue.py would shadow the standard library's ``queue``: keep this folder off the
# path while importing, and put it back for ``_harness`` (as queue.py does).
_HERE = sys.path.pop(0)

import asyncio  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from netsuke.api._auth import KeyCache  # noqa: E402
from netsuke.api._cache_layer import CacheLayer  # noqa: E402
from netsuke.api._definition_cache import CachedAgentRepository  # noqa: E402
from netsuke.observability import configure_logging  # noqa: E402
from netsuke.store import Store  # noqa: E402

sys.path.append(_HERE)
from _harness import Figure, loop_name, meta, parse_args, report  # noqa: E402
from _redis import missing, redis_server  # noqa: E402

CONCURRENCY = 16
KEYS = 200


async def keys_run(store: Store, layer: CacheLayer | None, secrets: list[str], n: int) -> float:
    """Verifications/s, each after dropping the key from the node's memory."""
    cache = KeyCache(store, layer=layer, touch_s=1e9)
    for s in secrets:
        assert await cache.verify(s) is not None  # warm (fills Redis with the layer)
    per = n // CONCURRENCY

    async def caller(c: int) -> None:
        for i in range(per):
            cache._entries.clear()
            assert await cache.verify(secrets[(c * per + i) % len(secrets)]) is not None

    start = time.perf_counter()
    await asyncio.gather(*(caller(c) for c in range(CONCURRENCY)))
    return per * CONCURRENCY / (time.perf_counter() - start)


async def local_run(store: Store, secrets: list[str], n: int) -> float:
    cache = KeyCache(store, touch_s=1e9, cache_s=3600)
    for s in secrets:
        await cache.verify(s)
    start = time.perf_counter()
    for i in range(n):
        await cache.verify(secrets[i % len(secrets)])
    return n / (time.perf_counter() - start)


async def agents_run(store: Store, layer: CacheLayer | None, names: list[str], n: int) -> float:
    """Head-version lookups/s, each after dropping the definition from the node's memory."""
    repo = CachedAgentRepository(store.agents, layer) if layer is not None else store.agents
    for name in names:
        await repo.get(name)
    per = n // CONCURRENCY

    async def caller(c: int) -> None:
        for i in range(per):
            if isinstance(repo, CachedAgentRepository):
                repo._entries.clear()
            await repo.get(names[(c * per + i) % len(names)])

    start = time.perf_counter()
    await asyncio.gather(*(caller(c) for c in range(CONCURRENCY)))
    return per * CONCURRENCY / (time.perf_counter() - start)


async def revoke_run(url: str, rounds: int) -> float:
    """Median ms for an invalidation to be confirmed by both subscribed nodes."""
    a = await CacheLayer.open(url)
    b = await CacheLayer.open(url)
    try:
        times = []
        for i in range(rounds):
            start = time.perf_counter()
            await a.invalidate("key", f"{i:08x}")
            times.append((time.perf_counter() - start) * 1000)
        return statistics.median(times)
    finally:
        await a.close()
        await b.close()


async def main() -> int:
    args = parse_args((__doc__ or "").split("\n")[0])
    loop = loop_name()
    configure_logging("warning")
    why = missing()
    if why is not None:
        print(f"cache benchmark skipped: {why}")
        return 0
    n, rounds = (4_000, 1) if args.quick else (20_000, 3)
    figures: list[Figure] = []
    with (
        tempfile.TemporaryDirectory(prefix="netsuke-bench-cache-") as tmp,
        redis_server(Path(tmp)) as url,
    ):
        if True:
            async with Store.open(f"sqlite+aiosqlite:///{Path(tmp) / 'cache.db'}") as store:
                secrets = [
                    (await store.api_keys.create(f"k{i}", "user")).secret for i in range(KEYS)
                ]
                names = [f"agent-{i}" for i in range(KEYS)]
                await store.agents.sync([{"name": x, "system_prompt": "p" * 200} for x in names])
                layer = await CacheLayer.open(url, ttl_s=3600)
                try:
                    best = {"kr": 0.0, "ks": 0.0, "ar": 0.0, "as": 0.0}
                    for _ in range(rounds):
                        best["kr"] = max(best["kr"], await keys_run(store, layer, secrets, n))
                        best["ks"] = max(best["ks"], await keys_run(store, None, secrets, n))
                        best["ar"] = max(best["ar"], await agents_run(store, layer, names, n))
                        best["as"] = max(best["as"], await agents_run(store, None, names, n))
                    local = await local_run(store, secrets, n * 10)
                finally:
                    await layer.close()
            revoke_ms = await revoke_run(url, 50 if args.quick else 200)
    for name, value, floor, unit in (
        ("key_verify_miss_redis", best["kr"], best["ks"], "verifications/s"),
        ("agent_lookup_miss_redis", best["ar"], best["as"], "lookups/s"),
    ):
        figures.append(
            Figure(
                name,
                value,
                unit,
                floor=floor,
                floor_label="the store (SQLite), no cache layer",
                target="> store (ratio > 1): keep the layer",
                met=value > floor,
            )
        )
    figures.append(Figure("key_verify_local_hit", local, "verifications/s", target="informational"))
    figures.append(
        Figure(
            "revocation_confirmed_2_nodes",
            revoke_ms,
            "ms (median)",
            higher_is_better=False,
            target="informational",
        )
    )
    extra = meta(loop)
    extra.update(concurrency=CONCURRENCY, distinct_keys=KEYS, lookups=n, rounds=rounds)
    report("shared cache", figures, as_json=args.json, extra=extra)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
