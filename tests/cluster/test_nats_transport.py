"""Two nodes over a real nats-server, in one test process: messaging, links, monitors, node down.

Every wait polls with a generous deadline; nothing asserts wall-clock durations.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from netsuke.cluster import (
    NOCONNECTION,
    EncodeError,
    NatsTransport,
    NodeDown,
    RemoteError,
    join,
)
from netsuke.kernel import (
    Down,
    Exit,
    NoProcessError,
    Pid,
    ProcessExitedError,
    Runtime,
)
from netsuke.manager.testing import NatsServer
from netsuke.observability import REGISTRY

from .helpers import FAST, Echo, eventually, prefix

pytestmark = pytest.mark.timeout(120)


def opts(p: str, **extra: Any) -> dict[str, Any]:
    return {"transport_options": {**FAST, "prefix": p, **extra}}


async def test_send_cast_call_by_pid_across_nodes(nats_server: NatsServer) -> None:
    p = prefix()
    async with (
        join(nats_server.url, "alpha", **opts(p)) as a,
        join(nats_server.url, "beta", **opts(p)) as b,
    ):
        pid = await b.start(Echo)
        assert pid is not None
        assert pid.node == b.node and pid.node.startswith("beta#")
        assert await a.call(pid, ("hi", 1, [2.5, None], {"k": b"\x00"}), timeout=30) == (
            "echo",
            ("hi", 1, [2.5, None], {"k": b"\x00"}),
        )
        assert a.cast(pid, "c1") is True
        assert a.send(pid, {"m": pid}) is True
        seen = await eventually(
            lambda: b.process(pid).seen if len(b.process(pid).seen) == 2 else None
        )  # type: ignore[union-attr]
        assert seen == [("cast", "c1"), ("info", {"m": pid})]
        # Pids of the other node travel back and forth as values.
        assert await a.call(pid, a.root, timeout=30) == ("echo", a.root)


async def test_call_errors_cross_the_wire(nats_server: NatsServer) -> None:
    p = prefix()
    async with (
        join(nats_server.url, "alpha", **opts(p)) as a,
        join(nats_server.url, "beta", **opts(p)) as b,
    ):
        pid = await b.start(Echo)
        assert pid is not None
        with pytest.raises(RemoteError) as ei:
            await a.call(pid, "refuse", timeout=30)
        assert ei.value.type_name == "KeyError"
        with pytest.raises(RemoteError) as ei:
            await a.call(pid, "unsendable", timeout=30)
        assert ei.value.type_name == "EncodeError"
        # Unsendable request: a typed error at send time, naming the type; nothing is sent.
        with pytest.raises(EncodeError, match="set"):
            await a.call(pid, {"x": {1, 2}}, timeout=30)
        with pytest.raises(EncodeError):
            a.send(pid, object())
        with pytest.raises(ProcessExitedError) as ex:
            await a.call(pid, "crash", timeout=30)
        assert ex.value.reason == RemoteError("RuntimeError", "asked to crash")
        # The callee is gone: a call to its pid is noproc, a send is dropped silently.
        with pytest.raises(NoProcessError):
            await a.call(pid, "again", timeout=30)
        with pytest.raises(NoProcessError):
            await a.call(Pid(b.node, 999_999), "x", timeout=30)


async def test_remote_link_propagates_both_ways(nats_server: NatsServer) -> None:
    p = prefix()
    async with (
        join(nats_server.url, "alpha", **opts(p)) as a,
        join(nats_server.url, "beta", **opts(p)) as b,
    ):
        remote = await b.start(Echo)
        assert remote is not None
        async with a.scope(trap_exit=True) as me:
            me.link(remote)
            await eventually(lambda: b.links(remote))
            assert [x.node for x in b.links(remote)] == [a.node]
            a.cast(remote, "crash")
            msg = await me.receive(timeout=30)
            assert msg == Exit(remote, RemoteError("RuntimeError", "cast crash"))

        # The other way: a local process that exits takes the linked remote one with it.
        victim = await b.start(Echo)
        assert victim is not None
        local = await a.start(Echo)
        assert local is not None
        a.process(local).link(victim)  # type: ignore[union-attr]
        await eventually(lambda: b.links(victim))
        await a.stop(local, "shutdown")
        assert await b.wait_exit(victim, timeout=30) == "shutdown"


async def test_link_to_dead_remote_pid_gives_noproc(nats_server: NatsServer) -> None:
    p = prefix()
    async with (
        join(nats_server.url, "alpha", **opts(p)) as a,
        join(nats_server.url, "beta", **opts(p)) as b,
    ):
        gone = Pid(b.node, 424_242)
        async with a.scope(trap_exit=True) as me:
            me.link(gone)
            assert await me.receive(timeout=30) == Exit(gone, "noproc")


async def test_remote_monitor_fires_once_and_demonitor_cancels(nats_server: NatsServer) -> None:
    p = prefix()
    async with (
        join(nats_server.url, "alpha", **opts(p)) as a,
        join(nats_server.url, "beta", **opts(p)) as b,
    ):
        t1 = await b.start(Echo)
        t2 = await b.start(Echo)
        assert t1 is not None and t2 is not None
        async with a.scope() as me:
            ref1 = me.monitor(t1)
            ref2 = me.monitor(t2)
            await eventually(lambda: b.process(t2)._ext is not None)  # type: ignore[union-attr]
            me.demonitor(ref2)
            await b.stop(t2)
            await b.stop(t1, "shutdown")
            assert await me.receive(timeout=30) == Down(ref1, t1, "shutdown")
            ref3 = me.monitor(Pid(b.node, 777_777))
            assert await me.receive(timeout=30) == Down(ref3, Pid(b.node, 777_777), "noproc")
            with pytest.raises(TimeoutError):  # no Down for the demonitored one
                await me.receive(timeout=0.5)


async def test_wait_exit_and_stop_of_a_remote_pid(nats_server: NatsServer) -> None:
    p = prefix()
    async with (
        join(nats_server.url, "alpha", **opts(p)) as a,
        join(nats_server.url, "beta", **opts(p)) as b,
    ):
        t = await b.start(Echo)
        assert t is not None
        await a.stop(t, "shutdown", timeout=30)
        assert not b.alive(t)
        t2 = await b.start(Echo)
        assert t2 is not None
        a.exit(t2, "kill")
        assert await a.wait_exit(t2, timeout=30) in ("killed", "noproc")
        assert not b.alive(t2)


async def test_node_cut_off_fires_links_and_monitors_once_with_noconnection(
    nats_server: NatsServer,
) -> None:
    p = prefix()
    tb = NatsTransport(nats_server.url, "beta", prefix=p, **FAST)  # type: ignore[arg-type]
    await tb.connect()
    async with join(nats_server.url, "alpha", **opts(p)) as a:
        b = Runtime(node=tb.node_id, transport=tb)
        await b.open()
        try:
            remote = await b.start(Echo)
            assert remote is not None
            await eventually(lambda: tb.node_id in a.transport.nodes())  # type: ignore[union-attr]
            async with a.scope(trap_exit=True) as me:
                me.link(remote)
                ref = me.monitor(remote)
                a.transport.monitor_node(me.pid, tb.node_id)  # type: ignore[union-attr]
                await eventually(lambda: b.links(remote))
                beta_side = asyncio.create_task(b.wait_exit(remote, timeout=90))
                await asyncio.sleep(0)
                # Cut beta off: its NATS connection closes without a goodbye.
                assert tb.nc is not None
                await tb.nc.close()
                got = [await me.receive(timeout=60) for _ in range(3)]
                assert Exit(remote, NOCONNECTION) in got
                assert Down(ref, remote, NOCONNECTION) in got
                assert NodeDown(tb.node_id) in got
                with pytest.raises(TimeoutError):  # once
                    await me.receive(timeout=1.0)
                # The node is known down: its pids are noproc now.
                with pytest.raises(NoProcessError):
                    await a.call(remote, "x", timeout=30)
                # Beta, cut off, saw alpha go down too: its end of the link fired as well, and
                # the linked process (not trapping exits) exited with noconnection.
                assert await beta_side == NOCONNECTION
        finally:
            await b.aclose()


async def test_restarted_node_answers_noproc_for_predecessor_pids(
    nats_server: NatsServer,
) -> None:
    p = prefix()
    async with join(nats_server.url, "alpha", **opts(p)) as a:
        async with join(nats_server.url, "beta", **opts(p, incarnation=1)) as b1:
            old = await b1.start(Echo)
            assert old is not None
            assert await a.call(old, 1, timeout=30) == ("echo", 1)
        async with join(nats_server.url, "beta", **opts(p, incarnation=2)) as b2:
            new = await b2.start(Echo)
            assert new is not None
            assert new.id == old.id and new != old  # same number, other incarnation
            await eventually(lambda: b2.node in a.transport.nodes())  # type: ignore[union-attr]
            with pytest.raises(NoProcessError):
                await a.call(old, 1, timeout=30)
            assert a.send(old, "lost") is False
            assert await a.call(new, 2, timeout=30) == ("echo", 2)
            assert b2.process(new).seen == []  # type: ignore[union-attr]


async def test_bad_frames_are_dropped_and_counted(nats_server: NatsServer) -> None:
    import nats

    p = prefix()
    async with (
        join(nats_server.url, "alpha", **opts(p)) as a,
        join(nats_server.url, "beta", **opts(p)) as b,
    ):
        pid = await b.start(Echo)
        assert pid is not None

        def dropped() -> float:
            total = 0.0
            for metric in REGISTRY.collect():
                if metric.name == "netsuke_cluster_frames_dropped":
                    for s in metric.samples:
                        if s.name.endswith("_total") and s.labels["node"] == b.node:
                            total += s.value
            return total

        before = dropped()
        nc = await nats.connect(nats_server.url)
        try:
            subject = f"{p}.node.{b.node}.in"
            for junk in (
                b"\xff\x00",
                b"[1,2]",
                b'{"k":"send","to":{"$p":["x"]}}',
                b'{"k":"send","to":"nobody","m":1}',
                b'{"k":"warp"}',
                b"[" * 50_000,
            ):
                await nc.publish(subject, junk)
            await nc.flush()
        finally:
            await nc.close()
        await eventually(lambda: dropped() - before >= 6)
        assert await a.call(pid, "still", timeout=30) == ("echo", "still")


async def test_one_subscription_per_node_whatever_the_process_count(
    nats_server: NatsServer,
) -> None:
    p = prefix()
    async with (
        join(nats_server.url, "alpha", **opts(p)) as a,
        join(nats_server.url, "beta", **opts(p)) as b,
    ):
        ta = a.transport
        assert isinstance(ta, NatsTransport)
        assert ta.nc is not None
        before = len(ta.nc._subs)
        pids = [await b.start(Echo) for _ in range(50)]
        async with a.scope(trap_exit=True) as me:
            for pid in pids:
                assert pid is not None
                me.monitor(pid)
            for i, pid in enumerate(pids):
                assert await a.call(pid, i, timeout=30) == ("echo", i)
            assert len(ta.nc._subs) == before == 3  # own subject, heartbeats, names changed
            assert len(ta._remotes) == 50  # stand-ins held for the monitors
            for pid in pids:
                await b.stop(pid)  # type: ignore[arg-type]
            for _ in pids:
                assert type(await me.receive(timeout=30)) is Down
        # Nothing links or monitors them any more: the stand-ins go at the next tick.
        await eventually(lambda: not ta._remotes)


async def test_trace_context_travels_in_headers(nats_server: NatsServer) -> None:
    from netsuke.observability.testing import capture_spans

    p = prefix()
    async with (
        join(nats_server.url, "alpha", **opts(p)) as a,
        join(nats_server.url, "beta", **opts(p)) as b,
    ):
        pid = await b.start(Echo)
        assert pid is not None
        from opentelemetry import trace

        # The receiving span ends before the callee runs, so before the reply arrives.
        with (
            capture_spans() as spans,
            trace.get_tracer("test").start_as_current_span("caller") as caller,
        ):
            await a.call(pid, "traced", timeout=30)
        got = spans.named("cluster.receive call")
        assert len(got) == 1
        assert got[0].context.trace_id == caller.get_span_context().trace_id
        assert got[0].parent is not None
        assert got[0].parent.span_id == caller.get_span_context().span_id


async def test_subscriptions_route_once_flush_subscriptions_returns(
    nats_server: NatsServer,
) -> None:
    """The join race: nats-py's ``flush()`` writes its PING ahead of a SUB still waiting for
    the flusher task, so the PONG could come back before the server had the subscription.
    Here the flusher is held up on purpose; ``flush_subscriptions`` still waits for the SUB."""
    import nats

    from netsuke.cluster._nats import flush_subscriptions

    caller = await nats.connect(nats_server.url)
    nc = await nats.connect(nats_server.url)
    try:
        await nc.publish("warm.up", b"")  # the flusher takes this and asks the queue again
        await nc.flush()
        q = nc._flush_queue
        assert q is not None
        get = q.get

        async def late_get() -> Any:
            item = await get()
            await asyncio.sleep(0.5)  # a busy event loop, made certain
            return item

        q.get = late_get  # type: ignore[method-assign]
        await nc.publish("warm.up", b"")  # the flusher's next get() is the late one
        await asyncio.sleep(0.6)

        async def answer(msg: Any) -> None:
            await msg.respond(b"here")

        for i in range(3):
            await nc.subscribe(f"race.{i}.>", cb=answer)
            await flush_subscriptions(nc)
            got = await caller.request(f"race.{i}.x", b"", timeout=10)
            assert got.data == b"here"
    finally:
        await nc.close()
        await caller.close()


async def test_name_node_tuple_addresses_a_name_in_the_other_nodes_registry(
    nats_server: NatsServer,
) -> None:
    """Erlang's {Name, Node}: the other node resolves the name frame by frame."""
    from netsuke.kernel import ArgumentError

    p = prefix()
    async with (
        join(nats_server.url, "alpha", **opts(p)) as a,
        join(nats_server.url, "beta", **opts(p)) as b,
    ):
        await eventually(lambda: b.node in a.transport.nodes())  # type: ignore[union-attr]
        first = await b.start(Echo, name="svc")
        assert first is not None
        svc = ("svc", b.node)
        assert await a.call(svc, "by name", timeout=30) == ("echo", "by name")
        assert a.cast(svc, "c") is True
        assert a.send(svc, "s") is True
        await eventually(lambda: len(b.process(first).seen) == 2)  # type: ignore[union-attr]
        with pytest.raises(NoProcessError) as ei:
            await a.call(("nobody", b.node), "x", timeout=30)
        assert ei.value.target == ("nobody", b.node)
        async with a.scope() as me:
            with pytest.raises(ArgumentError):  # Erlang: link({Name, Node}) is badarg
                me.link(svc)
            ref = me.monitor(svc)
            await a.call(svc, "sync", timeout=30)  # the monitor is set over there now
            await b.stop(first, "shutdown")
            assert await me.receive(timeout=30) == Down(ref, svc, "shutdown")
            ref2 = me.monitor(("nobody", b.node))
            assert await me.receive(timeout=30) == Down(ref2, ("nobody", b.node), "noproc")
        # The name is resolved over there each time: a new owner answers.
        second = await b.start(Echo, name="svc")
        assert second is not None and second != first
        assert await a.call(svc, "again", timeout=30) == ("echo", "again")
        assert b.process(second).seen == []  # type: ignore[union-attr]
        # Not a cluster node id, or not the live incarnation: nothing to address.
        with pytest.raises(NoProcessError):  # as a send to an unregistered name
            a.send(("svc", "not a node"), "x")
        with pytest.raises(NoProcessError):  # another incarnation of beta: not the live one
            a.send(("svc", b.node.replace("#", "#9")), "x")


