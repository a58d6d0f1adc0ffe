"""Group commit: concurrent writers share one transaction, each still waits for its commit.

A caller's item joins a queue and the caller awaits a future. One worker task takes every item
waiting (up to ``max_batch``), commits them in one transaction, then resolves each future with
that item's own result or error. While a commit is in flight new items queue up, so the batch
size grows with the load and an idle store adds no delay: a lone item is committed at once.

Cancelling a waiting caller stops its wait, not its write: the item may still be committed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from ._errors import StoreClosedError

__all__ = ["GroupCommitter"]

T = TypeVar("T")
R = TypeVar("R")


class GroupCommitter(Generic[T, R]):
    """Batches items for ``commit``, which takes a batch and returns one result or exception
    per item, in order (it must not raise; an exception it raises fails the whole batch)."""

    def __init__(
        self,
        commit: Callable[[Sequence[T]], Awaitable[Sequence[R | BaseException]]],
        *,
        max_batch: int = 256,
    ) -> None:
        self._commit = commit
        self._max_batch = max_batch
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.batches = 0

    async def submit(self, item: T) -> R:
        """Queue ``item`` and return its result once its batch is committed."""
        if self._closed:
            raise StoreClosedError("the store is closed")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="netsuke-store-group-commit")
        self._wakeup.set()
        return await future

    async def close(self) -> None:
        """Accept nothing more; commit what is queued, then stop the worker."""
        self._closed = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                await self._commit_batch(batch)
            if self._closed:
                return

    async def _commit_batch(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results: Sequence[R | BaseException] = await self._commit([item for item, _ in batch])
        except asyncio.CancelledError:
            for _, future in batch:
                if not future.done():
                    future.set_exception(StoreClosedError("the store closed during the commit"))
            raise
        except Exception as exc:
            results = [exc] * len(batch)
        self.batches += 1
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
