"""Helpers shared by the routing tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from netsuke.events import Event, Subscription


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``predicate`` until it holds, or fail after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.01)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Poll the async ``check`` until it holds, or fail after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while True:
            if await check():
                return
            await asyncio.sleep(0.02)


async def next_event(sub: Subscription, topic: str, timeout: float = 10.0) -> Event:
    """The next event on ``sub`` with ``topic`` (others are skipped)."""
    async with asyncio.timeout(timeout):
        while True:
            event = await sub.get()
            if event.topic == topic:
                return event


class Fixed:
    """A jitter 'RNG' returning ``fraction`` of the upper bound: deterministic backoff."""

    def __init__(self, fraction: float) -> None:
        self.fraction = fraction
        self.calls: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.calls.append((a, b))
        return a + (b - a) * self.fraction
