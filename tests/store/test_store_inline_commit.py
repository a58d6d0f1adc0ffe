"""SQLite: a lone turn is committed on the event loop, everything else on the writer thread.

The decision (``SqliteTurnWriter.append``): inline only when the caller says the turn is lone,
nothing is waiting for the thread, and the moving average of commit times is at most
``inline_commit_ms``. Either way the turn is committed before ``append_turn_row`` returns.
"""

from __future__ import annotations

import asyncio
import copy
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic_ai.messages import ModelMessage, ModelRequest, UserPromptPart
from sqlalchemy import text

from netsuke.store import Store, ValidationError
from netsuke.store._observe import METRICS
from netsuke.store._turn_writers import SqliteTurnWriter


def _url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'inline.db'}"


def _says(text: str) -> list[ModelMessage]:
    return [ModelRequest(parts=[UserPromptPart(text)])]


def _row(session: str, execution_id: str | None = None) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "id": execution_id or str(uuid.uuid4()),
        "kind": "agent_turn",
        "status": "succeeded",
        "agent_name": "a",
        "function_name": None,
        "session_id": session,
        "parent_id": None,
        "started_at": now,
        "ended_at": now,
        "duration_ms": 1.0,
        "tokens_in": 3,
        "tokens_out": 4,
        "error": None,
        "details": {"chain": ["a"], "depth": 0},
    }


def _writer(store: Store) -> SqliteTurnWriter:
    writer = store.conversations._writer
    assert isinstance(writer, SqliteTurnWriter)
    return writer


async def _texts(store: Store, session: str) -> list[str]:
    return [m.parts[0].content for m in await store.conversations.history(session)]  # type: ignore[union-attr]


async def test_a_lone_turn_is_committed_on_the_loop_and_survives_reopening(tmp_path: Path) -> None:
    before = METRICS.inline_commits
    async with Store.open(_url(tmp_path)) as store:
        await store.conversations.open("s", agent_name="a")
        row = _row("s")
        receipt = await store.conversations.append_turn_row("s", _says("one"), row, lone=True)
        assert (receipt.first_seq, receipt.last_seq, receipt.execution_id) == (0, 0, row["id"])
        assert METRICS.inline_commits == before + 1
        assert _writer(store)._thread is None  # no thread was needed
        assert _writer(store).commit_seconds > 0
    async with Store.open(_url(tmp_path)) as reopened:
        assert await _texts(reopened, "s") == ["one"]
        execution = await reopened.executions.get(row["id"])
        assert (execution.tokens_in, execution.tokens_out) == (3, 4)


async def test_a_turn_that_is_not_lone_goes_to_the_writer_thread(tmp_path: Path) -> None:
    before = METRICS.inline_commits
    async with Store.open(_url(tmp_path)) as store:
        await store.conversations.open("s", agent_name="a")
        await store.conversations.append_turn_row("s", _says("one"), _row("s"))
        assert METRICS.inline_commits == before
        assert _writer(store)._thread is not None
        assert await _texts(store, "s") == ["one"]


async def test_inline_commit_ms_zero_never_commits_on_the_loop(tmp_path: Path) -> None:
    before = METRICS.inline_commits
    async with Store.open(_url(tmp_path), inline_commit_ms=0) as store:
        await store.conversations.open("s", agent_name="a")
        for text in ("one", "two"):
            await store.conversations.append_turn_row("s", _says(text), None, lone=True)
        assert METRICS.inline_commits == before
        assert await _texts(store, "s") == ["one", "two"]


async def test_slow_commits_send_lone_turns_to_the_thread(tmp_path: Path) -> None:
    # A limit no real commit meets: the first lone turn is inline (no average yet), its
    # measured time lifts the average above the limit, and the next lone turn uses the thread.
    before = METRICS.inline_commits
    async with Store.open(_url(tmp_path), inline_commit_ms=1e-6) as store:
        await store.conversations.open("s", agent_name="a")
        await store.conversations.append_turn_row("s", _says("one"), None, lone=True)
        assert METRICS.inline_commits == before + 1
        assert _writer(store).commit_seconds > 1e-9
        await store.conversations.append_turn_row("s", _says("two"), None, lone=True)
        assert METRICS.inline_commits == before + 1
        assert _writer(store)._thread is not None
        assert await _texts(store, "s") == ["one", "two"]


