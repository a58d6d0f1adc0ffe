"""``ExecutionGate``: node-wide and per-caller bounds on calls at once, a bounded queue, and
``ExecutionBusyError`` past them (no worker needed: the gate alone, held open by events)."""

from __future__ import annotations

import asyncio

import pytest

from netsuke.sandbox import ExecutionBusyError, ExecutionGate


async def _hold(gate: ExecutionGate, caller: str | None, release: asyncio.Event) -> str:
    async with gate.slot(caller):
        await release.wait()
    return "ran"


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_per_caller_and_node_bounds() -> None:
    gate = ExecutionGate(max_running=2, per_caller=1, max_waiting=1, max_wait_s=60)
    release = asyncio.Event()
    first = asyncio.create_task(_hold(gate, "a", release))
    second = asyncio.create_task(_hold(gate, "b", release))
    await _settle()
    assert (gate.running, gate.waiting) == (2, 0)
    with pytest.raises(ExecutionBusyError) as mine:
        async with gate.slot("a"):
            pass
    assert (mine.value.scope, mine.value.limit, mine.value.retry_after_s) == ("caller", 1, 1)
    queued = asyncio.create_task(_hold(gate, "c", release))
    await _settle()
    assert gate.waiting == 1
    with pytest.raises(ExecutionBusyError) as full:
        async with gate.slot("d"):
            pass
    assert full.value.scope == "node" and full.value.limit == 2
    with pytest.raises(ExecutionBusyError):  # no caller: the node bound still applies
        async with gate.slot(None):
            pass
    release.set()
    assert await asyncio.gather(first, second, queued) == ["ran"] * 3
    assert (gate.running, gate.waiting) == (0, 0)
    async with gate.slot("a"):  # every slot and caller count was given back
        assert gate.running == 1


async def test_a_wait_past_its_bound_is_refused_and_gives_its_place_back() -> None:
    gate = ExecutionGate(max_running=1, per_caller=5, max_waiting=4, max_wait_s=0.05)
    release = asyncio.Event()
    holder = asyncio.create_task(_hold(gate, "a", release))
    await _settle()
    with pytest.raises(ExecutionBusyError) as info:
        async with gate.slot("b"):
            pass
    assert info.value.scope == "node"
    assert (gate.running, gate.waiting) == (1, 0)
    release.set()
    await holder


async def test_a_cancelled_waiter_gives_its_place_back() -> None:
    gate = ExecutionGate(max_running=1, per_caller=1, max_waiting=1, max_wait_s=60)
    release = asyncio.Event()
    holder = asyncio.create_task(_hold(gate, "a", release))
    waiter = asyncio.create_task(_hold(gate, "b", release))
    await _settle()
    assert gate.waiting == 1
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert gate.waiting == 0
    release.set()
    await holder
    async with gate.slot("b"):
        assert gate.running == 1


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="max_running"):
        ExecutionGate(max_running=0)
