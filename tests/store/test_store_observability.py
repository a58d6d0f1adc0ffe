from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from netsuke.observability import render_metrics
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
