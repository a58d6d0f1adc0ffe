"""Node OS processes for the cluster benchmarks: spawn a script's ``--case node``, wait for its
first line (a JSON object), end it (SIGCONT first, so a stopped node can be killed and reaped).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from typing import Any


def spawn_node(
    script: str, url: str, prefix: str, name: str, db: str = "", *extra: str
) -> subprocess.Popen[str]:
    """Start ``python SCRIPT --case node`` with the cluster's settings in its environment."""
    return subprocess.Popen(
        [sys.executable, script, "--case", "node", *extra],
        env={
            **os.environ,
            "BENCH_NATS": url,
            "BENCH_PREFIX": prefix,
            "BENCH_NAME": name,
            "BENCH_DB": db,
        },
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


async def node_ready(proc: subprocess.Popen[str]) -> dict[str, Any]:
    """The node's first stdout line, decoded (it prints it once it has joined)."""
    assert proc.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 120)
    if not line:
        raise RuntimeError("node process exited before joining")
    info: dict[str, Any] = json.loads(line)
    return info


def end(proc: subprocess.Popen[str]) -> None:
    """Kill the node (continued first if it was stopped), reap it, close its pipes."""
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        proc.kill()
    proc.wait(30)
    for f in (proc.stdin, proc.stdout):
        if f is not None:
            f.close()
