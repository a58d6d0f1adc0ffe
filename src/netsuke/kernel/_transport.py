"""Transports: how a node reaches processes that live on other nodes.

A ``Pid`` names its node. The node serves its own pids from its process table; every other pid
goes through the node's transport. The kernel ships :class:`LocalTransport`, which joins several
nodes living in one Python process (tests, and one process that hosts many nodes); the cluster
layer adds a NATS transport behind the same interface.

The interface is deliberately small: ``resolve`` turns a foreign pid into an object that
accepts the kernel's mailbox operations (``_deliver``, links, monitors), or ``None`` when the
node or the process is gone. For the in-process transport that object is the process itself.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from ._pid import Pid, Ref

if TYPE_CHECKING:
    from ._process import Process
    from ._runtime import Runtime

__all__ = ["LocalTransport", "Transport"]


class Transport(ABC):
    """The interface a node uses to reach pids of other nodes."""

    @abstractmethod
    def attach(self, runtime: Runtime) -> None:
        """Called when a node starts with this transport. Raises ``ValueError`` if the node
        name is already attached."""

    @abstractmethod
    def detach(self, runtime: Runtime) -> None:
        """Called when the node has shut down."""

    @abstractmethod
    def resolve(self, pid: Pid) -> Process | None:
        """The live process named by a foreign ``pid``, or ``None``."""

    @abstractmethod
    def nodes(self) -> list[str]:
        """The names of the nodes reachable through this transport (including this one)."""

    def resolve_name(self, name: str, node: str) -> Process | None:
        """The process registered as ``name`` on another ``node`` (Erlang's ``{Name, Node}``),
        or ``None``; transports that cannot address names return ``None``."""
        return None

    # Hooks the node calls after it changed a link or monitor between a process of its own and
    # an object ``resolve`` returned (a process of another node). A transport whose objects are
    # the processes themselves (``LocalTransport``) has nothing to do; a network transport tells
    # the other node, so that both ends know about the link or monitor.

    def linked(self, a: Process, b: Process) -> None:
        """``a`` and ``b`` (one of them foreign) were linked."""

    def unlinked(self, a: Process, b: Process) -> None:
        """``a`` and ``b`` (one of them foreign) were unlinked."""

    def monitored(self, ref: Ref, watcher: Process, target: Process) -> None:
        """``watcher`` (local) monitors the foreign ``target`` under ``ref``."""

    def demonitored(self, ref: Ref, watcher: Process, target: Process) -> None:
        """``watcher`` (local) dropped its monitor ``ref`` on the foreign ``target``."""


class LocalTransport(Transport):
    """Joins the nodes of one Python process. Share one instance between their runtimes."""

    def __init__(self) -> None:
        self._nodes: dict[str, Runtime] = {}

    def attach(self, runtime: Runtime) -> None:
        if runtime.node in self._nodes and self._nodes[runtime.node] is not runtime:
            raise ValueError(f"node {runtime.node!r} is already attached to this transport")
        self._nodes[runtime.node] = runtime

    def detach(self, runtime: Runtime) -> None:
        if self._nodes.get(runtime.node) is runtime:
            del self._nodes[runtime.node]

    def resolve(self, pid: Pid) -> Process | None:
        rt = self._nodes.get(pid.node)
        if rt is None:
            return None
        return rt._local_proc(pid)

    def resolve_name(self, name: str, node: str) -> Process | None:
        rt = self._nodes.get(node)
        return None if rt is None else rt._resolve_local_name(name)

    def nodes(self) -> list[str]:
        return sorted(self._nodes)
