"""Netsuke cluster: nodes in separate OS processes joined over NATS (see docs/cluster.md)."""

from __future__ import annotations

from ._codec import DecodeError, EncodeError, RemoteError, decode, encode, encode_reason

__all__ = [
    "DecodeError",
    "EncodeError",
    "RemoteError",
    "decode",
    "encode",
    "encode_reason",
]
