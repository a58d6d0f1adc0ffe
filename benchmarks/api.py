"""API benchmark: chat requests per second through ``netsuke serve`` with the offline model.

Figures (each beside its floor measured in the same run):

* ``chat_rps``: ``POST /api/v1/sessions/{id}/messages`` (JSON reply) on a real ``netsuke
  serve`` subprocess at the default log level (``info``: an access log line per request,
  console text, or JSON lines with ``--json-logs``): API key check, rate limiter (off), the
  session lookup, the session's agent server, the offline model, the turn and the request's
  audit record committed to SQLite (one transaction, group commit) before the reply. Floor: a
  bare FastAPI app in a subprocess with one endpoint running the same offline-model turn
  directly with pydantic-ai (``Agent.run`` with an in-memory history per user; no Netsuke,
  no persistence, no auth, no logs), served by the same uvicorn setup (``uvicorn.Server`` in
  ``asyncio.run``, one process). Target: at least 85% of the floor.
* ``chat_p50_ms``, ``chat_p99_ms``: request latency seen by the clients (floor: the bare
  endpoint's). Target for p99: at most 1.5 times the floor's.

The load comes from a separate process on loopback (``--load``): N concurrent httpx clients,
each its own user and session, for a fixed time after a warm-up. Both servers run during the
whole benchmark; rounds alternate between them.

Usage: ``python benchmarks/api.py [--quick] [--json] [--json-logs]``.
"""

from __future__ import annotations

import sys

# This folder goes after the standard library on sys.path, so benchmarks/queue.py never
# shadows the standard library's queue (used by asyncio, aiosqlite and the store's writer).
sys.path.append(sys.path.pop(0))

import argparse
import asyncio
import json
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from _harness import Figure, bench_agents, report

HERE = Path(__file__).resolve()
EXE = str(Path(sys.executable).parent / "netsuke")
MESSAGE = "Tell me about the weather in Kyoto"


# ----------------------------------------------------------------- bare FastAPI floor


class Chat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str
    message: str


def bare_app() -> Any:
    from fastapi import FastAPI
    from pydantic_ai import Agent
    from pydantic_ai.messages import ModelMessage

    from netsuke.agents import OfflineModel

    agent = Agent(OfflineModel(), instructions="You are a helpful assistant.")
    histories: dict[str, list[ModelMessage]] = {}
    app = FastAPI()

    @app.post("/chat")
    async def chat(body: Chat) -> dict[str, Any]:
        history = histories.setdefault(body.user, [])
        result = await agent.run(body.message, message_history=history)
        history.extend(result.new_messages())
        usage = result.usage()
        return {
            "output": result.output,
            "tokens_in": usage.input_tokens,
            "tokens_out": usage.output_tokens,
        }

    return app


async def serve_bare() -> None:
    import uvicorn

    config = uvicorn.Config(
        bare_app(),
        host="127.0.0.1",
        port=0,
        log_config=None,
        log_level="warning",
        access_log=False,
        lifespan="on",
        ws="websockets-sansio",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 (uvicorn offers no event)
        await asyncio.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    print(f"running at http://127.0.0.1:{port}", flush=True)
    await task


# ----------------------------------------------------------------------- load process


def thread_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds of a process's main thread (the event loop's) and of its other threads
    (the store's writer, ...), from ``/proc``; ``(0, 0)`` when unreadable (not Linux)."""
    tick = os.sysconf("SC_CLK_TCK")
    main = other = 0.0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0, 0.0
    for tid in tids:
        try:
            fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended
            continue
        cpu = (int(fields[11]) + int(fields[12])) / tick
        if int(tid) == pid:
            main += cpu
        else:
            other += cpu
    return main, other


async def load(
    url: str, kind: str, key: str, clients: int, seconds: float, warm: float, pid: int = 0
) -> None:
    import httpx

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=60) as c:
        paths = []
        for i in range(clients):
            user = f"u{i}-{os.getpid()}"
            if kind == "netsuke":
                r = await c.post("/api/v1/sessions", json={"agent": "bench", "user": user})
                r.raise_for_status()
                paths.append((f"/api/v1/sessions/{r.json()['session_id']}/messages", None))
            else:
                paths.append(("/chat", user))
        latencies: list[float] = []
        errors = 0
        done_in_window = 0  # replies received inside the measured window (CPU per request)
        start = time.perf_counter()
        measure_from = start + warm
        stop_at = measure_from + seconds
        cpu: list[tuple[float, float]] = []

        async def sample_cpu() -> None:  # the server's CPU at both ends of the window
            await asyncio.sleep(measure_from - time.perf_counter())
            cpu.append(thread_cpu(pid))
            await asyncio.sleep(stop_at - time.perf_counter())
            cpu.append(thread_cpu(pid))

        async def client(path: str, user: str | None) -> None:
            nonlocal errors, done_in_window
            body = {"message": MESSAGE} if user is None else {"user": user, "message": MESSAGE}
            while True:
                t0 = time.perf_counter()
                if t0 >= stop_at:
                    return
                r = await c.post(path, json=body)
                t1 = time.perf_counter()
                if r.status_code != 200:
                    errors += 1
                    continue
                if measure_from <= t1 <= stop_at:
                    done_in_window += 1
                if t0 >= measure_from and t1 <= stop_at:
                    latencies.append(t1 - t0)

        await asyncio.gather(sample_cpu(), *(client(p, u) for p, u in paths))
    latencies.sort()
    n = len(latencies)
    (m0, o0), (m1, o1) = cpu
    per = 1000.0 / max(done_in_window, 1)
    print(
        json.dumps(
            {
                "count": n,
                "errors": errors,
                "rps": n / seconds,
                "p50_ms": latencies[n // 2] * 1000 if n else 0.0,
                "p99_ms": latencies[min(n - 1, int(n * 0.99))] * 1000 if n else 0.0,
                "cpu_ms": per * ((m1 - m0) + (o1 - o0)),
                "loop_cpu_ms": per * (m1 - m0),
                "thread_cpu_ms": per * (o1 - o0),
            }
        )
    )


def run_load(
    url: str, kind: str, key: str, clients: int, seconds: float, pid: int = 0
) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, str(HERE), "--load", url, "--kind", kind, "--key", key,
         "--clients", str(clients), "--seconds", str(seconds), "--pid", str(pid)],
        capture_output=True, text=True, timeout=seconds + 120, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"load on {kind} failed:\n{proc.stderr[-2000:]}")
    out: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    if out["errors"]:
        raise RuntimeError(f"{kind}: {out['errors']} requests failed")
    return out


