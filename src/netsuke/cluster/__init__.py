"""Netsuke cluster: nodes in separate OS processes joined over NATS (see docs/cluster.md)."""

from __future__ import annotations

from ._codec import DecodeError, EncodeError, RemoteError, decode, encode, encode_reason
from ._embedded_nats import EmbeddedNats, EmbeddedNatsError
from ._failover import Failover, restarts_on_failover
from ._forward import (
    ForwardError,
    ForwardTimeoutError,
    OwnerLostError,
    OwnerUnreachableError,
    RemoteOpError,
    SessionService,
)
from ._member_node import ClusterNode, join_cluster
from ._membership import DuplicateNodeError, FencedError, Membership, NodeInfo, list_nodes
from ._names import GlobalEntry, GlobalNames
from ._nats import NOCONNECTION, ClusterConnectError, NatsTransport, NodeDown, join, split_node_id
from ._placement import Candidate, NoNodeAvailableError, choose_node, parse_labels
from ._supervisor import ChildSpec, ChildStartError, NodeSupervisor, RestartIntensityError

__all__ = [
    "NOCONNECTION",
    "Candidate",
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
    "ForwardError",
    "ForwardTimeoutError",
    "GlobalEntry",
    "GlobalNames",
    "Membership",
    "NatsTransport",
    "NoNodeAvailableError",
    "NodeDown",
    "NodeInfo",
    "NodeSupervisor",
    "OwnerLostError",
    "OwnerUnreachableError",
    "RemoteError",
    "RemoteOpError",
    "RestartIntensityError",
    "SessionService",
    "choose_node",
    "decode",
    "encode",
    "encode_reason",
    "join",
    "join_cluster",
    "list_nodes",
    "parse_labels",
    "restarts_on_failover",
    "split_node_id",
]
