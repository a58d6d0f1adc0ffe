"""Seed 001's registry helpers as queries that may span a cluster: ``Agents.find``,
``Agents.count`` and ``Agents.stop_matching`` answer an ``AgentQuery``.

On one node they read the node's registry (what ``find_agents``, ``count_agents`` and
``stop_agents_matching`` read) and the answer is complete. On a cluster member
(``netsuke.cluster.ClusterAgents`` installed as ``Agents.remote``) every live node is asked,
in parallel, within a timeout; as Erlang's ``rpc:multicall`` returns ``{Results, BadNodes}``,
a node that does not answer in time is **reported** in ``unreachable`` (``partial`` is then
true), never silently left out. A ``stop_matching`` answer is partial the same way: the
unreachable nodes' agents may or may not have stopped.
"""

from __future__ import annotations

import fnmatch
from typing import Any, NamedTuple

from netsuke.kernel import Pid

__all__ = ["AgentInfo", "AgentQuery", "matches"]


class AgentInfo(NamedTuple):
    """One running agent: its registered ``name``, ``pid`` and registry ``meta``. The node
    it runs on is ``pid.node``."""

    name: str
    pid: Pid
    meta: dict[str, Any]


class AgentQuery(NamedTuple):
    """The answer of ``Agents.find``/``count``/``stop_matching``: ``total`` (agents found,
    counted, or stopped), ``agents`` (``find`` only: each ``AgentInfo``, ordered by name),
    ``nodes`` (the node ids that answered, this node first) and ``unreachable`` (live nodes
    that did not answer within the timeout)."""

    total: int
    agents: tuple[AgentInfo, ...] = ()
    nodes: tuple[str, ...] = ()
    unreachable: tuple[str, ...] = ()

    @property
    def partial(self) -> bool:
        """Whether some live node did not answer (the figures cover only ``nodes``)."""
        return bool(self.unreachable)


def matches(pattern: str | None, name: str) -> bool:
    """``find_agents``'s rule: ``name`` contains ``pattern``, or matches it when it has glob
    characters ``*?[``; ``None`` matches every name."""
    if pattern is None:
        return True
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(name, pattern)
    return pattern in name
