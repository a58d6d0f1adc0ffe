"""Options of the NATS transport: bad values are refused with a clear error, before any I/O."""

from __future__ import annotations

from typing import Any

import pytest

from netsuke.cluster import ClusterConnectError, NatsTransport, split_node_id
from netsuke.kernel import Runtime
from netsuke.manager.testing import free_port


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "a.b"}, "node name"),
        ({"name": ""}, "node name"),
        ({"name": "x" * 65}, "node name"),
        ({"name": "ok", "prefix": "a.b"}, "prefix"),
        ({"name": "ok", "heartbeat_interval": 0}, "heartbeat_interval"),
        ({"name": "ok", "heartbeat_interval": 2, "down_after": 1}, "down_after"),
    ],
)
def test_bad_options_are_refused(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        NatsTransport("nats://127.0.0.1:4222", **kwargs)


def test_node_id_carries_name_and_incarnation() -> None:
    t = NatsTransport("nats://127.0.0.1:4222", "alpha", incarnation=42)
    assert t.node_id == "alpha#42"
    assert split_node_id(t.node_id) == ("alpha", 42)
    assert split_node_id("local") is None
    assert split_node_id("a.b#1") is None
    assert split_node_id("a#x") is None


@pytest.mark.timeout(60)
async def test_unreachable_server_fails_fast_with_one_clear_error() -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    t = NatsTransport(url, "alpha")
    with pytest.raises(
        ClusterConnectError, match=r"cannot connect to NATS at nats://127\.0\.0\.1:"
    ):
        await t.connect()


async def test_runtime_must_use_the_transport_node_id_and_connect_first() -> None:
    t = NatsTransport("nats://127.0.0.1:4222", "alpha", incarnation=1)
    with pytest.raises(ValueError, match="alpha#1"):
        async with Runtime(node="alpha", transport=t):
            pass
    with pytest.raises(RuntimeError, match="connect"):
        async with Runtime(node="alpha#1", transport=t):
            pass
