"""Counters, logs and spans of the agents layer.

Counters are plain integers read at scrape time by one collector on
``netsuke.observability.REGISTRY``, so a turn pays an integer increment:

* ``netsuke_agent_turns_total{outcome}``: ``started``, ``succeeded``, ``failed``,
  ``cancelled``, ``timeout``, ``busy`` (refused), ``fenced`` (not committed: the session
  moved), ``replayed`` (a request id answered from its stored reply);
* ``netsuke_agent_turn_seconds_total``, ``netsuke_agent_tokens_total{direction}``;
* ``netsuke_agent_lifecycle_total{event}``: ``restarted``, ``crashed``, ``hibernated``,
  ``evicted``; ``netsuke_agent_tool_errors_total``.

Each turn runs in a span ``agent.turn`` (agent, session, execution). Logs (structlog, logger
``netsuke.agents``): ``agent_turn_failed``, ``agent_turn_fenced``, ``agent_owner_exited``,
``agent_model_retry``, ``agent_tool_error``, ``agent_failure_not_recorded``.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from netsuke.observability import get_logger, get_tracer, register_collector

__all__ = ["METRICS", "log", "tracer"]

log = get_logger("netsuke.agents")
tracer = get_tracer("netsuke.agents")


class AgentMetrics(Collector):
    def __init__(self) -> None:
        self.started = 0
        self.running = 0  # turns whose task is running, in this process
        self.succeeded = 0
        self.failed = 0
        self.cancelled = 0
        self.timeouts = 0
        self.busy = 0
        self.fenced = 0
        self.replayed = 0
        self.seconds = 0.0
        self.tokens_in = 0
        self.tokens_out = 0
        self.restarts = 0
        self.crashes = 0
        self.hibernations = 0
        self.evictions = 0
        self.owners_restored = 0  # a session taken over monitors its stored owner again
        self.owner_exits = 0  # an owner's exit applied the owner_policy

    def collect(self) -> Iterator[Metric]:
        from ._tools import ToolErrorsToModel

        turns = CounterMetricFamily(
            "netsuke_agent_turns", "Agent turns by outcome", labels=["outcome"]
        )
        for outcome, v in (
            ("started", self.started),
            ("succeeded", self.succeeded),
            ("failed", self.failed),
            ("cancelled", self.cancelled),
            ("timeout", self.timeouts),
            ("busy", self.busy),
            ("fenced", self.fenced),
            ("replayed", self.replayed),
        ):
            turns.add_metric([outcome], v)
        yield turns
        yield GaugeMetricFamily(
            "netsuke_agent_turns_running", "Agent turns running now", value=self.running
        )
        yield CounterMetricFamily(
            "netsuke_agent_turn_seconds", "Seconds spent in successful turns", value=self.seconds
        )
        tokens = CounterMetricFamily(
            "netsuke_agent_tokens", "Model tokens used by turns", labels=["direction"]
        )
        tokens.add_metric(["in"], self.tokens_in)
        tokens.add_metric(["out"], self.tokens_out)
        yield tokens
        life = CounterMetricFamily(
            "netsuke_agent_lifecycle", "Agent lifecycle events", labels=["event"]
        )
        for ev, v in (
            ("restarted", self.restarts),
            ("crashed", self.crashes),
            ("hibernated", self.hibernations),
            ("evicted", self.evictions),
            ("owner_restored", self.owners_restored),
            ("owner_exited", self.owner_exits),
        ):
            life.add_metric([ev], v)
        yield life
        yield CounterMetricFamily(
            "netsuke_agent_tool_errors",
            "Tool exceptions sent back to the model",
            value=ToolErrorsToModel.errors,
        )


METRICS = AgentMetrics()
register_collector(METRICS)