async def test_a_node_declared_down_fires_its_side_once_then_is_up_again(
    nats_server: NatsServer,
) -> None:
    """Alpha declares beta down (as after a missed heartbeat) while beta noticed nothing: on
    beta's next heartbeat alpha sends ``nd``; beta fires its side of the link once and answers
    ``nda``; both are up again. A repeated ``nd`` (same verdict) fires nothing more, so a link
    made after the heal survives it."""
    from .helpers import Recorder

    p = prefix()
    async with (
        join(nats_server.url, "alpha", **opts(p)) as a,
        join(nats_server.url, "beta", **opts(p)) as b,
    ):
        ta, tb = a.transport, b.transport
        assert isinstance(ta, NatsTransport) and isinstance(tb, NatsTransport)
        await eventually(lambda: b.node in ta.nodes() and a.node in tb.nodes())
        x = await a.start(Recorder)
        y = await b.start(Recorder)
        assert x is not None and y is not None
        assert await a.call(x, ("link", y), timeout=30) == "ok"
        await a.call(y, "sync", timeout=30)
        ta._node_down(tb.node_id, "heartbeat_timeout")
        seq = ta._awaiting[tb.node_id]
        assert await a.call(x, ("seen",), timeout=30) == [("exit", y, NOCONNECTION)]
        await eventually(lambda: b.node in ta.nodes())  # nd, then nda: up again
        assert await b.call(y, ("seen",), timeout=30) == [("exit", x, NOCONNECTION)]
        # A new link after the heal; then the same verdict again: nothing fires.
        assert await a.call(x, ("link", y), timeout=30) == "ok"
        await a.call(y, "sync", timeout=30)
        ta._post(tb.node_id, "nd", {"n": ta.node_id, "c": seq})
        assert await a.call(y, "sync", timeout=30) == ("echo", "sync")  # nd handled before
        assert b.links(y) == [x]
        assert await b.call(y, ("take",), timeout=30) == [("exit", x, NOCONNECTION)]
        assert await a.call(x, ("take",), timeout=30) == [("exit", y, NOCONNECTION)]


