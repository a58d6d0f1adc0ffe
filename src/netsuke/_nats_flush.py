"""``flush_subscriptions``: return once the NATS server has every subscription a client made
(shared by the cluster transport, the AgentManager and the agent SDK; light: nats-py only)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nats.aio.client import Client as NatsClient

__all__ = ["flush_subscriptions"]


async def flush_subscriptions(nc: NatsClient, timeout: float = 10.0) -> None:
    """Return once the server has every subscription ``nc`` made so far.

    ``nc.flush()`` alone does not promise that in nats-py (2.16): ``subscribe`` queues its
    ``SUB`` in the client's pending buffer for the flusher task to write, while ``flush`` writes
    its ``PING`` straight to the socket. When the flusher task has not run yet (a busy loop),
    the ``PING`` overtakes the ``SUB``, the ``PONG`` comes back, and the server still has no
    subscription: what peers send meanwhile matches nobody and is dropped (seen as "no
    responders" on about 3% of joins under CPU load). So the pending buffer is written out
    first, then the ``PING``/``PONG`` round trip proves the server processed it (a server reads
    one connection's protocol in order)."""
    await asyncio.wait_for(nc._flush_pending(force_flush=True), timeout)
    await nc.flush(timeout=timeout)  # type: ignore[arg-type]
