from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from netsuke.observability import render_metrics
from netsuke.observability.testing import capture_spans
from netsuke.store import Store, ValidationError

from .helpers import agent


def _sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


async def test_operations_and_turns_are_counted_on_the_netsuke_registry(store: Store) -> None:
    before = render_metrics().decode()
    await store.agents.create(agent("a"))
    with pytest.raises(ValidationError):
        await store.agents.create(agent("b", model="nope"))
    await store.conversations.open("s", agent_name="a")
    await store.conversations.append_turn("s", [])
    after = render_metrics().decode()
    ok = {"repo": "agents", "operation": "create", "outcome": "ok"}
    assert _sample(after, "netsuke_store_operations_total", **ok) == (
        _sample(before, "netsuke_store_operations_total", **ok) + 1
    )
    refused = {"repo": "agents", "operation": "create", "outcome": "ValidationError"}
    assert _sample(after, "netsuke_store_operations_total", **refused) == (
        _sample(before, "netsuke_store_operations_total", **refused) + 1
    )
    assert _sample(after, "netsuke_store_turns_committed_total") == (
        _sample(before, "netsuke_store_turns_committed_total") + 1
    )


async def test_repository_operations_run_in_real_otel_spans(store: Store) -> None:
    with capture_spans() as spans:
        await store.agents.create(agent("a"))
        with pytest.raises(ValidationError):
            await store.agents.create(agent("b", tools=["Bad"]))
        await store.conversations.open("s", agent_name="a")
        await store.conversations.append_turn("s", [])
    ours = [s for s in spans if s.name.startswith("store.")]
    assert [s.name for s in ours] == [
        "store.agents.create",
        "store.agents.create",
        "store.conversations.open",
        "store.conversations.append_turn",
    ]
    assert all(s.end_time is not None for s in ours)
    assert ours[0].attributes is not None and ours[0].attributes["netsuke.store.name"] == "a"
    assert ours[1].attributes is not None
    assert ours[1].attributes["netsuke.store.refused"] == "ValidationError"
    assert ours[2].attributes is not None
    assert ours[2].attributes["netsuke.store.session_id"] == "s"
