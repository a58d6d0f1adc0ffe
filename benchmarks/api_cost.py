"""Deterministic cost of a chat request: the work the server does, counted, not timed.

Wall-clock throughput on a shared machine moves by ±30%; what one request *does* does not. This
harness drives N chat requests (C clients at a time, each its own user and session, as
``benchmarks/api.py`` does) straight into the ASGI app, in this process, with no HTTP server or
client in between, and counts per request:

* ``calls``: Python function calls (cProfile's count, C functions included) on the event loop's
  thread, and ``thread_calls`` on every other thread (the store's writer thread, aiosqlite's):
  deterministic for a given build, whatever the load;
* ``sql``: SQL statements SQLite ran (``set_trace_callback`` on every connection opened during
  the run: ``BEGIN``/``COMMIT`` included), and ``commits``;
* ``blocks``: ``sys.getallocatedblocks()`` growth (memory kept, a leak shows here) and
  ``gc_gen0``: young-generation collections per 100 requests (container churn);
* ``gc_cpu_ms``: CPU time in the cyclic garbage collector per request (``gc.callbacks``), and
  ``gc_full_per_1000``: full (oldest generation) collections per 1,000 requests. The Netsuke
  side applies ``netsuke serve``'s collector settings once started (``gc_freeze``,
  ``gc_threshold``; ``--no-gc-tuning`` leaves Python's);
* ``cpu_ms``: process CPU time per request (all threads; noisy on a loaded machine: a hint;
  inflated by the profiler, ``--cpu-only`` measures it without profiler or hooks), and of it
  ``loop_cpu_ms`` (the event loop's thread) and ``thread_cpu_ms`` (every other thread: the
  store's writer, with SQLite and the kernel's share of its writes and fsyncs).

Two sides, the same way: ``netsuke`` (``create_app`` over a node opened like ``netsuke serve``
opens it: SQLite file store, ``synchronous=FULL``, group commit, access log at ``info`` with
console or JSON rendering, rendered to ``/dev/null``; rate limit off) and ``bare`` (the floor
app of ``benchmarks/api.py``: FastAPI + pydantic-ai, no persistence). The app's lifespan runs.
Warm-up requests (each client's first turns) are not counted.

Usage: ``python benchmarks/api_cost.py [--requests 400] [--clients 16] [--json-logs]
[--side netsuke|bare|both] [--top 25] [--dump PREFIX] [--cpu-only] [--no-gc-tuning] [--json]``; ``--top`` prints the packages
and functions with the most calls (loop thread) to find the work to cut; ``--dump`` writes the
cProfile stats (``PREFIX.netsuke``, ``PREFIX.bare``) for ``pstats`` (callers, callees).
"""

from __future__ import annotations

import sys

sys.path.append(sys.path.pop(0))  # as in api.py: never shadow the standard library

import argparse
import asyncio
import cProfile
import gc
import json
import os
import pstats
import sqlite3
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from _harness import bench_agents

