"""Metrics, spans and logs around repository operations.

Counters are plain integers read at scrape time by one collector on
``netsuke.observability.REGISTRY``:

* ``netsuke_store_operations_total{repo, operation, outcome}``: outcome ``ok``, the name of a
  ``StoreError`` subclass (refused), or ``error`` (anything else);
* ``netsuke_store_turns_committed_total`` and ``netsuke_store_commit_batches_total``: turns
  persisted and the transactions that carried them (their ratio is the group-commit factor).

Every operation runs in an OpenTelemetry span ``store.<repo>.<operation>``; refusals are
logged at info and failures at warning with structlog, with the repo, operation and key.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from netsuke.observability import get_logger, get_tracer, register_collector

from ._errors import StoreError

__all__ = ["METRICS", "log", "operation"]

log = get_logger("netsuke.store")
_tracer = get_tracer("netsuke.store")


class StoreMetrics(Collector):
    def __init__(self) -> None:
        self.operations: Counter[tuple[str, str, str]] = Counter()
        self.turns_committed = 0
        self.commit_batches = 0

    def collect(self) -> Iterator[Metric]:
        ops = CounterMetricFamily(
            "netsuke_store_operations",
            "Store repository operations by outcome",
            labels=["repo", "operation", "outcome"],
        )
        for (repo, op, outcome), count in sorted(self.operations.items()):
            ops.add_metric([repo, op, outcome], count)
        yield ops
        yield CounterMetricFamily(
            "netsuke_store_turns_committed",
            "Conversation turns committed",
            value=self.turns_committed,
        )
        yield CounterMetricFamily(
            "netsuke_store_commit_batches",
            "Transactions that committed conversation turns (group commit batches)",
            value=self.commit_batches,
        )


METRICS = StoreMetrics()
register_collector(METRICS)


@contextmanager
def operation(repo: str, op: str, **attributes: Any) -> Iterator[Any]:
    """Span, counter and log for one repository operation."""
    attrs = {f"netsuke.store.{k}": v for k, v in attributes.items() if v is not None}
    with _tracer.start_as_current_span(f"store.{repo}.{op}", attributes=attrs) as span:
        try:
            yield span
        except StoreError as exc:
            METRICS.operations[(repo, op, type(exc).__name__)] += 1
            log.info("store.refused", repo=repo, operation=op, error=str(exc), **attributes)
            raise
        except BaseException as exc:
            METRICS.operations[(repo, op, "error")] += 1
            log.warning("store.failed", repo=repo, operation=op, error=repr(exc), **attributes)
            raise
        METRICS.operations[(repo, op, "ok")] += 1
