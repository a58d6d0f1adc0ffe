"""Metrics, spans and logs around repository operations.

Counters are plain integers read at scrape time by one collector on
``netsuke.observability.REGISTRY``:

* ``netsuke_store_operations_total{repo, operation, outcome}``: outcome ``ok``, the name of a
  ``StoreError`` subclass (refused), ``cancelled``, or ``error`` (anything else);
* ``netsuke_store_turns_committed_total`` and ``netsuke_store_commit_batches_total``: turns
  persisted and the transactions that carried them (their ratio is the group-commit factor);
* ``netsuke_store_inline_commits_total``: of those transactions, the ones a lone turn made
  on the event loop (SQLite; see ``_turn_writers``), and
  ``netsuke_store_inline_busy_total``: lone turns sent to the thread because another
  connection held the write lock;
* ``netsuke_store_write_lock_waits_total`` and ``netsuke_store_write_lock_wait_seconds_total``:
  SQLite turn commits that waited for the write lock (``BEGIN IMMEDIATE``) held by another
  connection (another node process of ``serve --nodes``, a CLI), and how long in all;
* ``netsuke_store_session_claims_total{result}``: session claims (``open(..., claim=True)``)
  by result: ``new`` (no owner before), ``same_node`` (this node's incarnation owned it),
  ``takeover`` (the owner was not live), ``refused`` (a live node owns it).

Every operation runs in an OpenTelemetry span ``store.<repo>.<operation>``; refusals are
logged at info and failures at warning with structlog, with the repo, operation and key.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from typing import Any

from opentelemetry.trace import Status, StatusCode
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
        self.inline_commits = 0
        self.inline_busy = 0
        self.lock_waits = 0
        self.lock_wait_seconds = 0.0
        self.claims: Counter[str] = Counter()

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
        yield CounterMetricFamily(
            "netsuke_store_inline_commits",
            "Turn commits made on the event loop (a lone turn, fast commits) instead of the "
            "writer thread",
            value=self.inline_commits,
        )
        yield CounterMetricFamily(
            "netsuke_store_inline_busy",
            "Lone turns that found the database locked by another connection and went to the "
            "writer thread instead of waiting on the event loop",
            value=self.inline_busy,
        )
        yield CounterMetricFamily(
            "netsuke_store_write_lock_waits",
            "Turn commits (SQLite) that waited for the write lock held by another connection",
            value=self.lock_waits,
        )
        yield CounterMetricFamily(
            "netsuke_store_write_lock_wait_seconds",
            "Seconds turn commits (SQLite) waited for the write lock held by another connection",
            value=self.lock_wait_seconds,
        )
        claims = CounterMetricFamily(
            "netsuke_store_session_claims", "Session ownership claims by result", labels=["result"]
        )
        for result in ("new", "same_node", "takeover", "refused"):
            claims.add_metric([result], self.claims[result])
        yield claims


METRICS = StoreMetrics()
register_collector(METRICS)


class operation:  # lower case: used as a context manager, like contextlib's
    """Span, counter and log for one repository operation: ``with operation(repo, op,
    **attributes) as span``.

    The span is started without being made current: nothing below a repository call opens
    spans of its own. A class rather than a generator-based context manager, because this
    runs on every turn: no generator and no wrapper object per operation."""

    __slots__ = ("_attributes", "_op", "_repo", "_span")

    def __init__(self, repo: str, op: str, **attributes: Any) -> None:
        self._repo = repo
        self._op = op
        self._attributes = attributes
        attrs = (
            {f"netsuke.store.{k}": v for k, v in attributes.items() if v is not None}
            if attributes
            else None
        )
        self._span = _tracer.start_span(f"store.{repo}.{op}", attributes=attrs)

    def __enter__(self) -> Any:
        return self._span

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        repo, op, span = self._repo, self._op, self._span
        try:
            if exc is None:
                METRICS.operations[(repo, op, "ok")] += 1
            elif isinstance(exc, StoreError):
                METRICS.operations[(repo, op, type(exc).__name__)] += 1
                span.set_attribute("netsuke.store.refused", type(exc).__name__)
                log.info(
                    "store.refused", repo=repo, operation=op, error=str(exc), **self._attributes
                )
            elif isinstance(exc, asyncio.CancelledError):
                METRICS.operations[(repo, op, "cancelled")] += 1
            else:
                METRICS.operations[(repo, op, "error")] += 1
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, repr(exc)))
                log.warning(
                    "store.failed", repo=repo, operation=op, error=repr(exc), **self._attributes
                )
        finally:
            span.end()
