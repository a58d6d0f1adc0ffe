"""The chaos soak (``make chaos``; deselected from the normal run): random faults among SIGKILL,
SIGSTOP/SIGCONT, proxy blackhole, proxy drop and nats-server restart, against three node OS
processes and the test's own node, one after another. Every round checks that each signal fired
exactly once on both sides of each pair that was cut, that nothing reached a stranger, and that
the other nodes kept serving (``faults.fault_round``). Prints the counts at the end.

``test_random_faults_under_chat_load_lose_no_acknowledged_turn`` does the same with three
agent nodes (``agent_node_main``) under a chat load (each request retried with its id until
acknowledged): SIGKILL, SIGSTOP/SIGCONT, proxy blackhole and drop of one node at a time, the
victim healed or restarted, the load making progress after each fault; at the end the history
checker's three counts (acknowledged turns lost, committed twice, stale-epoch commits) are
printed and must be 0.

``NETSUKE_CHAOS_ROUNDS`` (default 20) and ``NETSUKE_CHAOS_SEED`` (default: random, printed)
choose the run; a failing seed replays the same sequence of faults and victims.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from pathlib import Path

import pytest

from netsuke.cluster import join
from netsuke.manager.testing import NatsServer
from netsuke.store import Store, upgrade

from . import failover_harness as FH
from . import faults as F
from .helpers import FAST, prefix

pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.timeout(7200)]


async def test_random_faults_fire_signals_exactly_once(tmp_path: Path) -> None:
    rounds = int(os.environ.get("NETSUKE_CHAOS_ROUNDS", "20"))
    seed = int(os.environ.get("NETSUKE_CHAOS_SEED", str(random.randrange(2**32))))
    rng = random.Random(seed)
    print(f"\nchaos: seed {seed}, {rounds} rounds")
    server = NatsServer(workdir=tmp_path, start_timeout=30.0)
    server.start()
    faults: Counter[str] = Counter()
    signals: Counter[str] = Counter()
    try:
        async with F.cluster(server, ["beta", "gamma", "delta"]) as (a, nodes, p):
            for i in range(rounds):
                fault = rng.choice(F.FAULTS)
                victim = rng.choice(nodes[1:])
                print(f"chaos round {i + 1}/{rounds}: {fault} of {victim.name}", flush=True)
                signals += await F.fault_round(a, nodes, fault, victim, server=server, prefix=p)
                faults[fault] += 1
            await F.quiet_round(a, nodes)
    finally:
        server.stop()
        print(f"chaos: seed {seed}; faults {dict(sorted(faults.items()))}")
        print(
            f"chaos: signals fired once each {dict(sorted(signals.items()))}; "
            "duplicates 0, stray deliveries 0 (any would have failed the round)"
        )


async def test_random_faults_under_chat_load_lose_no_acknowledged_turn(tmp_path: Path) -> None:
    rounds = int(os.environ.get("NETSUKE_CHAOS_ROUNDS", "20"))
    seed = int(os.environ.get("NETSUKE_CHAOS_SEED", str(random.randrange(2**32))))
    rng = random.Random(seed)
    print(f"\nchaos (chat load): seed {seed}, {rounds} rounds")
    server = NatsServer(workdir=tmp_path, start_timeout=30.0)
    server.start()
    db = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    await upgrade(db)
    p = prefix()
    lease = 6.0
    try:
        async with (
            Store.open(db) as store,
            FH.agent_cluster(server.port, p, ["alpha", "beta", "gamma"], db, lease) as nodes,
            join(server.url, "client", transport_options={**FAST, "prefix": p}) as rt,
        ):
            report, load, faults = await FH.chaos(
                rt, store, nodes, prefix=p, db=db, lease=lease, rounds=rounds, rng=rng
            )
    finally:
        server.stop()
    lost, twice, stale = report.counts
    print(f"chaos (chat load): seed {seed}; faults {dict(sorted(faults.items()))}")
    print(
        f"chaos (chat load): {len(load.requests)} requests, {load.acked} acknowledged; "
        f"acknowledged turns lost {lost}, committed twice {twice}, stale-epoch commits {stale}"
        f"; told failed but committed {report.failed_but_committed}"
    )
    assert report.counts == (0, 0, 0), report.details[:20]
    assert report.ok, report.details[:20]
