"""Netsuke cluster: nodes in separate OS processes joined over NATS (see docs/cluster.md)."""

from __future__ import annotations

from ._codec import DecodeError, EncodeError, RemoteError, decode, encode, encode_reason
from ._nats import NOCONNECTION, ClusterConnectError, NatsTransport, NodeDown, join, split_node_id

__all__ = [
    "NOCONNECTION",
    "ClusterConnectError",
    "DecodeError",
    "EncodeError",
    "NatsTransport",
    "NodeDown",
    "RemoteError",
    "decode",
    "encode",
    "encode_reason",
    "join",
    "split_node_id",
]
