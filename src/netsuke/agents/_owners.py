"""Stored owner links: the owner of a session, written where a survivor can find it.

A session's *owner* is a process its server monitors (``start_agent(owner=...)``,
``Agents.attach_owner``): when the owner exits, the agent's ``owner_policy`` applies (``stop``:
the session stops and is marked ``stopped``; ``hibernate``: it drops its memory). On one node
the owner survives a restart of the server (it is kept in the ``SessionArg``). Across nodes a
session restarted on a survivor (failover, lazy revival, the API's adoption: all through
``Agents.revive``) has a new process that knows nothing of its predecessor, so the owner's pid
is kept in the conversation row (``conversations.owner_pid``, migration 0014) and the new
process monitors it again.

The stored form is the cluster codec's encoding of a ``Pid``, ``{"$p":[node id, id]}``, the
JSON text a frame carries (``netsuke.cluster._codec``), so what a node writes any node reads.
Only **cluster pids** are stored (node ids ``name#incarnation``: unique to one run of a node,
so a stored pid never names a different process of a later run); a single node's pids
(``local.7``) are not, and a single node restarted from scratch comes back without owners, as
before (its owners died with it and were never reachable from another node).

``owner_lost``: when the owner lived on the node the session is taken over from (that node is
gone, so its processes are: they exited with ``noconnection``) or on a node this one knows is
down, the reason the new process's owner link fires with, at once.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

from netsuke.kernel import Pid

__all__ = ["NOCONNECTION", "decode_owner", "encode_owner", "is_cluster_node", "owner_lost"]

NOCONNECTION: Final = "noconnection"
"""The exit reason of the processes of a node that went down (the cluster transport's)."""

_NODE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}#[0-9]{1,20}$")


def is_cluster_node(node: str) -> bool:
    """Whether ``node`` is a cluster node id (``name#incarnation``)."""
    return _NODE_ID.match(node) is not None


def encode_owner(owner: Pid | None) -> str | None:
    """The stored form of ``owner`` (``None`` for no owner or a pid that is not a cluster
    pid): the text the cluster codec writes for it."""
    if owner is None or not is_cluster_node(owner.node):
        return None
    return json.dumps({"$p": [owner.node, owner.id]}, separators=(",", ":"))


def decode_owner(text: str | None) -> Pid | None:
    """The pid ``encode_owner`` wrote, or ``None`` (no owner, or text that is not a stored
    cluster pid: nothing to monitor)."""
    if not text:
        return None
    try:
        value: Any = json.loads(text)
    except ValueError:
        return None
    if type(value) is not dict or len(value) != 1:
        return None
    pair = value.get("$p")
    if type(pair) is not list or len(pair) != 2:
        return None
    node, id_ = pair
    if type(node) is not str or type(id_) is not int or id_ < 0 or not is_cluster_node(node):
        return None
    return Pid(node, id_)


def owner_lost(owner: Pid, *, here: str, gone_node: str | None, is_down: Any = None) -> str | None:
    """``NOCONNECTION`` when ``owner`` is known gone with its node: it lived on ``gone_node``
    (the node a claim has just taken the session over from, so not live), or the transport's
    ``is_down(node id)`` says its node is down; else ``None`` (the new process monitors it,
    and the monitor says). ``here``: this node (its own processes are never judged so)."""
    if owner.node == here:
        return None
    if gone_node is not None and owner.node == gone_node:
        return NOCONNECTION
    if is_down is not None and is_down(owner.node):
        return NOCONNECTION
    return None
