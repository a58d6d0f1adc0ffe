"""Faults with real node OS processes: SIGKILL (then a restart under the same name), SIGSTOP
past ``down_after`` then SIGCONT, a node cut off NATS by a TCP proxy (blackholed or dropped,
then healed), and a nats-server restart on the same port.

Three nodes: the test's own (``alpha``) and two OS processes, each behind its own proxy. For
each fault (``faults.fault_round``): every link, monitor and ``monitor_node`` between the pairs
that were cut fires exactly once with ``noconnection``, on both sides (the cut-off side too);
nothing fires again after healing, and links made after it work; the other nodes keep calling
each other during and after; pids of a killed node never reach its successor. Waits are
conditions with generous deadlines, never durations.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from netsuke.manager.testing import NatsServer

from . import faults as F

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]


@pytest.mark.parametrize("fault", ["sigkill", "sigstop", "blackhole", "drop"])
async def test_fault_of_one_node_fires_everything_once_on_both_sides(
    nats_server: NatsServer, fault: str
) -> None:
    async with F.cluster(nats_server, ["victim", "survivor"]) as (a, nodes, p):
        counts = await F.fault_round(a, nodes, fault, nodes[1], server=nats_server, prefix=p)
        # Two live nodes saw the victim go; a cut-off victim saw both of them go.
        want = 2 if fault == "sigkill" else 4
        assert counts == {"exit": want, "down": want, "nodedown": want}
        await F.quiet_round(a, nodes)


async def test_nats_server_restart_on_the_same_port(tmp_path: Path) -> None:
    server = NatsServer(workdir=tmp_path, start_timeout=30.0)
    server.start()
    try:
        async with F.cluster(server, ["beta", "gamma"]) as (a, nodes, p):
            counts = await F.fault_round(
                a, nodes, "nats_restart", nodes[1], server=server, prefix=p
            )
            assert counts == {"exit": 6, "down": 6, "nodedown": 6}  # every pair, both sides
            await F.quiet_round(a, nodes)
    finally:
        server.stop()
