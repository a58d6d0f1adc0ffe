"""AgentManager benchmark: package agents as OS processes over a real nats-server.

Figures:

* ``spawn to first heartbeat`` (p50, ms): ``start_agent`` on a stopped SDK package until the
  manager has its first heartbeat (process start, Python and SDK import, NATS connect, one
  ``agent.status`` message). Floor: ``python -c pass`` spawned and reaped from asyncio in
  the same run. Target: <= 300 ms.
* ``inactive detected after SIGSTOP`` (worst of the rounds, s): SIGSTOP a running agent,
  time until its state is ``inactive``, with ``heartbeat_timeout`` 2 s (heartbeats every
  0.67 s). Target: <= 3 s.
* ``manager CPU with 100 agents at 1 s heartbeats`` (% of one core): the manager process's
  CPU time over a quiet window while 100 agents each send a heartbeat and a metrics message
  every second. Target: <= 5 %. ``--quick`` runs 20 agents (the name says how many).
"""

from __future__ import annotations

import sys

sys.path.append(sys.path.pop(0))

import asyncio
import os
import signal
import statistics
import tempfile
import textwrap
import time
from pathlib import Path

from _harness import Figure, meta, parse_args, report
from netsuke.manager import AgentManager, AgentStatus, load_config
from netsuke.manager.testing import NatsServer
from netsuke.observability import configure_logging

AGENT = textwrap.dedent(
    """
    from netsuke.manager.sdk import PackageAgent
    PackageAgent.from_env().run()
    """
)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def write_packages(root: Path, names: list[str], *, autostart: bool, timeout: float) -> None:
    for name in names:
        folder = root / name
        folder.mkdir(parents=True)
        (folder / "agent.py").write_text(AGENT)
        (folder / "agent.yaml").write_text(
            f"name: {name}\nentry_point: agent.py\nautostart: {str(autostart).lower()}\n"
            f"heartbeat_timeout: {timeout}\n"
        )


def manager_for(url: str, tmp: Path, packages: Path) -> AgentManager:
    cfg = load_config(
        environ={},
        overrides={
            "service": {"discovery_interval": 3600, "monitoring_interval": 10},
            "nats": {"url": url},
            "packages": {"dir": packages, "logs_dir": tmp / "logs"},
        },
    )
    return AgentManager(cfg)


async def until(predicate: object, timeout: float = 60.0) -> None:
    deadline = time.perf_counter() + timeout
    while not predicate():  # type: ignore[operator]
        if time.perf_counter() > deadline:
            raise TimeoutError("benchmark condition not reached")
        await asyncio.sleep(0.001)


async def plain_spawn(n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
        await proc.wait()
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def spawn_to_heartbeat(url: str, tmp: Path, n: int) -> list[float]:
    pk = tmp / "spawn"
    write_packages(pk, ["spawned"], autostart=False, timeout=10)
    manager = manager_for(url, tmp, pk)
    await manager.start()
    rec = manager.record("spawned")
    out = []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            await manager.start_agent("spawned")
            await until(lambda: rec.status == AgentStatus.RUNNING)
            out.append((time.perf_counter() - t0) * 1000)
            await manager.stop_agent("spawned")
    finally:
        await manager.stop()
    return out


async def inactive_after_sigstop(url: str, tmp: Path, rounds: int) -> list[float]:
    pk = tmp / "stop"
    write_packages(pk, ["paused"], autostart=True, timeout=2)
    manager = manager_for(url, tmp, pk)
    await manager.start()
    rec = manager.record("paused")
    out = []
    try:
        for _ in range(rounds):
            await until(lambda: rec.status == AgentStatus.RUNNING)
            assert rec.process is not None
            pid = rec.process.pid
            t0 = time.perf_counter()
            os.kill(pid, signal.SIGSTOP)
            try:
                await until(lambda: rec.status == AgentStatus.INACTIVE, 30)
                out.append(time.perf_counter() - t0)
            finally:
                os.kill(pid, signal.SIGCONT)
    finally:
        await manager.stop()
    return out


async def cpu_with_agents(url: str, tmp: Path, n: int, window: float) -> float:
    pk = tmp / "many"
    names = [f"a{i:03d}" for i in range(n)]
    write_packages(pk, names, autostart=True, timeout=3)  # heartbeat every 1 s
    manager = manager_for(url, tmp, pk)
    await manager.start()
    try:
        recs = [manager.record(name) for name in names]
        await until(lambda: all(r.status == AgentStatus.RUNNING for r in recs), 300)
        await asyncio.sleep(2.0)  # let start-up settle
        beats0 = sum(r.heartbeats for r in recs)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.sleep(window)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        beats = sum(r.heartbeats for r in recs) - beats0
        print(f"  {n} agents: {beats / wall:.0f} heartbeats/s over {wall:.1f} s")
        if not all(r.status == AgentStatus.RUNNING for r in recs):
            print("  warning: some agents were not running at the end of the window")
    finally:
        await manager.stop()
    return cpu / wall * 100.0


async def main() -> int:
    args = parse_args((__doc__ or "").split("\n")[0])
    configure_logging("warning")
    spawn_n, rounds, many, window = (8, 2, 20, 5.0) if args.quick else (30, 5, 100, 20.0)
    with tempfile.TemporaryDirectory() as d, NatsServer() as url:
        tmp = Path(d)
        plain = await plain_spawn(spawn_n)
        spawn = await spawn_to_heartbeat(url, tmp, spawn_n)
        inactive = await inactive_after_sigstop(url, tmp, rounds)
        cpu = await cpu_with_agents(url, tmp, many, window)
    p50 = percentile(spawn, 0.5)
    worst = max(inactive)
    figures = [
        Figure("spawn to first heartbeat", p50, "ms", percentile(plain, 0.5), "python -c pass",
               higher_is_better=False, target="<= 300 ms", met=p50 <= 300),
        Figure("inactive detected after SIGSTOP", worst, "s", None, higher_is_better=False,
               target="<= 3 s", met=worst <= 3.0),
        Figure(f"manager CPU with {many} agents at 1 s heartbeats", cpu, "% core", None,
               higher_is_better=False, target="<= 5 %", met=cpu <= 5.0),
    ]  # fmt: skip
    print(
        f"manager benchmark: spawn p50 {p50:.0f} ms (mean {statistics.fmean(spawn):.0f}), "
        f"inactive after {', '.join(f'{v:.2f}' for v in inactive)} s"
    )
    report("manager", figures, as_json=args.json, extra=meta("asyncio"))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
