from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from pydantic_ai.messages import ModelRequest, UserPromptPart

from netsuke.store import GroupCommitter, Store, StoreClosedError


class Recorder:
    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def commit(self, items: Sequence[int]) -> list[int | BaseException]:
        await self.gate.wait()
        self.batches.append(list(items))
        return [ValueError(f"bad {i}") if i < 0 else i * 10 for i in items]


async def test_waiters_during_a_commit_share_the_next_one() -> None:
    recorder = Recorder()
    committer: GroupCommitter[int, int] = GroupCommitter(recorder.commit)
    recorder.gate.clear()
    first = asyncio.create_task(committer.submit(1))
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # the worker is now blocked committing [1]
    rest = [asyncio.create_task(committer.submit(i)) for i in range(2, 12)]
    await asyncio.sleep(0)
    recorder.gate.set()
    assert await first == 10
    assert await asyncio.gather(*rest) == [i * 10 for i in range(2, 12)]
    assert recorder.batches == [[1], list(range(2, 12))]
    await committer.close()


async def test_each_item_gets_its_own_error_and_batches_are_capped() -> None:
    recorder = Recorder()
    committer: GroupCommitter[int, int] = GroupCommitter(recorder.commit, max_batch=3)
    results = await asyncio.gather(
        *[committer.submit(i) for i in (1, -2, 3, 4, 5)], return_exceptions=True
    )
    assert results[0] == 10
    assert isinstance(results[1], ValueError)
    assert results[2:] == [30, 40, 50]
    assert all(len(batch) <= 3 for batch in recorder.batches)
    await committer.close()
    with pytest.raises(StoreClosedError):
        await committer.submit(6)


async def test_a_failing_commit_fails_every_waiter_of_its_batch() -> None:
    async def broken(items: Sequence[int]) -> list[int | BaseException]:
        raise OSError("disk full")

    committer: GroupCommitter[int, int] = GroupCommitter(broken)
    results = await asyncio.gather(*[committer.submit(i) for i in range(3)], return_exceptions=True)
    assert all(isinstance(r, OSError) for r in results)
    await committer.close()


async def test_a_cancelled_caller_does_not_cancel_its_turn(db_url: str) -> None:
    store = await Store.open(db_url, migrate=True)
    await store.conversations.open("s", agent_name="a")
    message = [ModelRequest(parts=[UserPromptPart("kept")])]
    waiting = asyncio.create_task(store.conversations.append_turn("s", message))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await store.close()
    async with Store.open(db_url, migrate=True) as reopened:
        history = await reopened.conversations.history("s")
    assert [m.parts[0].content for m in history] == ["kept"]
