"""Session ownership: which node holds a session, at which epoch, and who may take it over.

Every conversation row carries its owner, ``(owner_node, owner_incarnation)``, and the
ownership *epoch* (the ``incarnation`` column, migration 0007). A claim
(``ConversationRepository.open(..., claim=True)``) succeeds when

* the session has no owner yet (a new session, or one stored before migration 0011), or
* the owner is this node's current incarnation (another process of this very node: a
  restarted or revived agent server), or
* the owner is not live, as decided by the repository's ``LivenessPolicy``;

otherwise it raises ``SessionOwnedError`` naming the live owner, and changes nothing. A
successful claim writes the new owner and moves the epoch on by one in **one compare-and-set
statement** (``UPDATE ... WHERE id = ? AND incarnation = <the epoch read>``), so of two
claimants that read the same epoch exactly one wins; the loser re-reads, finds a live owner
and gets ``SessionOwnedError``. A session that does not exist yet is created by an ``INSERT``
that the unique ``session_id`` arbitrates the same way.

Every fenced turn commits only while the row still holds the epoch its process claimed
(``FencedError`` otherwise, nothing written): since every claim moves the epoch, "still at my
epoch" means "still owned by my node and by my claim". The check rides on the commit's own
statements, see ``_turn_writers``.

The liveness policy is pluggable. The default, ``OnlySelfLive``, fits a single node: only
this node's current incarnation is live, so a restarted node (a new incarnation) takes over its
predecessor's sessions with epoch + 1. A cluster plugs in a lease-based policy (a node is live
while its lease in the store has not expired, judged by the database's clock).
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["LivenessPolicy", "NodeIdentity", "OnlySelfLive", "local_node"]


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    """A node (``name``) and one run of it (``incarnation``, chosen when the node starts: a
    restarted node has a new one)."""

    name: str
    incarnation: int

    def __str__(self) -> str:
        return f"{self.name}#{self.incarnation}"


def local_node(name: str | None = None) -> NodeIdentity:
    """This process's identity: ``name`` (default ``$NETSUKE_NODE_NAME``, else the host
    name) and an incarnation of microseconds since the epoch, as the NATS transport chooses."""
    chosen = name or os.environ.get("NETSUKE_NODE_NAME") or socket.gethostname() or "local"
    return NodeIdentity(chosen[:200], time.time_ns() // 1000)


@runtime_checkable
class LivenessPolicy(Protocol):
    """Decides whether a session's current owner may still act as owner."""

    async def is_live(self, node: str, incarnation: int) -> bool:
        """Whether incarnation ``incarnation`` of node ``node`` is live (its sessions are
        then not taken over)."""
        ...


class OnlySelfLive:
    """The single-node policy: only ``me`` is live; any other owner (a previous run of this
    node, or a node that is gone) is taken over."""

    __slots__ = ("me",)

    def __init__(self, me: NodeIdentity) -> None:
        self.me = me

    async def is_live(self, node: str, incarnation: int) -> bool:
        return node == self.me.name and incarnation == self.me.incarnation
