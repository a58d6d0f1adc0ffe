"""Cluster delegation benchmark: CPU time per delegated turn, on the delegating node versus
forwarded to another ``netsuke serve --cluster`` node process (a real nats-server, one SQLite
store file, the offline model).

Figure:

* ``delegated turn CPU, forwarded vs local`` (ms of CPU per turn): the CPU time (user +
  system, from ``/proc/<pid>/stat``) that both node processes spend on one chat turn whose
  agent delegates once, when the delegate is pinned (``node_labels``) to the other node;
  floor: the same turns when the delegate runs on the calling node. CPU time, not wall-clock
  time, so a busy machine changes it little; the difference is what forwarding costs (codec,
  NATS round trip, the serving node's lookup and claim).

``--quick`` finishes within a minute; ``--json`` prints the figures object as the last line.
"""

from __future__ import annotations

import sys

# This folder goes after the standard library on sys.path (see kernel.py).
sys.path.append(sys.path.pop(0))

import asyncio
import os
import tempfile
import uuid
from pathlib import Path

from _harness import Figure, parse_args, run_and_report
from cluster_sessions import _start, _stop

NAME = "delegated turn CPU, forwarded vs local"
TICK = os.sysconf("SC_CLK_TCK")


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


async def _per_turn(nats: str, turns: int, pinned: bool) -> float:
    """CPU seconds per delegated turn over two fresh node processes."""
    import httpx

    from netsuke.store import upgrade

    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite+aiosqlite:///{Path(tmp) / 'shared.db'}"
        await upgrade(db)
        folder = Path(tmp) / "agents"
        folder.mkdir()
        pin = "config:\n  node_labels:\n    role: delegate\n" if pinned else ""
        (folder / "helper.yaml").write_text(f"name: helper\nmodel: offline\n{pin}")
        (folder / "boss.yaml").write_text("name: boss\nmodel: offline\ndelegates: [helper]\n")
        clean = {k: v for k, v in os.environ.items() if not k.startswith("NETSUKE_")}
        env = {
            **clean,
            "NETSUKE_RATE_LIMIT_PER_MINUTE": "0",
            "NETSUKE_DATABASE_URL": db,
            "NETSUKE_CLUSTER_PREFIX": f"b{uuid.uuid4().hex[:10]}",
            "NETSUKE_AGENTS_DIR": str(folder),
            "NETSUKE_LOG_LEVEL": "warning",
        }
        procs = []
        try:
            a, a_url, key = await _start(
                "alpha", nats, {**env, "NETSUKE_BOOTSTRAP_ADMIN": "true"}, tmp
            )
            procs.append(a)
            b, _, _ = await _start(
                "beta",
                nats,
                {**env, "NETSUKE_BOOTSTRAP_ADMIN": "false", "NETSUKE_NODE_LABELS": "role=delegate"},
                tmp,
            )
            procs.append(b)
            headers = {"Authorization": f"Bearer {key}"}
            async with httpx.AsyncClient(headers=headers, timeout=120) as http:
                for _ in range(600):  # both nodes joined (at most 2 minutes)
                    got = (await http.get(f"{a_url}/api/v1/cluster/nodes")).json()["nodes"]
                    if len(got) >= 2:
                        break
                    await asyncio.sleep(0.2)
                users = [f"u{i}" for i in range(turns)]
                for u in users:  # sessions (and their delegates) first: measure turns only
                    await http.post(f"{a_url}/api/v1/sessions", json={"agent": "boss", "user": u})
                    r = await http.post(
                        f"{a_url}/api/v1/sessions/boss-{u}/messages",
                        json={"message": "delegate_to_helper 'warm up'"},
                    )
                    r.raise_for_status()
                before = _cpu(a.pid) + _cpu(b.pid)
                for u in users:
                    r = await http.post(
                        f"{a_url}/api/v1/sessions/boss-{u}/messages",
                        json={"message": "delegate_to_helper 'measure me'"},
                    )
                    r.raise_for_status()
                    assert "measure me" in r.json()["output"], r.text
                after = _cpu(a.pid) + _cpu(b.pid)
            return (after - before) / turns
        finally:
            _stop(procs)


async def run(quick: bool) -> list[Figure]:
    from netsuke.manager.testing import NatsServer

    turns = 40 if quick else 200
    with NatsServer() as url:
        local = await _per_turn(url, turns, pinned=False)
        forwarded = await _per_turn(url, turns, pinned=True)
    return [
        Figure(
            NAME,
            forwarded * 1000,
            "ms CPU/turn",
            floor=local * 1000,
            floor_label="delegate on the calling node",
            higher_is_better=False,
            target="reported",
        )
    ]


def main() -> None:
    args = parse_args((__doc__ or "").split("\n")[0])
    run_and_report("Netsuke cluster delegation", run, args)


if __name__ == "__main__":
    main()
