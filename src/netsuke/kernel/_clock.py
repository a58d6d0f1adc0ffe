"""A virtual clock for tests, after trio's ``MockClock(autojump_threshold=0)``.

``VirtualClockLoop`` is an asyncio event loop whose ``time()`` is virtual. Whenever the loop has
nothing ready to run and is about to wait for its next timer, it does not wait: it jumps the
clock to that timer (after ``autojump_threshold`` real seconds of idleness, ``0`` by default).
So ``await asyncio.sleep(3600)`` returns at once with ``loop.time()`` one hour later, and tests of
timeouts and restart intensity are exact and instant. Real I/O still works: the loop polls the
selector without blocking before every jump.

Use ``run_virtual(main())`` like ``asyncio.run``, or decorate an ``async def`` test with
``@virtual_time``.
"""

from __future__ import annotations

import asyncio
import functools
import selectors
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["VirtualClockLoop", "run_virtual", "virtual_time"]

T = TypeVar("T")


class _JumpingSelector(selectors.DefaultSelector):
    def __init__(self, loop: VirtualClockLoop) -> None:
        super().__init__()
        self._vloop = loop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is not None and timeout <= 0:
            return super().select(timeout)
        threshold = self._vloop.autojump_threshold
        events = super().select(threshold if timeout is None else min(timeout, threshold))
        if events:
            return events
        if timeout is None:
            # No timer at all: nothing to jump to. Wait for real I/O.
            return super().select(None)
        self._vloop._virtual_now += timeout
        return []


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An event loop with a virtual, auto-jumping clock. See the module documentation."""

    def __init__(self, *, start: float = 0.0, autojump_threshold: float = 0.0) -> None:
        self._virtual_now = start
        self.autojump_threshold = autojump_threshold
        super().__init__(selector=_JumpingSelector(self))

    def time(self) -> float:
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by hand (timers now due run at the next iteration)."""
        if seconds < 0:
            raise ValueError("time cannot go backwards")
        self._virtual_now += seconds


def run_virtual(main: Coroutine[Any, Any, T], *, autojump_threshold: float = 0.0) -> T:
    """Run ``main`` to completion on a fresh ``VirtualClockLoop`` (like ``asyncio.run``)."""
    with asyncio.Runner(
        loop_factory=lambda: VirtualClockLoop(autojump_threshold=autojump_threshold)
    ) as runner:
        return runner.run(main)


def virtual_time(
    fn: Callable[..., Coroutine[Any, Any, T]],
) -> Callable[..., T]:
    """Decorate an ``async def`` (a test) so that it runs on a virtual clock."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        return run_virtual(fn(*args, **kwargs))

    return wrapper