HERE = os.path.dirname(os.path.abspath(__file__))
MESSAGE = "Tell me about the weather in Kyoto"
App = Callable[[dict[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
               Awaitable[None]]  # fmt: skip


# ----------------------------------------------------------------------- counters


class SqlCounter:
    """Counts the statements of every sqlite3 connection opened while installed."""

    def __init__(self) -> None:
        self.statements = 0
        self.commits = 0
        self.on = False
        self._connect = sqlite3.connect

    def _trace(self, sql: str) -> None:
        if self.on:
            self.statements += 1
            if sql.lstrip()[:6].upper() == "COMMIT":
                self.commits += 1

    def install(self) -> None:
        real = self._connect

        def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
            conn = real(*args, **kwargs)
            conn.set_trace_callback(self._trace)
            return conn

        sqlite3.connect = connect  # type: ignore[assignment]

    def uninstall(self) -> None:
        sqlite3.connect = self._connect


class ThreadCalls:
    """Counts Python and C calls on threads other than the loop's (profile hook per thread,
    installed for threads started after ``install``)."""

    def __init__(self) -> None:
        self.calls = 0
        self.on = False
        self._main = threading.get_ident()

    def _hook(self, frame: Any, event: str, arg: Any) -> None:
        if self.on and event in ("call", "c_call"):
            self.calls += 1

    def install(self) -> None:
        threading.setprofile(self._hook)

    def uninstall(self) -> None:
        threading.setprofile(None)  # type: ignore[arg-type]


class GcTimer:
    """CPU time (the collecting thread's) spent in the cyclic garbage collector."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._t0 = 0.0
        gc.callbacks.append(self._callback)

    def reset(self) -> None:
        self.seconds = 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._t0 = time.thread_time()
        else:
            self.seconds += time.thread_time() - self._t0


gc_timer = GcTimer()


# ------------------------------------------------------------------------- ASGI


async def asgi_call(
    app: App, method: str, path: str, body: bytes, headers: list[tuple[bytes, bytes]]
) -> tuple[int, bytes]:
    sent = False
    status = 0
    chunks: list[bytes] = []
    done = asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                done.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *headers,
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    await app(scope, receive, send)
    return status, b"".join(chunks)


class Lifespan:
    def __init__(self, app: App) -> None:
        self.app = app
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Lifespan:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self.task = asyncio.create_task(self.app(scope, self.inbox.get, self.outbox.put))
        await self.inbox.put({"type": "lifespan.startup"})
        msg = await self.outbox.get()
        assert msg["type"] == "lifespan.startup.complete", msg
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.inbox.put({"type": "lifespan.shutdown"})
        await self.outbox.get()
        assert self.task is not None
        await self.task


# ------------------------------------------------------------------------ a run


async def drive(
    app: App,
    targets: list[tuple[str, bytes]],
    headers: list[tuple[bytes, bytes]],
    requests: int,
    warm: int,
    sql: SqlCounter,
    threads: ThreadCalls,
    top: int,
    dump: str | None = None,
    profile: bool = True,
) -> dict[str, Any]:
    async def client(path: str, body: bytes, n: int) -> None:
        for _ in range(n):
            status, out = await asgi_call(app, "POST", path, body, headers)
            if status != 200:
                raise RuntimeError(f"{path}: {status} {out[:300]!r}")

    await asyncio.gather(*(client(p, b, warm) for p, b in targets))
    per_client = max(1, requests // len(targets))
    n = per_client * len(targets)
    gc.collect()
    gen0 = gc.get_stats()[0]["collections"]
    gen2 = gc.get_stats()[2]["collections"]
    gc_timer.reset()
    blocks = sys.getallocatedblocks()
    profiler = cProfile.Profile()
    cpu0 = time.process_time()
    loop0 = time.thread_time()
    sql.on = threads.on = profile
    if profile:
        profiler.enable()
    await asyncio.gather(*(client(p, b, per_client) for p, b in targets))
    profiler.disable()
    sql.on = threads.on = False
    cpu1 = time.process_time()
    loop1 = time.thread_time()
    gc_ms = gc_timer.seconds
    gen2_after = gc.get_stats()[2]["collections"]
    cpu = {
        "cpu_ms": 1000 * (cpu1 - cpu0) / n,
        "loop_cpu_ms": 1000 * (loop1 - loop0) / n,
        "thread_cpu_ms": 1000 * ((cpu1 - cpu0) - (loop1 - loop0)) / n,
        "gc_cpu_ms": 1000 * gc_ms / n,
        "gc_full_per_1000": 1000 * (gen2_after - gen2) / n,
    }
    if not profile:  # --cpu-only: no profiler, no hooks; CPU time only
        return {"requests": n, **cpu}
    gen0_after = gc.get_stats()[0]["collections"]
    gc.collect()
    blocks_after = sys.getallocatedblocks()
    stats = pstats.Stats(profiler)
    if dump:
        stats.dump_stats(dump)
    calls = sum(v[1] for v in stats.stats.values())  # type: ignore[attr-defined]
    result = {
        "requests": n,
        "calls": calls / n,
        "thread_calls": threads.calls / n,
        "sql": sql.statements / n,
        "commits": sql.commits / n,
        "blocks": (blocks_after - blocks) / n,
        "gc_gen0_per_100": 100 * (gen0_after - gen0) / n,
        **cpu,
    }
    if top:
        # a C function's calls count for the package of its caller (isinstance in FastAPI is
        # FastAPI's cost)
        packages: dict[str, float] = {}
        for fn, v in stats.stats.items():  # type: ignore[attr-defined]
            if fn[0] != "~":
                name = package(fn[0], fn[2])
                packages[name] = packages.get(name, 0) + v[1] / n
                continue
            for caller, cv in v[4].items():
                name = package(caller[0], caller[2])
                packages[name] = packages.get(name, 0) + cv[0] / n
        result["packages"] = dict(sorted(packages.items(), key=lambda kv: -kv[1])[:top])
        rows = sorted(
            stats.stats.items(),  # type: ignore[attr-defined]
            key=lambda kv: kv[1][1],
            reverse=True,
        )[:top]
        result["top"] = [
            {"calls": v[1] / n, "function": f"{fn[2]} ({Path(fn[0]).name}:{fn[1]})"}
            for fn, v in rows
        ]
    return result


def package(filename: str, function: str) -> str:
    """A function's package, for the per-package counts: ``netsuke/api``, ``fastapi``, ..."""
    if filename == "~":
        return "(C) " + function.split(" of ")[-1].split(".")[0].strip("<>'")
    parts = Path(filename).parts
    for anchor in ("site-packages", "src"):
        if anchor in parts:
            rest = parts[parts.index(anchor) + 1 :]
            return "/".join(rest[:2]) if rest[0] == "netsuke" else rest[0].removesuffix(".py")
    if "python3" in "".join(parts):
        return "stdlib/" + parts[-1].removesuffix(".py")
    return parts[-1]


async def run_bare(args: argparse.Namespace, sql: SqlCounter, threads: ThreadCalls) -> Any:
    if "api" not in sys.modules:
        # benchmarks/api.py moves sys.path[0] to the end when imported: give it this folder,
        # so a PYTHONPATH (another build of netsuke to compare) keeps its place
        sys.path.insert(0, HERE)
    import api  # benchmarks/api.py: the floor app

    app = api.bare_app()
    targets = [
        ("/chat", json.dumps({"user": f"u{i}", "message": MESSAGE}).encode())
        for i in range(args.clients)
    ]
    async with Lifespan(app):
        return await drive(
            app, targets, [], args.requests, args.warm, sql, threads, args.top,
            args.dump and f"{args.dump}.bare", not args.cpu_only,
        )  # fmt: skip


async def run_netsuke(args: argparse.Namespace, sql: SqlCounter, threads: ThreadCalls) -> Any:
    from netsuke.api import Settings, create_app, open_node
    from netsuke.observability import configure_logging

    tmp = Path(tempfile.mkdtemp(prefix="netsuke-api-cost-"))
    agents_dir = bench_agents(tmp)
    configure_logging("info", json=args.json_logs, capture_stdlib=True)
    settings = Settings(
        database_url=f"sqlite:///{tmp}/bench.db",
        agents_dir=agents_dir,
        rate_limit_per_minute=0,
        port=0,
    )
    async with open_node(settings) as node:
        key = (await node.store.api_keys.create("bench", "admin")).secret
        app = create_app(settings, store=node.store, runtime=node.runtime, extras=node.extras)
        headers = [(b"authorization", f"Bearer {key}".encode())]
        async with Lifespan(app):
            if not args.no_gc_tuning:  # as `netsuke serve` does once started
                try:
                    from netsuke.cli._tuning import tune_process
                except ImportError:  # a build before it
                    pass
                else:
                    tune_process(settings)
            targets = []
            for i in range(args.clients):
                body = json.dumps({"agent": "bench", "user": f"u{i}"}).encode()
                status, out = await asgi_call(app, "POST", "/api/v1/sessions", body, headers)
                assert status in (200, 201), out
                sid = json.loads(out)["session_id"]
                targets.append(
                    (f"/api/v1/sessions/{sid}/messages", json.dumps({"message": MESSAGE}).encode())
                )
            return await drive(
                app, targets, headers, args.requests, args.warm, sql, threads, args.top,
                args.dump and f"{args.dump}.netsuke", not args.cpu_only,
            )  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--warm", type=int, default=3, help="uncounted turns per client first")
    parser.add_argument("--json-logs", action="store_true")
    parser.add_argument("--side", choices=("netsuke", "bare", "both"), default="both")
    parser.add_argument("--top", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--no-gc-tuning", action="store_true", help="leave the collector as Python sets it"
    )
    parser.add_argument("--dump", default=None, help="write cProfile stats to DUMP.<side>")
    parser.add_argument(
        "--cpu-only", action="store_true", help="no profiler or hooks: process CPU ms only"
    )
    args = parser.parse_args()
    os.environ.setdefault("NETSUKE_RATE_LIMIT_PER_MINUTE", "0")
    results: dict[str, Any] = {}
    stderr = sys.stderr
    devnull = open(os.devnull, "w")  # noqa: SIM115 (the access log goes here during the run)
    sides = ("bare", "netsuke") if args.side == "both" else (args.side,)
    for side in sides:
        sql, threads = SqlCounter(), ThreadCalls()
        sql.install()
        threads.install()
        sys.stderr = devnull
        try:
            runner = run_bare if side == "bare" else run_netsuke
            results[side] = asyncio.run(runner(args, sql, threads))
        finally:
            sys.stderr = stderr
            sql.uninstall()
            threads.uninstall()
    devnull.close()
    import netsuke

    results["netsuke_source"] = str(Path(netsuke.__file__).parent)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    keys = (
        "calls", "thread_calls", "sql", "commits", "blocks", "gc_gen0_per_100", "cpu_ms",
        "loop_cpu_ms", "thread_cpu_ms", "gc_cpu_ms", "gc_full_per_1000",
    )  # fmt: skip
    print(f"netsuke from {results.pop('netsuke_source')}")
    print(f"{'per request':16s}" + "".join(f"{s:>12s}" for s in results))
    for k in keys:
        if all(k in r for r in results.values()):
            print(f"{k:16s}" + "".join(f"{results[s][k]:12.2f}" for s in results))
    for side, r in results.items():
        for name, count in r.get("packages", {}).items():
            print(f"  {side:8s} {count:8.2f}  {name}")
    for side, r in results.items():
        for row in r.get("top", []):
            print(f"  {side:8s} {row['calls']:8.2f}  {row['function']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
