"""Netsuke cluster: nodes in separate OS processes joined over NATS (see docs/cluster.md)."""

from __future__ import annotations

from ._codec import DecodeError, EncodeError, RemoteError, decode, encode, encode_reason
from ._embedded_nats import EmbeddedNats, EmbeddedNatsError
from ._failover import Failover, restarts_on_failover
from ._member_node import ClusterNode, join_cluster
from ._membership import DuplicateNodeError, FencedError, Membership, NodeInfo, list_nodes
from ._names import GlobalEntry, GlobalNames
from ._nats import NOCONNECTION, ClusterConnectError, NatsTransport, NodeDown, join, split_node_id
from ._supervisor import ChildSpec, ChildStartError, NodeSupervisor, RestartIntensityError

__all__ = [
    "NOCONNECTION",
    "ChildSpec",
    "ChildStartError",
    "ClusterConnectError",
    "ClusterNode",
    "DecodeError",
    "DuplicateNodeError",
    "EmbeddedNats",
    "EmbeddedNatsError",
    "EncodeError",
    "Failover",
    "FencedError",
    "GlobalEntry",
    "GlobalNames",
    "Membership",
    "NatsTransport",
    "NodeDown",
    "NodeInfo",
    "NodeSupervisor",
    "RemoteError",
    "RestartIntensityError",
    "decode",
    "encode",
    "encode_reason",
    "join",
    "join_cluster",
    "list_nodes",
    "restarts_on_failover",
    "split_node_id",
]
