"""Where a chat request's time goes: ``benchmarks/api.py``'s setup under py-spy.

Starts the same two servers as ``benchmarks/api.py`` (``netsuke serve`` with the offline
model, and the bare FastAPI + pydantic-ai floor), loads each in turn with N concurrent clients
and samples every thread of the server with ``py-spy record --format raw`` (``pip install
py-spy``; it needs ptrace rights over its children, which a normal user has). Each sample goes
to the part of the path that its innermost recognised frame belongs to (logging, metrics,
tracing, auth, audit, session lookup, the turn, its commit, ...). The process's CPU time
(``/proc``) divided by the requests served gives CPU ms per request; each part's share of the
samples gives its ms. Samples of threads blocked in the kernel (``select``, a lock, a queue)
are reported as waiting, not as CPU.

Usage: ``python benchmarks/api_profile.py [--json-logs] [--clients 16] [--seconds 8]``.
"""

from __future__ import annotations

import sys

sys.path.append(sys.path.pop(0))  # as in api.py: never shadow the standard library

import argparse
import collections
import os
import re
import subprocess
import tempfile
from pathlib import Path

import api  # benchmarks/api.py: the same servers and load
from _harness import bench_agents

# (part, pattern on a frame "function (file:line)"); the innermost frame that matches wins.
PARTS: list[tuple[str, str]] = [
    ("logging (structlog)", r"structlog/|netsuke/observability/_logging"),
    ("metrics (prometheus)", r"prometheus_client/"),
    ("tracing (opentelemetry)", r"opentelemetry/"),
    ("audit", r"ApiMiddleware\._audit|request_audit|netsuke/store/_audit"),
    ("commit (turn writer)", r"netsuke/store/_turn_writers|netsuke/store/_conversations"),
    ("store, other", r"netsuke/store/|sqlalchemy/|aiosqlite/"),
    ("turn: pydantic-ai + offline model", r"pydantic_ai/|pydantic_graph/|agents/_offline"),
    ("turn: agent server, kernel hop", r"netsuke/agents/|netsuke/kernel/"),
    ("session lookup", r"routes/sessions\.py.*(checked|owner_of)|owner_of \("),
    ("auth + rate limit", r"get_caller|authenticate|netsuke/api/_auth|HTTPBearer"),
    ("middleware (ids, limits)", r"netsuke/api/_middleware"),
    ("route handlers", r"netsuke/api/routes/|bare_app|benchmarks/api\.py"),
    ("FastAPI/Starlette (routing, validation, JSON)", r"fastapi/|starlette/|pydantic/|anyio/"),
    ("HTTP (uvicorn, httptools)", r"uvicorn/|httptools|h11/"),
    ("event loop (asyncio)", r"asyncio/"),
]
_WAIT = re.compile(
    r"^(select|wait|get|acquire|_wait_for_tstate_lock|poll|epoll) \((selectors|threading|queue)"
)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


Parts = collections.Counter[tuple[str, bool]]
"""Samples by ``(part, on the event loop's thread)``."""


def classify(raw: Path) -> Parts:
    parts: Parts = collections.Counter()
    compiled = [(name, re.compile(p)) for name, p in PARTS]
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames = stack.split(";")
        n = int(count)
        main = "MainThread" in frames[0]  # --threads: the root frame names the thread
        if _WAIT.match(frames[-1]) or "SimpleQueue.get" in frames[-1]:
            parts[("(waiting: select, lock, queue)", main)] += n
            continue
        part = "other"
        for frame in reversed(frames):
            hit = next((name for name, p in compiled if p.search(frame)), None)
            if hit is not None:
                part = hit
                break
        parts[(part, main)] += n
    return parts


def profile(
    name: str, pid: int, url: str, kind: str, key: str, clients: int, seconds: float, out: Path
) -> tuple[dict[str, float], Parts]:
    # sampling starts after the load's warm-up second (FastAPI builds each route's context on
    # its first request; sessions are created), and stops with the measured window
    spy = subprocess.Popen(
        ["sh", "-c", f"sleep 2 && exec py-spy record -p {pid} -o {out} -f raw -r 250"
         f" -d {max(1, int(seconds) - 1)} --nonblocking --threads"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    c0 = cpu_seconds(pid)
    result = api.run_load(url, kind, key, clients, seconds)
    c1 = cpu_seconds(pid)
    spy.wait(timeout=120)
    served = result["rps"] * (seconds + 1.0)  # the warm-up second too, at about that rate
    result["cpu_ms_per_request"] = 1000.0 * (c1 - c0) / max(served, 1.0)
    parts = classify(out)
    return result, parts


def table(name: str, result: dict[str, float], parts: Parts) -> None:
    """Per part: its share of the busy samples, the CPU ms per request that share stands for,
    and how much of it ran on the event loop's thread (the rest: the store's writer thread,
    aiosqlite's, in parallel with the loop)."""
    totals: collections.Counter[str] = collections.Counter()
    on_loop: collections.Counter[str] = collections.Counter()
    for (part, main), n in parts.items():
        totals[part] += n
        if main:
            on_loop[part] += n
    waiting = totals.pop("(waiting: select, lock, queue)", 0)
    busy = sum(totals.values())
    cpu = result["cpu_ms_per_request"]
    print(
        f"\n== {name}: {result['rps']:.1f} req/s, p50 {result['p50_ms']:.0f} ms, "
        f"p99 {result['p99_ms']:.0f} ms, CPU {cpu:.2f} ms/request"
    )
    print(f"{'part':48s} {'share':>6s} {'ms/request':>10s} {'on the loop':>11s}")
    for part, n in totals.most_common():
        share = n / busy if busy else 0.0
        loop_ms = on_loop[part] / busy * cpu if busy else 0.0
        print(f"{part:48s} {100 * share:5.1f}% {share * cpu:10.3f} {loop_ms:11.3f}")
    print(f"(samples waiting in select/locks/queues: {waiting} of {busy + waiting})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json-logs", action="store_true")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--keep", default=None, help="folder for the raw py-spy files")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="netsuke-profile-api-"))
    keep = Path(args.keep) if args.keep else tmp
    keep.mkdir(parents=True, exist_ok=True)
    agents_dir = bench_agents(tmp)
    env = {**os.environ, "NETSUKE_RATE_LIMIT_PER_MINUTE": "0", "NETSUKE_LOG_LEVEL": "info"}
    logs = ["--json-logs"] if args.json_logs else []
    netsuke, n_url, key = api.start(
        [api.EXE, "serve", "--port", "0", "--database-url", f"sqlite:///{tmp}/bench.db",
         "--agents-dir", str(agents_dir), *logs],
        env, str(tmp),
    )  # fmt: skip
    bare, b_url, _ = api.start([sys.executable, str(api.HERE), "--serve-bare"], env, str(tmp))
    try:
        b = profile("bare", bare.pid, b_url, "bare", "", args.clients, args.seconds,
                    keep / "bare.txt")  # fmt: skip
        n = profile("netsuke", netsuke.pid, n_url, "netsuke", key, args.clients, args.seconds,
                    keep / "netsuke.txt")  # fmt: skip
    finally:
        api.stop(netsuke)
        api.stop(bare)
    table("bare FastAPI + pydantic-ai", *b)
    table("netsuke serve" + (" --json-logs" if args.json_logs else ""), *n)
    print(f"\nraw py-spy files: {keep}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
