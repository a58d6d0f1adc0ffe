from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from pydantic_ai.messages import (
    BinaryContent,
    ModelMessage,
    ModelMessagesTypeAdapter,
    ModelRequest,
    ModelResponse,
    SystemPromptPart,
    TextPart,
    ThinkingPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.usage import RequestUsage
from sqlalchemy import text

from netsuke.store import Execution, FencedError, NotFoundError, Store, ValidationError

T0 = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def tool_turn(i: int) -> list[ModelMessage]:
    return [
        ModelRequest(
            parts=[
                SystemPromptPart("be brief", timestamp=T0),
                UserPromptPart(f"question {i}", timestamp=T0),
            ]
        ),
        ModelResponse(
            parts=[
                ThinkingPart("let me look"),
                TextPart("checking"),
                ToolCallPart("lookup", {"q": f"q{i}", "n": [1, 2.5, None]}, tool_call_id=f"c{i}"),
            ],
            usage=RequestUsage(input_tokens=11, output_tokens=7),
            model_name="test-model",
            timestamp=T0,
        ),
        ModelRequest(
            parts=[
                ToolReturnPart("lookup", {"rows": [{"id": i}]}, tool_call_id=f"c{i}", timestamp=T0),
                ToolReturnPart(
                    "lookup", "bad query", tool_call_id="r1", outcome="retried", timestamp=T0
                ),
            ]
        ),
        ModelResponse(
            parts=[TextPart(f"answer {i} - ünïcødé ✓ 日本")], model_name="test-model", timestamp=T0
        ),
    ]


async def test_history_round_trips_exactly_with_tool_calls(store: Store) -> None:
    await store.conversations.open("s1", agent_name="helper", user_id="u1")
    first = tool_turn(1)
    second = [
        ModelRequest(
            parts=[
                UserPromptPart(
                    ["look at this", BinaryContent(data=b"\x00\x01\xff", media_type="image/png")],
                    timestamp=T0,
                )
            ]
        ),
        ModelResponse(parts=[TextPart("a picture")], timestamp=T0),
    ]
    r1 = await store.conversations.append_turn("s1", first, Execution(agent_name="helper"))
    r2 = await store.conversations.append_turn("s1", second)
    assert (r1.first_seq, r1.last_seq) == (0, 3)
    assert (r2.first_seq, r2.last_seq) == (4, 5)
    history = await store.conversations.history("s1")
    assert history[:4] == first
    # pydantic-ai narrows BinaryContent to BinaryImage on load; the JSON is identical.
    dump = ModelMessagesTypeAdapter.dump_json
    assert dump(history) == dump(first + second)
    assert history[4:] == ModelMessagesTypeAdapter.validate_json(dump(second))
    assert dump(await store.conversations.history("s1", limit=2)) == dump(second)
    conversation = await store.conversations.get("s1")
    assert conversation.message_count == 6
    assert conversation.user_id == "u1"


async def test_append_turn_writes_its_execution_in_the_same_commit(store: Store) -> None:
    await store.conversations.open("s1", agent_name="helper")
    started = datetime.now(UTC)
    execution = Execution(
        agent_name="helper",
        started_at=started,
        ended_at=started + timedelta(milliseconds=250),
        tokens_in=11,
        tokens_out=7,
    )
    receipt = await store.conversations.append_turn("s1", tool_turn(1), execution)
    stored = await store.executions.get(receipt.execution_id or "")
    assert stored.session_id == "s1"
    assert stored.kind == "agent_turn"
    assert stored.tokens_in == 11
    assert stored.tokens_out == 7
    assert stored.duration_ms == pytest.approx(250.0)
    async with store.database.read() as conn:
        linked = (
            await conn.execute(
                text("SELECT count(*) FROM messages WHERE execution_id = :e"),
                {"e": receipt.execution_id},
            )
        ).scalar_one()
    assert linked == 4


async def test_append_turn_row_takes_a_plain_row_and_the_database_still_checks_it(
    store: Store,
) -> None:
    await store.conversations.open("s1", agent_name="helper")
    started = datetime.now(UTC)
    row = Execution(
        agent_name="helper", session_id="s1", started_at=started, tokens_in=3, details={"d": 1}
    ).model_dump()
    receipt = await store.conversations.append_turn_row("s1", tool_turn(1), row)
    assert (receipt.first_seq, receipt.last_seq, receipt.execution_id) == (0, 3, row["id"])
    stored = await store.executions.get(row["id"])
    assert stored.tokens_in == 3 and stored.details == {"d": 1} and stored.started_at == started
    with pytest.raises(ValidationError) as refused:  # the same id again: the database refuses
        await store.conversations.append_turn_row("s1", tool_turn(2), row)
    assert refused.value.field == "execution"
    lacking = {k: v for k, v in row.items() if k != "tokens_out"} | {"id": "other"}
    with pytest.raises(ValidationError) as missing:
        await store.conversations.append_turn_row("s1", tool_turn(3), lacking)
    assert "tokens_out" in str(missing.value)
    assert len(await store.conversations.history("s1")) == 4, "nothing else was written"


async def test_unknown_session_and_foreign_agent_are_refused(store: Store) -> None:
    with pytest.raises(NotFoundError):
        await store.conversations.append_turn("nope", tool_turn(1))
    with pytest.raises(NotFoundError):
        await store.conversations.history("nope")
    await store.conversations.open("s1", agent_name="helper")
    with pytest.raises(ValidationError) as caught:
        await store.conversations.open("s1", agent_name="other")
    assert caught.value.field == "agent_name"
    assert (await store.conversations.open("s1", agent_name="helper")).session_id == "s1"


async def test_concurrent_writers_on_many_sessions_lose_nothing(store: Store) -> None:
    sessions = [f"s{i}" for i in range(20)]
    for session in sessions:
        await store.conversations.open(session, agent_name="helper", user_id="u")
    batches_before = _batches(store)

    async def writer(session: str) -> None:
        for turn in range(5):
            messages = [
                ModelRequest(parts=[UserPromptPart(f"{session}-{turn}", timestamp=T0)]),
                ModelResponse(parts=[TextPart(f"re {session}-{turn}")], timestamp=T0),
            ]
            receipt = await store.conversations.append_turn(
                session, messages, Execution(agent_name="helper")
            )
            assert receipt.first_seq == 2 * turn

    await asyncio.gather(*[writer(s) for s in sessions])
    for session in sessions:
        history = await store.conversations.history(session)
        assert [m.parts[0].content for m in history] == [
            text_ for turn in range(5) for text_ in (f"{session}-{turn}", f"re {session}-{turn}")
        ]
    page = await store.executions.list(agent_name="helper", limit=1000)
    assert len(page.items) == 100
    if store.conversations.group_commit:
        assert _batches(store) - batches_before < 100  # commits were shared


async def test_concurrent_turns_on_one_session_get_distinct_positions(store: Store) -> None:
    await store.conversations.open("s", agent_name="helper")
    receipts = await asyncio.gather(
        *[
            store.conversations.append_turn(
                "s", [ModelRequest(parts=[UserPromptPart(str(i), timestamp=T0)])]
            )
            for i in range(30)
        ]
    )
    assert sorted(r.first_seq for r in receipts) == list(range(30))
    history = await store.conversations.history("s")
    by_seq = {r.first_seq: i for i, r in enumerate(receipts)}
    assert [m.parts[0].content for m in history] == [str(by_seq[s]) for s in range(30)]


async def test_a_bad_turn_in_a_batch_fails_alone(store: Store) -> None:
    await store.conversations.open("good", agent_name="helper")
    messages = [ModelRequest(parts=[UserPromptPart("hi", timestamp=T0)])]
    duplicate = Execution(agent_name="helper")
    await store.executions.record(duplicate)
    results = await asyncio.gather(
        store.conversations.append_turn("good", messages),
        store.conversations.append_turn("good", messages, duplicate),
        store.conversations.append_turn("missing", messages),
        store.conversations.append_turn("good", messages, Execution(parent_id="no-such-parent")),
        store.conversations.append_turn("good", messages),
        return_exceptions=True,
    )
    assert isinstance(results[1], ValidationError)
    assert results[1].field == "execution"
    assert isinstance(results[2], NotFoundError)
    assert isinstance(results[3], ValidationError)
    assert len(await store.conversations.history("good")) == 2
    assert (await store.conversations.get("good")).message_count == 2


async def test_turns_queued_before_close_are_committed(db_url: str) -> None:
    store = await Store.open(db_url, migrate=True)
    await store.conversations.open("s", agent_name="helper")
    messages = [ModelRequest(parts=[UserPromptPart("hi", timestamp=T0)])]
    pending = [
        asyncio.create_task(store.conversations.append_turn("s", messages)) for _ in range(10)
    ]
    await asyncio.sleep(0)
    await store.close()
    receipts = await asyncio.gather(*pending)
    assert len(receipts) == 10
    async with (
        Store.open(db_url)
        if db_url.startswith("sqlite")
        else Store.open(db_url, migrate=True) as reopened
    ):
        assert len(await reopened.conversations.history("s")) == 10


async def test_list_and_delete_conversations(store: Store) -> None:
    for i in range(5):
        await store.conversations.open(
            f"s{i}", agent_name="a" if i % 2 else "b", user_id=f"u{i % 2}"
        )
    page = await store.conversations.list(agent_name="a")
    assert [c.session_id for c in page.items] == ["s3", "s1"]
    first = await store.conversations.list(limit=2)
    second = await store.conversations.list(limit=2, cursor=first.next_cursor)
    assert [c.session_id for c in first.items + second.items] == ["s4", "s3", "s2", "s1"]
    await store.conversations.append_turn("s1", tool_turn(1))
    await store.conversations.delete("s1")
    with pytest.raises(NotFoundError):
        await store.conversations.get("s1")
    async with store.database.read() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM messages"))).scalar_one() == 0


def _batches(store: Store) -> int:
    from netsuke.store._observe import METRICS

    return METRICS.commit_batches


async def test_without_group_commit_concurrent_turns_commit_one_by_one(db_url: str) -> None:
    async with Store.open(db_url, migrate=True, group_commit=False) as store:
        assert not store.conversations.group_commit
        await store.conversations.open("s", agent_name="helper")
        before = _batches(store)
        receipts = await asyncio.gather(
            *[
                store.conversations.append_turn(
                    "s",
                    [ModelRequest(parts=[UserPromptPart(str(i), timestamp=T0)])],
                    Execution(agent_name="helper"),
                )
                for i in range(12)
            ]
        )
        assert sorted(r.first_seq for r in receipts) == list(range(12))
        assert _batches(store) - before == 12
        assert len(await store.conversations.history("s")) == 12


async def test_a_turn_of_a_superseded_incarnation_is_fenced(store: Store) -> None:
    conv = store.conversations
    first = await conv.open("s", agent_name="helper", claim=True)
    assert first.incarnation == 1
    hi = [ModelRequest(parts=[UserPromptPart("hi", timestamp=T0)])]
    await conv.append_turn("s", hi, incarnation=1)
    second = await conv.open("s", agent_name="helper", claim=True)  # a successor took over
    assert second.incarnation == 2 and second.message_count == 1
    assert (await conv.open("s", agent_name="helper")).incarnation == 2  # no claim: unchanged
    late = Execution(agent_name="helper")
    with pytest.raises(FencedError) as ei:
        await conv.append_turn("s", hi, late, incarnation=1)
    assert (ei.value.session_id, ei.value.incarnation, ei.value.current) == ("s", 1, 2)
    # nothing of the fenced turn was written: neither its messages nor its execution row
    assert (await conv.get("s")).message_count == 1
    assert len(await conv.history("s")) == 1
    with pytest.raises(NotFoundError):
        await store.executions.get(late.id)
    # the successor's turns, and unfenced ones, commit
    await conv.append_turn("s", hi, incarnation=2)
    await conv.append_turn("s", hi)
    assert (await conv.get("s")).message_count == 3


async def test_a_fenced_turn_in_a_batch_fails_alone(store: Store) -> None:
    conv = store.conversations
    await conv.open("a", agent_name="helper", claim=True)
    await conv.open("b", agent_name="helper", claim=True)
    await conv.open("b", agent_name="helper", claim=True)  # b is at incarnation 2
    hi = [ModelRequest(parts=[UserPromptPart("hi", timestamp=T0)])]
    results = await asyncio.gather(
        *(conv.append_turn("a", hi, incarnation=1) for _ in range(3)),
        conv.append_turn("b", hi, incarnation=1),
        conv.append_turn("b", hi, incarnation=2),
        conv.append_turn("missing", hi, incarnation=1),
        return_exceptions=True,
    )
    assert isinstance(results[3], FencedError)
    assert isinstance(results[5], NotFoundError)
    assert [type(r).__name__ for r in results[:3]] == ["TurnReceipt"] * 3
    assert (await conv.get("a")).message_count == 3
    assert (await conv.get("b")).message_count == 1
