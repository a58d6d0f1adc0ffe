"""The shared cache (``NETSUKE_CACHE_URL``): two nodes on one store and one real
``redis-server``; a key revoked through one is refused by the other at once (pub/sub, not a
TTL); a definition changed through one is read by the other at once; with Redis down every
verification reads the store, so a revoked key is never served; a bad or unreachable URL is
one clear error at start."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path

import pytest

from netsuke.api import Settings
from netsuke.api._cache_layer import (
    CACHE_REQUESTS,
    CacheLayer,
    CacheUnavailableError,
    check_cache_url,
)
from netsuke.api._definition_cache import CachedAgentRepository
from netsuke.api._settings import SettingsError
from netsuke.store import AgentRepository, ApiKeyRepository
from tests.routing.conftest import need_redis, start_redis, stop_redis

from .conftest import Live

EXE = str(Path(sys.executable).parent / "netsuke")


@dataclass
class Redis:
    url: str
    port: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None

    def stop(self) -> None:
        assert self.proc is not None
        stop_redis(self.proc)
        self.proc = None

    def start(self) -> None:
        self.proc, _ = start_redis(self.workdir, port=self.port)


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[Redis]:
    """A throwaway ``redis-server`` the test may stop and start again on the same port."""
    need_redis()
    workdir = tmp_path / "redis"
    workdir.mkdir()
    proc, url = start_redis(workdir)
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    server = Redis(url, port, workdir, proc)
    try:
        yield server
    finally:
        if server.proc is not None:
            stop_redis(server.proc)


Factory = Callable[..., AbstractAsyncContextManager[Live]]


@contextlib.asynccontextmanager
async def two_nodes(live_factory: Factory, url: str) -> AsyncIterator[tuple[Live, Live]]:
    async with (
        live_factory(node="a", cache_url=url) as a,
        live_factory(node="b", cache_url=url, bootstrap_admin=False) as b,
    ):
        yield a, b


def count(kind: str, result: str) -> float:
    return CACHE_REQUESTS.labels(kind, result)._value.get()  # type: ignore[no-any-return]


async def until(check: Callable[[], bool], what: str) -> None:
    """Wait (at most 15 s) for a state the node reaches on its own; fail naming it."""
    for _ in range(1500):
        if check():
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"never reached: {what}")


def layer_of(live: Live) -> CacheLayer:
    layer = live.node.cache
    assert layer is not None
    return layer


@pytest.mark.timeout(60)
async def test_a_key_revoked_on_one_node_is_refused_by_the_other_at_once(
    live_factory: Factory, redis: Redis
) -> None:
    async with two_nodes(live_factory, redis.url) as (a, b):
        secret = await a.key("operator", "ops")
        on_a, on_b = a.client(secret), b.client(secret)
        assert (await on_a.get("/api/v1/sessions")).status_code == 200
        hits = count("key", "hit_shared")
        assert (await on_b.get("/api/v1/sessions")).status_code == 200
        assert count("key", "hit_shared") == hits + 1  # b found a's verification in Redis
        local = count("key", "hit_local")
        assert (await on_b.get("/api/v1/sessions")).status_code == 200
        assert count("key", "hit_local") == local + 1  # now in b's memory (60 s TTL)
        prefix = secret.split("_")[1]
        assert (await a.admin.delete(f"/api/v1/keys/{prefix}")).status_code == 200
        # no wait: the invalidation was published before the revocation was answered
        assert (await on_b.get("/api/v1/sessions")).status_code == 401
        assert (await on_a.get("/api/v1/sessions")).status_code == 401


@pytest.mark.timeout(60)
async def test_a_definition_changed_on_one_node_is_read_by_the_other_at_once(
    live_factory: Factory, redis: Redis
) -> None:
    async with two_nodes(live_factory, redis.url) as (a, b):
        agents_a, agents_b = a.node.store.agents, b.node.store.agents
        assert isinstance(agents_a, CachedAgentRepository)
        assert isinstance(agents_b, CachedAgentRepository)
        generation = layer_of(b).generation
        await agents_a.create({"name": "helper", "system_prompt": "one"})
        # (a lookup does not fill b's memory while an invalidation is on its way to b)
        await until(lambda: layer_of(b).generation > generation, "b saw the creation")
        assert (await agents_b.get("helper")).system_prompt == "one"
        local = count("agent", "hit_local")
        assert (await agents_b.get("helper")).version == 1
        assert count("agent", "hit_local") == local + 1
        await agents_a.update({"name": "helper", "system_prompt": "two"}, expected_version=1)
        seen = await agents_b.get("helper")
        assert (seen.version, seen.system_prompt) == (2, "two")
        # through the API too (PUT with If-Match), and deleted
        put = await a.admin.put(
            "/api/v1/agents/helper",
            json={"system_prompt": "three"},
            headers={"If-Match": '"2"'},
        )
        assert put.status_code == 200, put.text
        assert (await agents_b.get("helper")).system_prompt == "three"
        assert (await b.admin.get("/api/v1/agents/helper")).json()["version"] == 3


@pytest.mark.timeout(90)
async def test_with_redis_down_every_node_reads_the_store_and_never_serves_a_revoked_key(
    live_factory: Factory, redis: Redis
) -> None:
    async with two_nodes(live_factory, redis.url) as (a, b):
        secret = await a.key("operator", "ops")
        on_b = b.client(secret)
        for _ in range(2):
            assert (await on_b.get("/api/v1/sessions")).status_code == 200  # cached on b
        redis.stop()
        await until(lambda: not layer_of(a).live and not layer_of(b).live, "both layers down")
        bypass = count("key", "bypass")
        assert (await on_b.get("/api/v1/sessions")).status_code == 200  # from the store
        assert count("key", "bypass") == bypass + 1
        prefix = secret.split("_")[1]
        # the revocation commits; its invalidation waits for Redis (retried)
        assert (await a.admin.delete(f"/api/v1/keys/{prefix}")).status_code == 200
        assert (await on_b.get("/api/v1/sessions")).status_code == 401
        redis.start()
        await until(lambda: layer_of(a).live and layer_of(b).live, "both layers up again")
        await until(lambda: not layer_of(a)._pending, "the pending invalidation published")
        assert (await on_b.get("/api/v1/sessions")).status_code == 401
        fresh = await a.key("operator", "ops2")
        assert (await b.client(fresh).get("/api/v1/sessions")).status_code == 200


@pytest.mark.timeout(30)
async def test_a_verification_racing_a_revocation_never_writes_the_old_answer_back(
    redis: Redis,
) -> None:
    layer = await CacheLayer.open(redis.url)
    try:
        read = await layer.read("key", "0badc0de")
        assert read is not None and read[0] is None
        await layer.invalidate("key", "0badc0de")  # revoked after the store was read
        await layer.fill("key", "0badc0de", {"digest": "d"}, read[1])
        again = await layer.read("key", "0badc0de")
        assert again is not None and again[0] is None and again[1] != read[1]
        await layer.fill("key", "0badc0de", {"digest": "d"}, again[1])
        third = await layer.read("key", "0badc0de")
        assert third is not None and third[0] == {"digest": "d"}
    finally:
        await layer.close()


@pytest.mark.timeout(60)
async def test_a_bad_or_unreachable_cache_url_is_one_clear_error(
    tmp_path: Path, live_factory: Factory
) -> None:
    with pytest.raises((SettingsError, ValueError), match="redis://host"):
        Settings(cache_url="http://127.0.0.1:6379")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(CacheUnavailableError, match="cannot reach the cache's Redis at redis"):
        async with live_factory(cache_url=f"redis://127.0.0.1:{port}/0"):
            pass


@pytest.mark.timeout(60)
async def test_the_cache_is_off_by_default_and_its_url_is_checked(live_factory: Factory) -> None:
    assert Settings().cache_url is None
    async with live_factory() as node:
        assert node.node.cache is None
        assert type(node.node.store.agents) is AgentRepository  # no cached repository
        assert type(node.node.store.api_keys) is ApiKeyRepository
    assert check_cache_url("redis://h:6379/0?prefix=x") == "redis://h:6379/0?prefix=x"
    for bad, words in (
        ("redis:///0", "needs a host"),
        ("redis://h:99999/0", "port"),
        ("redis://h/0?ttl=3", "unknown cache URL option"),
    ):
        with pytest.raises(ValueError, match=words):
            check_cache_url(bad)


@pytest.mark.timeout(120)
def test_serve_with_a_bad_or_unreachable_cache_url_stops_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for url, words in (
        ("memcached://x", "cache_url"),
        (
            f"redis://127.0.0.1:{port}/0",
            f"cannot reach the cache's Redis at redis://127.0.0.1:{port}",
        ),
    ):
        r = subprocess.run(
            [EXE, "serve", "--port", "0", "--database-url", f"sqlite:///{tmp_path / 'c.db'}"],
            capture_output=True, text=True, timeout=50, cwd=tmp_path, check=False,
            env={**os.environ, "NETSUKE_CACHE_URL": url},
        )  # fmt: skip
        lines = r.stderr.strip().splitlines()
        assert lines and lines[-1].startswith("netsuke: error: "), (url, r.stderr)
        assert words in lines[-1] and "Traceback" not in r.stderr, (url, r.stderr)
        assert r.returncode == 2, r


@pytest.mark.timeout(60)
async def test_a_redis_that_stops_answering_is_noticed_by_the_pings(redis: Redis) -> None:
    """SIGSTOP: the connection stays open but nothing answers; three missed pings mark the
    layer down (nothing cached is trusted), and it is up again once Redis answers."""
    layer = await CacheLayer.open(redis.url, ping_s=0.2)
    try:
        assert layer.live
        assert redis.proc is not None
        redis.proc.send_signal(signal.SIGSTOP)
        try:
            await until(lambda: not layer.live, "the layer marked down")
            assert await layer.read("key", "0badc0de") is None  # not trusted: read the store
        finally:
            redis.proc.send_signal(signal.SIGCONT)
        await until(lambda: layer.live, "the layer up again")
    finally:
        await layer.close()
