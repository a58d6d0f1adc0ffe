"""``rt.call("name")``, ``send`` and ``cast`` resolve global names through each node's names
cache, invalidated over NATS: a real nats-server, a real store, the owner in another OS
process. Every wait polls with a generous deadline; nothing asserts wall-clock durations."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from netsuke.cluster import ClusterNode
from netsuke.cluster._names import NAME_CACHE
from netsuke.kernel import NoProcessError
from netsuke.manager.testing import NatsServer

from .helpers import Echo, eventually, prefix
from .procs import end
from .test_global_names import member, start_member, store_url

pytestmark = pytest.mark.timeout(240)

__all__ = ["store_url"]  # the fixture, imported for its use here


def cache_count(node: ClusterNode, result: str) -> float:
    return NAME_CACHE.labels(node.node_id, result)._value.get()


async def test_global_names_resolve_by_str_through_the_invalidated_cache(
    nats_server: NatsServer, store_url: str
) -> None:
    p = prefix()
    proc, ctl = await start_member(nats_server.url, p, "owner", store_url, 3.0)
    try:
        async with member(nats_server, p, "caller", store_url) as a:
            rt = a.runtime
            # Registered on the other node after this one joined: the first call misses the
            # cache and reads the store; the invalidation fills the cache meanwhile.
            held = await rt.call(ctl, ("own", "svc"), timeout=60)
            assert await rt.call("svc", "hi", timeout=30) == ("echo", "hi")
            await eventually(lambda: a.names.cached_names().get("svc") == held)
            misses = cache_count(a, "miss")
            hits = cache_count(a, "hit")
            for i in range(20):  # the hot path: no store round trip
                assert await rt.call("svc", i, timeout=30) == ("echo", i)
            assert cache_count(a, "miss") == misses
            assert cache_count(a, "hit") >= hits + 20
            assert rt.whereis("svc") == held
            assert rt.send("svc", "by-send") is True
            assert rt.cast("svc", "by-cast") is True
            # frames from one node to one process keep their order
            assert await rt.call("svc", "seen", timeout=30) == [
                ("info", "by-send"),
                ("cast", "by-cast"),
            ]

            # Order: this node's registry first, then the cluster's names.
            local = await rt.start(Echo, name="svc")
            assert local is not None
            assert rt.whereis("svc") == local
            await rt.stop(local)
            assert rt.whereis("svc") == held

            # The owner exits: its node releases the name and publishes it; the cache here
            # drops it, and a call by name is noproc (read from the store: not live).
            await rt.stop(held, timeout=30)
            await eventually(lambda: "svc" not in a.names.cached_names())
            assert rt.whereis("svc") is None
            with pytest.raises(NoProcessError):
                await rt.call("svc", "x", timeout=30)
            with pytest.raises(NoProcessError):
                rt.send("svc", "x")
            assert rt.cast("svc", "x") is False

            # A name of a node found down (SIGKILL) leaves the cache at once; while its lease
            # lasts the store still names it, but its node is down here: noproc, not a hang.
            held2 = await rt.call(ctl, ("own", "svc2"), timeout=60)
            assert await rt.call("svc2", "x", timeout=30) == ("echo", "x")
            await eventually(lambda: a.names.cached_names().get("svc2") == held2)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)
            await eventually(lambda: "svc2" not in a.names.cached_names())
            with pytest.raises(NoProcessError):
                await rt.call("svc2", "x", timeout=30)
            # Once the lease has run out, this node takes the name; a call by name reaches it.
            mine = await rt.start(Echo)
            assert mine is not None

            async def taken() -> bool:
                try:
                    await a.names.register("svc2", mine)
                except Exception:
                    return False
                return True

            for _ in range(600):
                if await taken():
                    break
                await asyncio.sleep(0.1)
            assert await rt.call("svc2", "y", timeout=30) == ("echo", "y")
            assert rt.whereis("svc2") == mine
    finally:
        end(proc)


async def test_names_invalidations_reach_listeners_and_bad_ones_are_dropped(
    nats_server: NatsServer,
) -> None:
    import nats

    from netsuke.cluster import join
    from netsuke.cluster._nats import DROPPED, NatsTransport

    from .helpers import FAST

    p = prefix()
    async with (
        join(nats_server.url, "alpha", transport_options={**FAST, "prefix": p}) as a,
        join(nats_server.url, "beta", transport_options={**FAST, "prefix": p}) as b,
    ):
        ta, tb = a.transport, b.transport
        assert isinstance(ta, NatsTransport) and isinstance(tb, NatsTransport)
        got: list[tuple[str, list[str] | None, str | None]] = []
        tb.names_listeners.append(lambda *args: got.append(args))
        ta.publish_names_changed(["x", "y"])
        ta.publish_names_changed(None, "gone#1")
        await eventually(lambda: len(got) == 2)
        assert got == [(a.node, ["x", "y"], None), (a.node, None, "gone#1")]

        def dropped(reason: str) -> float:
            return DROPPED.labels(b.node, reason)._value.get()

        before = dropped("undecodable"), dropped("malformed")
        nc = await nats.connect(nats_server.url)
        try:
            for junk in (b"\xff", b'{"k":"inv","n":"alpha#1","names":[1]}'):
                await nc.publish(f"{p}.names", junk)
            await nc.flush()
        finally:
            await nc.close()
        await eventually(
            lambda: dropped("undecodable") > before[0] and dropped("malformed") > before[1]
        )
        assert len(got) == 2  # nothing else reached the listener