async def test_a_lone_turn_joins_the_queue_while_the_thread_has_turns(tmp_path: Path) -> None:
    async with Store.open(_url(tmp_path)) as store:
        conv = store.conversations
        for s in ("s", "t"):
            await conv.open(s, agent_name="a")
        await conv.append_turn_row("s", _says("warm"), None)  # the thread is running
        before = METRICS.inline_commits
        queued = [asyncio.create_task(conv.append_turn_row("s", _says(f"q{i}"))) for i in range(5)]
        await asyncio.sleep(0)  # the five are on the thread's queue (or being committed)
        assert _writer(store)._pending > 0
        await conv.append_turn_row("t", _says("lone"), None, lone=True)
        assert METRICS.inline_commits == before
        await asyncio.gather(*queued)
        assert sorted(await _texts(store, "s")) == sorted(["warm", *[f"q{i}" for i in range(5)]])
        assert await _texts(store, "t") == ["lone"]
        assert _writer(store)._pending == 0


async def test_a_refused_lone_turn_raises_and_stores_nothing(tmp_path: Path) -> None:
    async with Store.open(_url(tmp_path)) as store:
        await store.conversations.open("s", agent_name="a")
        row = _row("s")
        await store.conversations.append_turn_row("s", _says("one"), row, lone=True)
        with pytest.raises(ValidationError) as refused:
            await store.conversations.append_turn_row("s", _says("two"), dict(row), lone=True)
        assert refused.value.field == "execution"
        assert await _texts(store, "s") == ["one"]
        assert (await store.conversations.get("s")).message_count == 1
        # and the connection is still good
        await store.conversations.append_turn_row("s", _says("three"), _row("s"), lone=True)
        assert await _texts(store, "s") == ["one", "three"]


async def test_inline_and_thread_commits_interleave_without_losing_a_turn(tmp_path: Path) -> None:
    async with Store.open(_url(tmp_path)) as store:
        conv = store.conversations
        sessions = [f"s{i}" for i in range(8)]
        for s in sessions:
            await conv.open(s, agent_name="a")

        async def chat(s: str, lone: bool) -> None:
            for i in range(10):
                await conv.append_turn_row(s, _says(f"{s}-{i}"), _row(s), lone=lone)

        await asyncio.gather(*(chat(s, lone=i % 2 == 0) for i, s in enumerate(sessions)))
        for s in sessions:
            assert await _texts(store, s) == [f"{s}-{i}" for i in range(10)]
            assert (await conv.get(s)).message_count == 10


class _SteadyClock:
    """``time`` for the writer: every commit measures ``step`` seconds, whatever the load."""

    def __init__(self, step: float) -> None:
        self.step, self.now = step, 0.0

    def perf_counter(self) -> float:
        self.now += self.step / 2  # two readings per commit
        return self.now


async def test_a_lone_turn_never_waits_on_the_loop_for_another_connections_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A write transaction of the store's own pool (aiosqlite) holds the lock, and only this
    # event loop can drive it to its commit. Waiting for the lock on the loop would deadlock
    # until the busy timeout; the lone turn must go to the thread and wait there instead.
    before_inline, before_busy = METRICS.inline_commits, METRICS.inline_busy
    async with Store.open(_url(tmp_path)) as store:
        conv = store.conversations
        await conv.open("s", agent_name="a")
        async with store.database.write() as conn:
            await conn.execute(text("UPDATE conversations SET updated_at = updated_at"))
            turn = asyncio.create_task(
                conv.append_turn_row("s", _says("one"), _row("s"), lone=True)
            )
            await asyncio.sleep(0.2)  # the loop is free: this sleep returns on time
            assert not turn.done()  # waiting on the thread for the lock
        receipt = await asyncio.wait_for(turn, 5)
        assert receipt.first_seq == 0
        assert METRICS.inline_busy == before_busy + 1
        assert METRICS.inline_commits == before_inline
        assert await _texts(store, "s") == ["one"]
        # That commit's wall time included the wait for the lock, so the moving average is
        # high and lone turns use the thread until fast commits have brought it down again.
        assert _writer(store).commit_seconds > 0.002
        # From here commits measure 0.5 ms each (a steady clock, not the machine's load), so
        # the average comes down and the first lone turn at or under the limit goes inline.
        monkeypatch.setattr("netsuke.store._turn_writers.time", _SteadyClock(0.0005))
        texts = ["one"]
        for i in range(60):
            texts.append(f"t{i}")
            await conv.append_turn_row("s", _says(texts[-1]), _row("s"), lone=True)
            if METRICS.inline_commits > before_inline:
                break
        assert METRICS.inline_commits == before_inline + 1
        assert _writer(store).commit_seconds <= 0.002
        assert await _texts(store, "s") == texts


