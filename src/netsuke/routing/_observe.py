"""Counters, spans and the logger of the routing layer.

Plain integers read at scrape time by one collector on ``netsuke.observability.REGISTRY``:

* ``netsuke_tasks_total{event}``: submitted, duplicate, started, succeeded, retried, failed,
  dead_lettered, fallback, lease_lost, requeued, purged; jetstream_compactions (purges of a
  JetStream work stream's acked messages);
* ``netsuke_routing_decisions_total{outcome}``: routed, fallback, no_route;
* ``netsuke_delegations_total{outcome}``: ok, error, not_allowed, depth, cycle;
* ``netsuke_workflow_steps_total{status}``: succeeded, failed, retried, skipped (resumed);
* ``netsuke_tasks_unroutable`` (gauge, on a node hosting workers): ready queued tasks that no
  agent or worker of the node can take.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

from opentelemetry import trace
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from netsuke.observability import get_logger, get_tracer, register_collector

__all__ = ["METRICS", "log", "tracer", "tracing"]

log = get_logger("netsuke.routing")
tracer = get_tracer("netsuke.routing")

_NO_OP = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)


_checked = [False, -1.0]  # [configured, when last checked (monotonic)]


def tracing() -> bool:
    """Whether an OpenTelemetry SDK is configured (spans are recorded). Without one every span
    is a no-op: the queue's per-task paths skip creating them (a few microseconds each). The
    global provider is set once: looked up at most every 0.1 s until it is."""
    if _checked[0]:
        return True
    now = time.monotonic()
    if now - _checked[1] >= 0.1:
        _checked[0] = not isinstance(trace.get_tracer_provider(), _NO_OP)
        _checked[1] = now
    return bool(_checked[0])


class RoutingMetrics(Collector):
    def __init__(self) -> None:
        self.tasks: Counter[str] = Counter()
        self.routing: Counter[str] = Counter()
        self.delegations: Counter[str] = Counter()
        self.steps: Counter[str] = Counter()
        self.unroutable: int | None = None
        """Ready queued tasks that no agent or worker of this node offers (None: not known)."""

    def collect(self) -> Iterator[Metric]:
        for name, doc, label, counter in (
            ("netsuke_tasks", "Task queue events", "event", self.tasks),
            ("netsuke_routing_decisions", "Capability routing decisions", "outcome", self.routing),
            ("netsuke_delegations", "Delegations between agents", "outcome", self.delegations),
            ("netsuke_workflow_steps", "Workflow step outcomes", "status", self.steps),
        ):
            family = CounterMetricFamily(name, doc, labels=[label])
            for key, value in sorted(counter.items()):
                family.add_metric([key], value)
            yield family
        if self.unroutable is not None:
            yield GaugeMetricFamily(
                "netsuke_tasks_unroutable",
                "Ready queued tasks no agent or worker of this node can take",
                value=self.unroutable,
            )


METRICS = RoutingMetrics()
register_collector(METRICS)
