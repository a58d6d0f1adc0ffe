"""Retry timings, exact on the virtual clock (in-memory backend: no I/O, so no drift)."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netsuke.events import EventBus, topics
from netsuke.kernel import run_virtual
from netsuke.routing import MemoryTaskBackend, RetryPolicy, TaskQueue, TaskRecord, backoff_bound

from .helpers import Fixed, next_event


def test_backoff_bound_doubles_from_base_up_to_cap() -> None:
    assert [backoff_bound(n, 0.5, 5.0) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert backoff_bound(5000, 1.0, 60.0) == 60.0
    with pytest.raises(ValueError):
        backoff_bound(0, 1.0, 2.0)


@given(
    retry=st.integers(1, 200),
    base=st.floats(0.001, 100),
    cap=st.floats(0.001, 1000),
    seed=st.integers(0, 2**32),
)
def test_full_jitter_delay_is_within_zero_and_the_bound(
    retry: int, base: float, cap: float, seed: int
) -> None:
    policy = RetryPolicy(base=base, cap=cap, rng=random.Random(seed))
    delay = policy.delay(retry)
    assert 0.0 <= delay <= min(cap, base * 2.0 ** min(retry - 1, 1023))


def test_policy_refuses_bad_values() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(base=0)


def test_retries_run_exactly_at_their_backoff_on_the_virtual_clock() -> None:
    async def main() -> tuple[list[float], list[float], list[tuple[float, float]], str]:
        loop = asyncio.get_running_loop()
        bus = EventBus("t")
        sub = bus.subscribe("task.*")
        retried = bus.subscribe("task.retried")
        queue = TaskQueue(MemoryTaskBackend(clock=loop.time), events=bus)
        rng = Fixed(0.75)
        times: list[float] = []

        def handle(t: TaskRecord) -> None:
            times.append(loop.time())
            raise RuntimeError("down")

        start = loop.time()
        task = await queue.submit("t", retry=RetryPolicy(max_attempts=6, base=2.0, cap=10.0))
        async with queue.worker(handle, rng=rng, poll_interval=3600.0):
            await next_event(sub, topics.TASK_DEAD_LETTERED, timeout=3600)
        delays = [e.data["delay"] for e in iter(retried.get_nowait, None)]
        return [t - start for t in times], delays, rng.calls, (await queue.get(task.id)).status

    times, delays, calls, status = run_virtual(main())
    # bounds 2, 4, 8, 10 (cap), 10; full jitter draws from [0, bound]; Fixed picks 3/4 of it
    assert calls == [(0.0, 2.0), (0.0, 4.0), (0.0, 8.0), (0.0, 10.0), (0.0, 10.0)]
    assert delays == [1.5, 3.0, 6.0, 7.5, 7.5]
    expected = [0.0, 1.5, 4.5, 10.5, 18.0, 25.5]
    assert times == pytest.approx(expected, abs=1e-6)
    assert status == "dead"


def test_delayed_task_runs_exactly_when_due_on_the_virtual_clock() -> None:
    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        queue = TaskQueue(MemoryTaskBackend(clock=loop.time))
        ran: list[float] = []
        await queue.submit("later", delay=42.0)
        await queue.submit("sooner", delay=7.0)
        async with queue.worker(lambda t: ran.append(loop.time()), poll_interval=3600.0):
            await asyncio.sleep(100)
        return ran

    assert run_virtual(main()) == pytest.approx([7.0, 42.0], abs=1e-6)


def test_a_worker_survives_a_failing_take_and_keeps_consuming() -> None:
    class Flaky(MemoryTaskBackend):
        failures = 2

        async def take(self, *args: Any, **kwargs: Any) -> list[TaskRecord]:
            if self.failures:
                self.failures -= 1
                raise ConnectionError("database went away")
            return await super().take(*args, **kwargs)

    async def main() -> tuple[list[float], int]:
        loop = asyncio.get_running_loop()
        queue = TaskQueue(Flaky(clock=loop.time))
        ran: list[float] = []
        await queue.submit("t")
        worker = queue.worker(lambda t: ran.append(loop.time()), poll_interval=5.0)
        async with worker:
            await asyncio.sleep(60)
        return ran, worker.take_errors

    ran, errors = run_virtual(main())
    assert errors == 2 and ran == pytest.approx([10.0])