# ------------------------------------------------------------------------- servers


def start(cmd: list[str], env: dict[str, str], cwd: str) -> tuple[subprocess.Popen[str], str, str]:
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=cwd
    )
    assert proc.stdout is not None
    url = key = ""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if m := re.search(r"running at (http://\S+)", line):
            url = m.group(1)
        if m := re.search(r"(nsk_\S+)", line):
            key = m.group(1)
        if url and (key or "serve" not in cmd):
            break
    if not url:
        proc.kill()
        raise RuntimeError(f"server did not start: {cmd}")
    return proc, url, key


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def main() -> int:
    parser = argparse.ArgumentParser(description="API benchmark")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--serve-bare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--load", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--kind", default="netsuke", help=argparse.SUPPRESS)
    parser.add_argument("--key", default="", help=argparse.SUPPRESS)
    parser.add_argument("--pid", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--json-logs", action="store_true", help="serve with --json-logs")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    if args.serve_bare:
        asyncio.run(serve_bare())
        return 0
    if args.load:
        asyncio.run(load(args.load, args.kind, args.key, args.clients, args.seconds, 1.0, args.pid))
        return 0

    clients = 16 if args.quick else 32
    seconds = 4.0 if args.quick else 10.0
    rounds = 1 if args.quick else 2
    tmp = tempfile.mkdtemp(prefix="netsuke-bench-api-")
    agents_dir = bench_agents(tmp)
    env = {**os.environ, "NETSUKE_RATE_LIMIT_PER_MINUTE": "0", "NETSUKE_LOG_LEVEL": "info"}
    logs = ["--json-logs"] if args.json_logs else []
    netsuke, n_url, key = start(
        [EXE, "serve", "--port", "0", "--database-url", f"sqlite:///{tmp}/bench.db",
         "--agents-dir", str(agents_dir), *logs],
        env, tmp,
    )  # fmt: skip
    bare, b_url, _ = start([sys.executable, str(HERE), "--serve-bare"], env, tmp)
    results: dict[str, list[dict[str, float]]] = {"netsuke": [], "bare": []}
    try:
        for _ in range(rounds):
            results["bare"].append(run_load(b_url, "bare", "", clients, seconds, bare.pid))
            results["netsuke"].append(
                run_load(n_url, "netsuke", key, clients, seconds, netsuke.pid)
            )
    finally:
        stop(netsuke)
        stop(bare)
    best = {k: max(v, key=lambda r: r["rps"]) for k, v in results.items()}
    n, b = best["netsuke"], best["bare"]
    figures = [
        Figure(
            "chat_rps",
            n["rps"],
            "req/s",
            floor=b["rps"],
            floor_label="bare FastAPI + pydantic-ai",
            target=">= 85% of bare",
            met=n["rps"] >= 0.85 * b["rps"],
        ),
        Figure(
            "chat_p50_ms", n["p50_ms"], "ms", floor=b["p50_ms"], floor_label="bare",
            higher_is_better=False,
        ),
        Figure(
            "chat_p99_ms", n["p99_ms"], "ms", floor=b["p99_ms"], floor_label="bare",
            higher_is_better=False, target="<= 1.5x bare", met=n["p99_ms"] <= 1.5 * b["p99_ms"],
        ),
    ]  # fmt: skip
    # CPU per request: the server process's CPU over each measured window (/proc), divided by
    # the replies in it, averaged over the rounds (steadier than the rates on a busy machine)
    cpu = {k: sum(r["cpu_ms"] for r in v) / len(v) for k, v in results.items()}
    figures.append(
        Figure(
            "chat_cpu_ms", cpu["netsuke"], "ms", floor=cpu["bare"], floor_label="bare",
            higher_is_better=False,
        )
    )  # fmt: skip
    report(
        "api",
        figures,
        as_json=args.json,
        extra={
            "clients": clients,
            "seconds_per_round": seconds,
            "rounds": rounds,
            "logs": "json" if args.json_logs else "console",
            "requests": {k: [int(r["count"]) for r in v] for k, v in results.items()},
            "cpu_ms": {
                k: [
                    {p: round(r[p], 3) for p in ("cpu_ms", "loop_cpu_ms", "thread_cpu_ms")}
                    for r in v
                ]
                for k, v in results.items()
            },
            "python": sys.version.split()[0],
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
