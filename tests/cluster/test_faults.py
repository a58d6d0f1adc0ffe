"""Faults with real node OS processes: SIGKILL, SIGSTOP past ``down_after`` then SIGCONT, a node
cut off NATS by a TCP proxy, and a nats-server restart on the same port.

Three nodes: the test's own (``alpha``), a victim and a survivor (OS processes, each behind its
own proxy). For each fault: every link, monitor and ``monitor_node`` between the pairs that were
cut fires exactly once with ``noconnection``, on both sides (the cut-off side too); nothing fires
again after healing; the survivors keep calling each other during and after; pids of a killed
node never reach its successor. Waits are conditions with generous deadlines, never durations.
"""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from netsuke.cluster import join
from netsuke.kernel import NoProcessError, ProcessExitedError
from netsuke.manager.testing import NatsServer

from . import faults as F
from .helpers import FAST, prefix

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]


async def _trio(url: str, port: int, p: str) -> tuple[F.Node, F.Node]:
    victim, survivor = await asyncio.gather(
        F.spawn(port, p, "victim"), F.spawn(port, p, "survivor")
    )
    return victim, survivor


async def _cut_and_heal(mode: str, nats_server: NatsServer) -> None:
    p = prefix()
    victim, survivor = await _trio(nats_server.url, nats_server.port, p)
    try:
        async with join(nats_server.url, "alpha", transport_options={**FAST, "prefix": p}) as a:
            me = await F.local(a, "alpha")
            nodes = [me, victim, survivor]
            await F.wait_joined(a, nodes)
            await F.wire(a, nodes)
            assert victim.proc is not None and victim.proxy is not None
            if mode == "sigstop":
                os.kill(victim.proc.pid, signal.SIGSTOP)
                victim.stopped = True
            elif mode == "blackhole":
                victim.proxy.blackhole()
            else:
                victim.proxy.drop()
            # The survivors see the victim go down, once, and keep serving each other.
            await F.wait_seen(a, me, F.expected(me, [victim]))
            await F.wait_seen(a, survivor, F.expected(survivor, [victim]))
            assert await F.via(a, me, survivor) == ("echo", "ping")
            assert await F.via(a, survivor, me) == ("echo", "ping")
            with pytest.raises((NoProcessError, ProcessExitedError)):
                await a.call(victim.rec, "while cut off", timeout=30)
            if mode == "sigstop":
                os.kill(victim.proc.pid, signal.SIGCONT)
                victim.stopped = False
            else:
                victim.proxy.heal()
            # The victim fired its side too (it was cut off from both), then everybody is
            # up again; a settle period later nothing has fired twice.
            await F.wait_seen(a, victim, F.expected(victim, [me, survivor]), timeout=90)
            await F.wait_joined(a, nodes, timeout=90)
            await asyncio.sleep(F.SETTLE)
            for n in nodes:
                others = [victim] if n is not victim else [me, survivor]
                assert await F.take(a, n) == F.expected(n, others)
            # Links and monitors made after healing work normally (no stray noconnection).
            await F.wire(a, nodes)
            assert await F.via(a, me, victim) == ("echo", "ping")
            await asyncio.sleep(F.SETTLE)
            for n in nodes:
                assert await F.take(a, n) == []
    finally:
        if victim.proc is not None and victim.stopped:
            os.kill(victim.proc.pid, signal.SIGCONT)
        F.reap([victim, survivor])
        for n in (victim, survivor):
            if n.proxy is not None:
                await n.proxy.close()


async def test_sigstop_past_down_after_then_sigcont(nats_server: NatsServer) -> None:
    await _cut_and_heal("sigstop", nats_server)


async def test_node_cut_off_by_a_blackholing_proxy_then_healed(nats_server: NatsServer) -> None:
    await _cut_and_heal("blackhole", nats_server)


async def test_node_cut_off_by_a_dropping_proxy_then_healed(nats_server: NatsServer) -> None:
    await _cut_and_heal("drop", nats_server)


async def test_sigkill_then_restart_never_delivers_to_the_successor(
    nats_server: NatsServer,
) -> None:
    p = prefix()
    victim, survivor = await _trio(nats_server.url, nats_server.port, p)
    try:
        async with join(nats_server.url, "alpha", transport_options={**FAST, "prefix": p}) as a:
            me = await F.local(a, "alpha")
            nodes = [me, victim, survivor]
            await F.wait_joined(a, nodes)
            await F.wire(a, nodes)
            old_rec, old_echo = victim.rec, victim.echo
            predecessor = F.Node("victim")
            predecessor.node, predecessor.rec = victim.node, victim.rec
            F.kill(victim)
            await F.wait_seen(a, me, F.expected(me, [victim]))
            await F.wait_seen(a, survivor, F.expected(survivor, [victim]))
            assert await F.via(a, me, survivor) == ("echo", "ping")
            assert await F.via(a, survivor, me) == ("echo", "ping")
            # The same name again: a new incarnation, its pids differ from the predecessor's.
            await F.restart(victim, p)
            assert victim.rec.node != old_rec.node and victim.rec.id == old_rec.id
            await F.wait_joined(a, nodes, timeout=90)
            assert old_echo is not None
            assert a.send(old_rec, "stale") is False
            assert a.cast(old_echo, "stale") is False
            with pytest.raises(NoProcessError):
                await a.call(old_rec, "stale", timeout=30)
            # From the survivor too, which saw the predecessor go down.
            assert await F.rec_call(a, survivor, ("call", old_rec, "stale", 20), timeout=40) == (
                "error",
                "NoProcessError",
            )
            await asyncio.sleep(F.SETTLE)
            assert await F.take(a, victim) == []
            assert await a.call(victim.echo, "seen", timeout=30) == []  # type: ignore[arg-type]
            for n in (me, survivor):
                assert await F.take(a, n) == F.expected(n, [predecessor])
    finally:
        F.reap([victim, survivor])
        for n in (victim, survivor):
            if n.proxy is not None:
                await n.proxy.close()


async def test_nats_server_restart_on_the_same_port(tmp_path: os.PathLike[str]) -> None:
    from pathlib import Path

    server = NatsServer(workdir=Path(tmp_path), start_timeout=30.0)
    server.start()
    p = prefix()
    b = c = None
    try:
        b, c = await _trio(server.url, server.port, p)
        async with join(server.url, "alpha", transport_options={**FAST, "prefix": p}) as a:
            me = await F.local(a, "alpha")
            nodes = [me, b, c]
            await F.wait_joined(a, nodes)
            await F.wire(a, nodes)
            port = server.port
            server.stop()
            server.start(port)
            # Every pair was cut: every node fires for every other one, once.
            for n in nodes:
                await F.wait_seen(a, n, F.expected(n, [o for o in nodes if o is not n]), 90)
            await F.wait_joined(a, nodes, timeout=90)
            await asyncio.sleep(F.SETTLE)
            for n in nodes:
                assert await F.take(a, n) == F.expected(n, [o for o in nodes if o is not n])
            await F.wire(a, nodes)
            await asyncio.sleep(F.SETTLE)
            for n in nodes:
                assert await F.take(a, n) == []
    finally:
        F.reap([x for x in (b, c) if x is not None])
        for x in (b, c):
            if x is not None and x.proxy is not None:
                await x.proxy.close()
        server.stop()
