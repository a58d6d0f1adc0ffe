"""A worker committing acks in the background while it takes more (``settles_behind``): every
ack committed exactly once and counted once, at most ``settles_behind`` commits at a time, a
failed commit retried, ``stop()`` waiting for them. (JetStream, whose default this is, runs the
whole conformance suite in ``test_queue_jetstream.py``.)"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from netsuke.routing import MemoryTaskBackend, TaskQueue, TaskRecord
from netsuke.routing._backend import Settle

from .helpers import wait_for

pytestmark = pytest.mark.timeout(60)


class Behind(MemoryTaskBackend):
    """The memory backend, committing acks behind the take; each background commit yields
    (a broker's round trip) so commits overlap; ``fail`` background commits raise first."""

    def __init__(self, behind: int, fail: int = 0) -> None:
        super().__init__()
        self.settles_behind = behind
        self.fail = fail
        self.background = 0  # background commits that went through
        self.now_committing = 0
        self.most_at_once = 0
        self.settled: list[str] = []

    async def settle_and_take(
        self,
        changes: Sequence[Settle],
        consumer: str,
        *,
        capabilities: frozenset[str] | None,
        limit: int,
        lease: float,
        kinds: Sequence[str] | None = None,
    ) -> tuple[list[bool], list[TaskRecord]]:
        if limit > 0 or not changes:
            return await super().settle_and_take(
                changes, consumer, capabilities=capabilities, limit=limit, lease=lease, kinds=kinds
            )
        self.now_committing += 1
        self.most_at_once = max(self.most_at_once, self.now_committing)
        try:
            for _ in range(3):
                await asyncio.sleep(0)
            if self.fail > 0:
                self.fail -= 1
                raise ConnectionError("the broker went away")
            applied, _ = await super().settle_and_take(
                changes, consumer, capabilities=capabilities, limit=0, lease=lease, kinds=kinds
            )
        finally:
            self.now_committing -= 1
        self.background += 1
        self.settled += [
            task_id for (_, task_id, _), ok in zip(changes, applied, strict=True) if ok
        ]
        return applied, []


async def _run(backend: Behind, n: int) -> tuple[TaskQueue, list[str]]:
    queue = TaskQueue(backend)
    await asyncio.gather(*(queue.submit("n", {"i": i}) for i in range(n)))
    seen: list[str] = []
    worker = queue.worker(lambda t: seen.append(t.id) or t.payload["i"], concurrency=8, batch=8)
    async with worker:
        await wait_for(lambda: worker.processed >= n)
    assert worker.processed == n == len(seen) == len(set(seen))
    return queue, seen


async def test_acks_committed_behind_the_take_are_each_stored_once_with_their_result() -> None:
    backend = Behind(behind=2)
    queue, seen = await _run(backend, 120)
    assert backend.background > 1  # they did go behind the takes
    assert 1 < backend.most_at_once <= 2  # overlapping, never more than settles_behind
    assert sorted(backend.settled) == sorted(seen)  # each exactly once
    for task_id in seen:
        task = await queue.get(task_id)
        assert task.status == "succeeded" and task.result == task.payload["i"]
    assert await queue.count("leased") == 0


async def test_a_failed_background_commit_is_retried_and_nothing_is_counted_twice() -> None:
    backend = Behind(behind=2, fail=2)
    queue, seen = await _run(backend, 60)
    assert backend.fail == 0  # both failures happened, and their acks were committed later
    assert sorted(backend.settled) == sorted(seen)
    assert await queue.count("succeeded") == 60


async def test_stop_waits_for_the_background_commits_and_commits_the_rest() -> None:
    backend = Behind(behind=3)
    queue = TaskQueue(backend)
    await asyncio.gather(*(queue.submit("n", {"i": i}) for i in range(200)))
    seen: list[str] = []
    worker = queue.worker(lambda t: seen.append(t.id), concurrency=4, batch=4)
    await worker.start()
    await wait_for(lambda: len(seen) >= 60)
    await worker.stop()
    assert worker.processed == len(seen) == len(set(seen))
    for task_id in seen:  # every handled task acked: none left leased to redeliver
        assert (await queue.get(task_id)).status == "succeeded"
    assert await queue.count("leased") == 0
    assert await queue.count("succeeded") == len(seen)


async def test_backends_that_commit_acks_with_the_take_keep_doing_so() -> None:
    backend = Behind(behind=0)
    await _run(backend, 40)
    assert backend.background == 0  # every ack rode with a take (settle_and_take, limit > 0)
