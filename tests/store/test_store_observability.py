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


class _Span:
    def __init__(self, name: str, attributes: dict[str, object]) -> None:
        self.name = name
        self.attributes = dict(attributes)
        self.ended = False
        self.error: BaseException | None = None

    def set_attribute(self, key: str, value: object) -> None:
        self.attributes[key] = value

    def record_exception(self, exc: BaseException) -> None:
        self.error = exc

    def set_status(self, status: object) -> None:
        pass

    def end(self) -> None:
        self.ended = True


class _Tracer:
    def __init__(self) -> None:
        self.spans: list[_Span] = []

    def start_span(self, name: str, attributes: dict[str, object]) -> _Span:
        self.spans.append(_Span(name, attributes))
        return self.spans[-1]


async def test_repository_operations_run_in_spans(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from netsuke.store import _observe

    tracer = _Tracer()
    monkeypatch.setattr(_observe, "_tracer", tracer)
    await store.agents.create(agent("a"))
    with pytest.raises(ValidationError):
        await store.agents.create(agent("b", tools=["Bad"]))
    await store.conversations.open("s", agent_name="a")
    await store.conversations.append_turn("s", [])
    names = [s.name for s in tracer.spans]
    assert names == [
        "store.agents.create",
        "store.agents.create",
        "store.conversations.open",
        "store.conversations.append_turn",
    ]
    assert all(s.ended for s in tracer.spans)
    assert tracer.spans[0].attributes["netsuke.store.name"] == "a"
    assert tracer.spans[1].attributes["netsuke.store.refused"] == "ValidationError"
    assert tracer.spans[2].attributes["netsuke.store.session_id"] == "s"
