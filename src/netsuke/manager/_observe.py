"""Prometheus figures of the manager, read at scrape time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ..observability import register_collector, unregister_collector

if TYPE_CHECKING:
    from ._manager import AgentManager


class ManagerCollector(Collector):
    def __init__(self, manager: AgentManager) -> None:
        self._manager = manager

    def register(self) -> None:
        register_collector(self)

    def unregister(self) -> None:
        unregister_collector(self)

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        states = GaugeMetricFamily(
            "netsuke_manager_agents", "Package agents by state.", labels=["state"]
        )
        restarts = CounterMetricFamily(
            "netsuke_manager_restarts", "Restarts of package agents.", labels=["agent_id"]
        )
        counts: dict[str, int] = {}
        for rec in self._manager.registry.all():
            counts[rec.status.value] = counts.get(rec.status.value, 0) + 1
            restarts.add_metric([rec.agent_id], rec.restarts)
        for state, n in counts.items():
            states.add_metric([state], n)
        yield states
        yield restarts