async def test_frames_keep_their_order_when_publishes_must_wait(nats_server: NatsServer) -> None:
    """Frames go to nats-py without a task switch; when a publish has to wait (here: its
    pending buffer is always over the limit, so every publish flushes first), a task finishes
    it and the frames behind it wait: nothing is lost or reordered. Frames made outside any
    task (a loop callback) are published from one."""
    p = prefix()
    async with (
        join(nats_server.url, "alpha", **opts(p)) as a,
        join(nats_server.url, "beta", **opts(p)) as b,
    ):
        ta = a.transport
        assert isinstance(ta, NatsTransport) and ta.nc is not None
        pid = await b.start(Echo)
        assert pid is not None
        ta.nc._max_pending_size = 1  # every publish waits for a flush
        for i in range(200):
            assert a.cast(pid, i) is True
        asyncio.get_running_loop().call_soon(a.cast, pid, "from a callback")
        assert await a.call(pid, "after", timeout=30) == ("echo", "after")
        await eventually(lambda: len(b.process(pid).seen) == 201)  # type: ignore[union-attr]
        seen = b.process(pid).seen  # type: ignore[union-attr]
        assert seen[:200] == [("cast", i) for i in range(200)]
        assert seen[200] == ("cast", "from a callback")
        assert not ta._tasks and not ta._pumping
        ta.nc._max_pending_size = 2 * 1024 * 1024
        asyncio.get_running_loop().call_soon(a.cast, pid, "idle callback")  # not in a task
        await eventually(lambda: len(b.process(pid).seen) == 202)  # type: ignore[union-attr]
        assert seen[201] == ("cast", "idle callback")


