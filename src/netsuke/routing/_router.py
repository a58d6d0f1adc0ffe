"""Capability routing ("minions"): pick the least-loaded live agent offering what a task needs.

Agents declare capabilities in their registry metadata: ``{"kind": "agent", "agent": name,
"capabilities": [...]}``. ``route(capabilities)`` returns the ``RegistryEntry`` of a live entry
whose capabilities include **all** of those asked for, with the lowest ``load``; ties go round
robin. With no match it returns the ``fallback`` agent's entry when one is configured and
registered, else raises ``NoRouteError(capabilities)``.

Load: ``load(entry)`` [``process_load(registry.runtime)``] reads the ``load`` attribute (a
number, or a callable returning one) of the entry's process object, 0 when it has none: no
round trip to the agent.

Cost: an index from capability to entries is built by one scan of the registry and reused while
the registry's size is unchanged and it is younger than ``refresh`` [``1.0`` s]; each pick is
checked against the live registry entry (so a dead or changed agent is never returned), and a
failed check rebuilds the index. A decision costs an intersection of the index's sets plus
O(matching entries), not O(registry).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable
from typing import Any

from netsuke.kernel import Registry, RegistryEntry, Runtime

from ._errors import NoRouteError
from ._observe import METRICS, log

__all__ = ["CapabilityRouter", "LoadFn", "process_load"]

LoadFn = Callable[[RegistryEntry], float]


def process_load(runtime: Runtime) -> LoadFn:
    """A load function reading ``runtime.process(pid).load`` (attribute or callable)."""

    def load(entry: RegistryEntry) -> float:
        proc = runtime.process(entry.pid)
        if proc is None:
            return float("inf")
        value = getattr(proc, "load", 0)
        if callable(value):
            value = value()
        return float(value)

    return load


def _caps(meta: Any) -> frozenset[str] | None:
    if not isinstance(meta, dict):
        return None
    caps = meta.get("capabilities")
    if not isinstance(caps, list | tuple | set | frozenset):
        return None
    return frozenset(c for c in caps if isinstance(c, str))


class CapabilityRouter:
    """Routes by capability over ``registry`` entries whose metadata has ``kind == kind``
    [``"agent"``; ``None``: any kind]. See the module documentation."""

    def __init__(
        self,
        registry: Registry,
        *,
        load: LoadFn | None = None,
        fallback: str | None = None,
        kind: str | None = "agent",
        refresh: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.load = load or process_load(registry.runtime)
        self.fallback = fallback
        self.kind = kind
        self.refresh = refresh
        self._clock = clock
        self._index: dict[str, set[int]] = {}
        self._all: list[RegistryEntry] = []
        self._size = -1
        self._built = float("-inf")
        self._rr = itertools.count()

    def invalidate(self) -> None:
        """Forget the index; the next decision rescans the registry."""
        self._size = -1

    def _fits(self, meta: Any) -> frozenset[str] | None:
        if self.kind is not None and (not isinstance(meta, dict) or meta.get("kind") != self.kind):
            return None
        return _caps(meta)

    def _rebuild(self) -> None:
        index: dict[str, set[int]] = {}
        everyone: list[RegistryEntry] = []
        for entry in self.registry.select(lambda k, p, m: self._fits(m) is not None):
            for cap in self._fits(entry.meta) or ():
                index.setdefault(cap, set()).add(len(everyone))
            everyone.append(entry)
        self._index = index
        self._all = everyone
        self._size = len(self.registry)
        self._built = self._clock()

    def _fresh(self) -> None:
        if self._size != len(self.registry) or self._clock() - self._built > self.refresh:
            self._rebuild()

    def _live(self, entry: RegistryEntry, need: frozenset[str]) -> bool:
        for pid, meta in self.registry.lookup(entry.key):
            if pid == entry.pid:
                caps = self._fits(meta)
                return caps is not None and need <= caps
        return False

    def _scan(self, need: frozenset[str]) -> tuple[list[RegistryEntry], bool]:
        if not need:
            pool = self._all
        else:
            sets = sorted((self._index.get(c, set()) for c in need), key=len)
            hits = sets[0].intersection(*sets[1:]) if len(sets) > 1 else sets[0]
            pool = [self._all[i] for i in sorted(hits)]
        out = []
        stale = False
        for entry in pool:
            caps = self._fits(entry.meta)
            if caps is None or not need <= caps:
                continue
            if self._live(entry, need):
                out.append(entry)
            else:
                stale = True
        return out, stale

    def candidates(self, capabilities: Iterable[str] = ()) -> list[RegistryEntry]:
        """Every live entry offering all of ``capabilities``, least loaded first."""
        need = frozenset(capabilities)
        self._fresh()
        found, stale = self._scan(need)
        if stale:
            self._rebuild()
            found, _ = self._scan(need)
        return sorted(found, key=self.load)

    def route(self, capabilities: Iterable[str] = ()) -> RegistryEntry:
        """The least-loaded live entry offering all of ``capabilities``; the fallback agent's
        entry when none does; else ``NoRouteError``."""
        need = frozenset(capabilities)
        self._fresh()
        found, stale = self._scan(need)
        if stale:
            self._rebuild()
            found, _ = self._scan(need)
        if found:
            load = self.load
            best = float("inf")
            ties: list[RegistryEntry] = []
            for entry in found:
                value = load(entry)
                if value < best:
                    best = value
                    ties = [entry]
                elif value == best:
                    ties.append(entry)
            if ties:
                METRICS.routing["routed"] += 1
                return ties[next(self._rr) % len(ties)]
        if self.fallback is not None:
            hit = self.registry.lookup(self.fallback)
            if hit:
                METRICS.routing["fallback"] += 1
                log.info("routing.fallback", capabilities=sorted(need), agent=self.fallback)
                pid, meta = hit[0]
                return RegistryEntry(self.fallback, pid, meta)
        METRICS.routing["no_route"] += 1
        log.info("routing.no_route", capabilities=sorted(need))
        raise NoRouteError(sorted(need))
