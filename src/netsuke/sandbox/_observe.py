"""Metrics, spans and logs for the sandbox.

Plain counters read at scrape time by one collector on ``netsuke.observability.REGISTRY``:

* ``netsuke_sandbox_executions_total{status}``: calls by outcome (``succeeded``, ``timeout``,
  ``memory``, ``violation``, ``error``, ``invalid_result``, ``invalid_arguments``,
  ``output_limit``, ``crashed``, ``refused``);
* ``netsuke_sandbox_execution_seconds``: histogram of call durations (host view);
* ``netsuke_sandbox_workers_started_total``, ``netsuke_sandbox_cold_starts_total``;
* ``netsuke_sandbox_validations_refused_total``: code refused at store time;
* ``netsuke_sandbox_executions_busy_total{scope}``: calls refused by the ``ExecutionGate``
  (``caller`` or ``node``), before anything ran.

Each execution runs in an OpenTelemetry span ``sandbox.execute``.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from netsuke.observability import get_logger, get_tracer, register_collector

__all__ = ["METRICS", "log", "tracer"]

log = get_logger("netsuke.sandbox")
tracer = get_tracer("netsuke.sandbox")

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class SandboxMetrics(Collector):
    def __init__(self) -> None:
        self.executions: Counter[str] = Counter()
        self.buckets = [0] * (len(_BUCKETS) + 1)
        self.duration_sum = 0.0
        self.workers_started = 0
        self.cold_starts = 0
        self.refused = 0
        self.busy: Counter[str] = Counter()

    def observe(self, status: str, seconds: float) -> None:
        self.executions[status] += 1
        self.buckets[bisect.bisect_left(_BUCKETS, seconds)] += 1
        self.duration_sum += seconds

    def collect(self) -> Iterator[Metric]:
        calls = CounterMetricFamily(
            "netsuke_sandbox_executions", "Sandboxed function calls by outcome", labels=["status"]
        )
        for status, count in sorted(self.executions.items()):
            calls.add_metric([status], count)
        yield calls
        cumulative, acc = [], 0
        for bound, count in zip((*map(str, _BUCKETS), "+Inf"), self.buckets, strict=True):
            acc += count
            cumulative.append((bound, acc))
        yield HistogramMetricFamily(
            "netsuke_sandbox_execution_seconds",
            "Duration of sandboxed calls",
            buckets=cumulative,
            sum_value=self.duration_sum,
        )
        yield CounterMetricFamily(
            "netsuke_sandbox_workers_started",
            "Worker processes started",
            value=self.workers_started,
        )
        yield CounterMetricFamily(
            "netsuke_sandbox_cold_starts",
            "Calls that found no pre-started worker",
            value=self.cold_starts,
        )
        yield CounterMetricFamily(
            "netsuke_sandbox_validations_refused",
            "Function code refused at store time",
            value=self.refused,
        )
        busy = CounterMetricFamily(
            "netsuke_sandbox_executions_busy",
            "Function calls refused for too many at once, by scope (caller or node)",
            labels=["scope"],
        )
        for scope, count in sorted(self.busy.items()):
            busy.add_metric([scope], count)
        yield busy


METRICS = SandboxMetrics()
register_collector(METRICS)