async def test_an_unanswered_probe_is_sent_again(nats_server: NatsServer) -> None:
    """A probe that reached a connection as it died gets no answer at all; the next one finds
    no responders. (``down_after`` is an hour: only a repeated probe ends this wait.)"""
    import nats

    p = prefix()
    ghost = "ghost#1"
    raw = await nats.connect(nats_server.url)
    pinged = asyncio.Event()

    async def swallow(msg: Any) -> None:  # holds the subject, answers nothing
        pinged.set()

    try:
        await raw.subscribe(f"{p}.node.{ghost}.>", cb=swallow)
        await raw.flush()
        slow = {"heartbeat_interval": 0.2, "down_after": 3600.0, "prefix": p}
        async with join(nats_server.url, "alpha", transport_options=slow) as a:
            ta = a.transport
            assert isinstance(ta, NatsTransport)
            await raw.publish(f"{p}.hb", b'{"k":"hb","n":"ghost#1"}')
            await eventually(lambda: ghost in ta.nodes())
            async with a.scope() as me:
                ref = me.monitor(Pid(ghost, 5))
                await asyncio.wait_for(pinged.wait(), 30)  # the monitor frame or a probe
                await eventually(lambda: ta._probes)  # a probe went out, unanswered
                await raw.close()  # the "node" is gone now
                assert await me.receive(timeout=30) == Down(ref, Pid(ghost, 5), NOCONNECTION)
    finally:
        if not raw.is_closed:
            await raw.close()


