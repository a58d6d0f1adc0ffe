"""Test helpers for traces: capture the spans Netsuke finishes, with the real OpenTelemetry SDK.

::

    with capture_spans() as spans:
        await store.agents.create(...)
    assert any(s.name == "netsuke.store.agents.create" for s in spans)

The first use installs an SDK ``TracerProvider`` as the global provider (OpenTelemetry allows
setting it once per process) unless one is already installed; tracers obtained earlier through
``get_tracer`` are proxies and start recording at once. Each ``capture_spans`` block sees only
the spans that finished inside it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

__all__ = ["capture_spans"]

_exporter: InMemorySpanExporter | None = None


def _install() -> InMemorySpanExporter:
    global _exporter
    if _exporter is None:
        provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):
            provider = TracerProvider()
            trace.set_tracer_provider(provider)
        _exporter = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(_exporter))
    return _exporter


class Spans(list[ReadableSpan]):
    """The finished spans of one capture block (a list that fills as spans end)."""

    def names(self) -> list[str]:
        return [s.name for s in self]

    def named(self, name: str) -> Sequence[ReadableSpan]:
        return [s for s in self if s.name == name]


@contextmanager
def capture_spans() -> Iterator[Spans]:
    """Collect the spans finished inside the block (see the module documentation)."""
    exporter = _install()
    exporter.clear()
    spans = Spans()
    try:
        yield spans
    finally:
        spans.extend(exporter.get_finished_spans())
        exporter.clear()
