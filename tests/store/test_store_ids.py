"""Row ids are UUIDv7 (RFC 9562): canonical strings that sort by the time they were made."""

from __future__ import annotations

import time
import uuid

from netsuke.store import Execution, new_id


def test_an_id_is_a_canonical_version_7_uuid_carrying_the_time() -> None:
    before = time.time_ns() // 1_000_000
    value = new_id()
    after = time.time_ns() // 1_000_000
    parsed = uuid.UUID(value)
    assert str(parsed) == value  # canonical, lower-case 8-4-4-4-12
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert before <= parsed.int >> 80 <= after


def test_ids_are_unique_and_later_ones_sort_after_earlier_ones() -> None:
    first = [new_id() for _ in range(20_000)]
    time.sleep(0.002)  # the next millisecond
    later = [new_id() for _ in range(1_000)]
    assert len(set(first + later)) == len(first) + len(later)
    assert max(first) < min(later)
    # the random bits differ between ids made in the same millisecond
    assert len({i[14:] for i in first}) == len(first)


def test_executions_get_version_7_ids_by_default() -> None:
    e = Execution(kind="task")
    assert uuid.UUID(e.id).version == 7


def test_a_batch_of_ids_is_canonical_version_7_unique_and_of_its_millisecond() -> None:
    from netsuke.store._ids import new_ids

    before = time.time_ns() // 1_000_000
    batch = new_ids(5_000)
    after = time.time_ns() // 1_000_000
    assert len(set(batch)) == 5_000 and new_ids(0) == []
    for value in batch[:100]:
        parsed = uuid.UUID(value)
        assert str(parsed) == value and parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
        assert before <= parsed.int >> 80 <= after
