"""``SessionService`` (``netsuke.cluster._forward``): op-level RPC between two nodes over a real
nats-server: answers, streamed chunks with an end marker, the owner's errors with their data,
and the typed errors that keep a caller from hanging: no
responders (the owner is gone), owner lost mid-request (it went down), the caller's timeout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from netsuke.cluster import join
from netsuke.cluster._forward import (
    ForwardTimeoutError,
    OwnerLostError,
    OwnerUnreachableError,
    RemoteOpError,
    SessionService,
)
from netsuke.manager.testing import NatsServer
from netsuke.observability import REGISTRY

from .helpers import FAST, prefix


class _Refused(Exception):
    def to_wire(self) -> dict[str, Any]:
        return {"problem": {"status": 409}}


async def test_ops_answer_stream_and_fail_typed(nats_server: NatsServer) -> None:
    p = prefix()
    opts = {"transport_options": {**FAST, "prefix": p}}
    async with (
        join(nats_server.url, "alpha", **opts) as a,
        join(nats_server.url, "beta", **opts) as b,
    ):
        sa = SessionService(a.transport, a.events)
        sb = SessionService(b.transport, b.events)
        gate = asyncio.Event()

        async def echo(args: dict[str, Any]) -> Any:
            return {"echo": args["x"], "node": b.node}

        async def count(args: dict[str, Any]) -> AsyncIterator[Any]:
            for i in range(int(args["n"])):
                yield i

        async def refuse(args: dict[str, Any]) -> Any:
            raise _Refused("no")

        async def hang(args: dict[str, Any]) -> Any:
            await gate.wait()
            return "late"

        for name, fn in (("echo", echo), ("refuse", refuse), ("hang", hang)):
            sb.handle(name, fn)
        sb.handle("count", count, stream=True)
        await sa.start()
        await sb.start()
        before = (
            REGISTRY.get_sample_value(
                "netsuke_cluster_forwarded_requests_total", {"op": "echo", "outcome": "ok"}
            )
            or 0.0
        )
        try:
            assert await sa.call(b.node, "echo", {"x": [1, "two"]}, timeout=10) == {
                "echo": [1, "two"],
                "node": b.node,
            }
            assert (
                REGISTRY.get_sample_value(
                    "netsuke_cluster_forwarded_requests_total", {"op": "echo", "outcome": "ok"}
                )
                == before + 1
            )
            chunks = [v async for k, v in sa.stream(b.node, "count", {"n": 5}, timeout=10)]
            assert chunks == [0, 1, 2, 3, 4, None]  # the chunks, then the end marker's answer
            with pytest.raises(RemoteOpError) as e:
                await sa.call(b.node, "refuse", {}, timeout=10)
            assert (e.value.type_name, e.value.data) == ("_Refused", {"problem": {"status": 409}})
            with pytest.raises(RemoteOpError, match="LookupError"):
                await sa.call(b.node, "nope", {}, timeout=10)
            with pytest.raises(ForwardTimeoutError):
                await sa.call(b.node, "hang", {}, timeout=0.3)
            # a node nobody holds: no responders, at once
            with pytest.raises(OwnerUnreachableError):
                await sa.call(f"{b.node}0", "echo", {"x": 1}, timeout=10)
            # the owner goes down mid-request: the caller is told, long before its timeout
            pending = asyncio.ensure_future(sa.call(b.node, "hang", {}, timeout=60))
            await asyncio.sleep(0.3)
            await sb.close()
            await b.transport.close()  # says goodbye: alpha sees it left
            with pytest.raises(OwnerLostError):
                await asyncio.wait_for(pending, 30)
        finally:
            gate.set()
            await sa.close()
            await sb.close()