async def _rows(store: Store) -> tuple[list[Any], list[Any], list[Any]]:
    async with store.database.read() as conn:
        msgs = (
            await conn.execute(
                text(
                    "SELECT c.session_id, m.seq, m.kind, m.payload, m.execution_id FROM messages m "
                    "JOIN conversations c ON c.id = m.conversation_id ORDER BY c.session_id, m.seq"
                )
            )
        ).all()
        execs = (
            await conn.execute(
                text(
                    "SELECT id, kind, status, agent_name, session_id, started_at, ended_at, "
                    "tokens_in, tokens_out, details FROM executions ORDER BY id"
                )
            )
        ).all()
        counts = (
            await conn.execute(
                text("SELECT session_id, message_count FROM conversations ORDER BY session_id")
            )
        ).all()
    return list(msgs), list(execs), list(counts)


async def test_a_turn_written_alone_is_stored_exactly_as_in_a_batch(tmp_path: Path) -> None:
    """The single-turn write (every lone turn) and the batch write store the same rows, the
    same positions, the same counts and the same receipts, and fail the same way."""
    from netsuke.store._conversations import dump_messages
    from netsuke.store._turn_writers import Turn

    def turns() -> list[Turn]:
        out = []
        for i, session in enumerate(["s1", "s2", "s1", "s1", "nobody"]):
            msgs = _says(f"m{i}") + _says(f"n{i}") if i % 2 else _says(f"m{i}")
            out.append(
                Turn(session, dump_messages(msgs), _row(session, f"e{i}") if i != 2 else None)
            )
        return out

    results: dict[str, list[Any]] = {}
    rows: dict[str, tuple[list[Any], list[Any], list[Any]]] = {}
    # One timestamp for both stores' executions, so that only the write path differs.
    stamp = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    template = turns()  # the same payloads (with their timestamps) for both
    for t in template:
        if t.execution is not None:
            t.execution["started_at"] = t.execution["ended_at"] = stamp
    for mode in ("alone", "batch"):
        (tmp_path / mode).mkdir()
        async with Store.open(_url(tmp_path / mode)) as store:
            for session in ("s1", "s2"):
                await store.conversations.open(session, agent_name="a")
            writer = _writer(store)
            batch = copy.deepcopy(template)
            conn = writer._connect(busy_ms=1000)
            try:
                if mode == "alone":
                    out = [writer._write_batch([t], conn)[0] for t in batch]
                else:
                    out = writer._write_batch(batch, conn)
            finally:
                conn.close()
            results[mode] = [
                type(r).__name__ if isinstance(r, BaseException) else r.model_dump() for r in out
            ]
            rows[mode] = await _rows(store)
    assert results["alone"] == results["batch"]
    assert results["alone"][-1] == "NotFoundError"
    assert results["alone"][2] == {
        "session_id": "s1", "first_seq": 1, "last_seq": 1, "execution_id": None
    }  # fmt: skip
    alone, batch = rows["alone"], rows["batch"]
    assert alone[0] == batch[0]  # messages: sessions, positions, payloads, executions
    assert len(alone[0]) == 6
    assert alone[1] == batch[1]  # executions
    assert len(alone[1]) == 3  # not the unknown session's
    assert alone[2] == batch[2]  # message counts
    assert [tuple(r) for r in alone[2]] == [("s1", 4), ("s2", 2)]