async def test_membership_changes_are_published_as_cluster_events(
    nats_server: NatsServer,
) -> None:
    """``cluster.node_joined`` when a peer is first heard, ``cluster.node_left`` on its
    goodbye, ``cluster.node_down`` with the cause when it vanishes without one."""
    p = prefix()
    async with (
        join(nats_server.url, "alpha", **opts(p)) as a,
        a.events.subscribe("cluster.*") as sub,
    ):

        async def next_event() -> tuple[str, dict[str, Any]]:
            e = await sub.get(timeout=60)
            return e.topic, e.data

        async with join(nats_server.url, "beta", **opts(p)) as b:
            assert await next_event() == (
                "cluster.node_joined",
                {"node": a.node, "peer": b.node},
            )
        assert await next_event() == ("cluster.node_left", {"node": a.node, "peer": b.node})
        tb = NatsTransport(nats_server.url, "beta", prefix=p, **FAST)  # type: ignore[arg-type]
        await tb.connect()
        b2 = Runtime(node=tb.node_id, transport=tb)
        await b2.open()
        try:
            assert await next_event() == (
                "cluster.node_joined",
                {"node": a.node, "peer": tb.node_id},
            )
            assert tb.nc is not None
            await tb.nc.close()  # cut off: no goodbye
            topic, data = await next_event()
            assert topic == "cluster.node_down" and data["peer"] == tb.node_id
            assert data["cause"] in ("heartbeat_timeout", "no_responders"), data
        finally:
            await b2.aclose()
