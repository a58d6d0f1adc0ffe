"""The chaos soak (``make chaos``; deselected from the normal run): random faults among SIGKILL,
SIGSTOP/SIGCONT, proxy blackhole, proxy drop and nats-server restart, against three node OS
processes and the test's own node, one after another. Every round checks that each signal fired
exactly once on both sides of each pair that was cut, that nothing reached a stranger, and that
the other nodes kept serving (``faults.fault_round``). Prints the counts at the end.

``NETSUKE_CHAOS_ROUNDS`` (default 20) and ``NETSUKE_CHAOS_SEED`` (default: random, printed)
choose the run; a failing seed replays the same sequence of faults and victims.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from pathlib import Path

import pytest

from netsuke.manager.testing import NatsServer

from . import faults as F

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
