"""One node per core: chat turns per second through ``netsuke serve --nodes 2`` against
``netsuke serve --nodes 1`` (issue 17.5).

Figure:

* ``chat turns/s, 2 nodes vs 1 node`` (turns/s): ``POST /api/v1/sessions/{id}/messages``
  with the offline model through ``serve --nodes 2`` (two node processes on one port, an
  embedded nats-server, one SQLite store file). Floor: the same load on ``serve --nodes 1``
  (the same supervisor, nats-server and store kind, one node process), in the same run.
  Target: ratio >= 1.7 on a 2-core machine.

The load comes from a separate process (``--load``): ``--clients`` keep-alive HTTP/1.1
connections (a minimal client on asyncio streams, uvloop when installed, so the load costs
little CPU beside the nodes), opened one after the other; each creates its own session
(owned by the node that accepted the connection) and then sends chat turns on it, for a
fixed time after a warm-up; after ``--turns-per-session`` turns (20) a client goes on with a
new session on the same connection (so on the same node), taken from those it made before
the measured window: a turn's CPU grows with its conversation's length (the agent loop walks
the history), so an unbounded session would charge the faster server for longer
conversations, and the servers' CPU is sampled from the moment the load process says its
sessions exist (session starts are not turns). Both servers run during the whole
benchmark; rounds alternate between them and the best round of each counts. The meta records the load average before
and after (``os.getloadavg``), the load process's CPU share, how many sessions each node
of the 2-node server held, the servers' CPU per turn (in all and per process: each node, the
nats-server, the supervisor; judge changes by these on a busy machine, where turns/s are
noise), and each node's counters: forwarded turns, SQLite write-lock waits, commit batches.

``--quick`` finishes within a minute; ``--json`` prints the figures object as the last line;
``--postgres`` runs both servers on a throwaway PostgreSQL server (durable commits; its CPU
counts in the servers', process ``postgres``: it shares the cores).
"""

from __future__ import annotations

import sys

# This folder goes after the standard library on sys.path (see kernel.py).
sys.path.append(sys.path.pop(0))

import argparse
import asyncio
import json
import math
import os
import re
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from _harness import Figure, loop_name, meta, report

HERE = str(Path(__file__).resolve())
EXE = str(Path(sys.executable).parent / "netsuke")
NAME = "chat turns/s, 2 nodes vs 1 node"
TARGET = 1.7
PER_SESSION = 20
SPARE_RATE = 60.0  # turns/s per client the spares are made for (40 seen with 16 clients)
"""Turns per session before a client starts a new one: a turn's CPU grows with the length of
its conversation (the agent loop walks the history), so without a bound the faster server
would be charged for longer conversations."""

# ----------------------------------------------------------------------- load process


class _Conn:
    """One keep-alive HTTP/1.1 connection; requests one at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def request(self, head: bytes, body: bytes) -> tuple[int, bytes]:
        self.writer.write(head + body)
        status = int((await self.reader.readline()).split()[1])
        length, chunked = 0, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            key = name.strip().lower()
            if key == b"content-length":
                length = int(value)
            elif key == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if not chunked:
            return status, await self.reader.readexactly(length)
        data = b""
        while size := int((await self.reader.readline()).strip(), 16):
            data += await self.reader.readexactly(size + 2)
        await self.reader.readline()
        return status, data


def _head(method: str, path: str, host: str, key: str, length: int) -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


async def load(
    url: str, key: str, clients: int, seconds: float, warm: float, per_session: int = 0
) -> dict[str, Any]:
    host = url.split("://", 1)[1].rstrip("/")
    address, port = host.rsplit(":", 1)
    conns: list[tuple[_Conn, str]] = []
    made = 0

    async def new_session(conn: _Conn) -> str:
        nonlocal made
        made += 1
        body = json.dumps({"agent": "bench", "user": f"u{made}-{os.getpid()}"}).encode()
        status, reply = await conn.request(
            _head("POST", "/api/v1/sessions", host, key, len(body)), body
        )
        if status not in (200, 201):
            raise RuntimeError(f"session not created: {status} {reply[:300]!r}")
        sid: str = json.loads(reply)["session_id"]
        sessions.append(sid)
        return sid

    sessions: list[str] = []
    # with per_session, the sessions a client will need are made before the measured window
    # (the parent samples the servers' CPU once this process prints "ready"): what is
    # measured is turns, not session starts; a client that runs out makes more (counted)
    spare = math.ceil((warm + seconds) * SPARE_RATE / per_session) if per_session else 0
    queued: list[list[str]] = []
    for _ in range(clients):  # one after the other: each new connection meets idle loops
        conn = _Conn(*await asyncio.open_connection(address, int(port)))
        conns.append((conn, await new_session(conn)))
        queued.append([])
    for _ in range(spare):
        for (conn, _), more in zip(conns, queued, strict=True):
            more.append(await new_session(conn))
    print(json.dumps({"ready": True}), flush=True)
    late = 0
    message = json.dumps({"message": "Tell me about the weather in Kyoto"}).encode()
    latencies: list[float] = []
    errors: Counter[int] = Counter()
    total = 0
    start = time.perf_counter()
    measure_from, stop_at = start + warm, start + warm + seconds
    cpu0 = 0.0

    async def client(conn: _Conn, sid: str, more: list[str]) -> None:
        nonlocal total, late
        head = _head("POST", f"/api/v1/sessions/{sid}/messages", host, key, len(message))
        turns = 0
        while (t0 := time.perf_counter()) < stop_at:
            if per_session and turns >= per_session:
                # a new conversation on the same connection (so on the same node): a turn's
                # work grows with its conversation's length, see --turns-per-session
                if more:
                    sid = more.pop()
                else:
                    sid, late = await new_session(conn), late + 1
                turns = 0
                head = _head("POST", f"/api/v1/sessions/{sid}/messages", host, key, len(message))
                t0 = time.perf_counter()
            turns += 1
            status, _ = await conn.request(head, message)
            t1 = time.perf_counter()
            total += 1
            if status != 200:
                errors[status] += 1
            elif t0 >= measure_from and t1 <= stop_at:
                latencies.append(t1 - t0)

    async def cpu_mark() -> None:
        nonlocal cpu0
        await asyncio.sleep(warm)
        cpu0 = time.process_time()

    marker = asyncio.create_task(cpu_mark())
    await asyncio.gather(*(client(c, s, m) for (c, s), m in zip(conns, queued, strict=True)))
    await marker
    cpu = time.process_time() - cpu0
    for conn, _ in conns:
        conn.writer.close()
    latencies.sort()
    n = len(latencies)
    return {
        "count": n,
        "total": total,
        "errors": dict(errors),
        "rps": n / seconds,
        "p50_ms": latencies[n // 2] * 1000 if n else 0.0,
        "p99_ms": latencies[min(n - 1, int(n * 0.99))] * 1000 if n else 0.0,
        "load_cpu_share": cpu / seconds,
        "sessions": sessions,
        "sessions_started_while_measured": late,
    }


def run_load(
    url: str,
    key: str,
    clients: int,
    seconds: float,
    per_session: int = 0,
    ready: Any = None,
) -> dict[str, Any]:
    """Run the load process; ``ready()`` is called once its sessions exist and the turns
    start (the servers' CPU is sampled from there)."""
    proc = subprocess.Popen(
        [sys.executable, HERE, "--load", url, "--key", key, "--clients", str(clients),
         "--seconds", str(seconds), "--turns-per-session", str(per_session)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith('{"ready"'):
            if ready is not None:
                ready()
            break
    try:
        rest, err = proc.communicate(timeout=seconds + 180)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"load on {url} failed:\n{err[-2000:]}")
    out: dict[str, Any] = json.loads(rest.strip().splitlines()[-1])
    if out["errors"]:
        raise RuntimeError(f"{url}: requests failed: {out['errors']}")
    return out


# ------------------------------------------------------------------------- servers


def start(
    nodes: int, tmp: Path, agents: Path, database_url: str | None = None
) -> tuple[subprocess.Popen[str], str, str]:
    """``netsuke serve --nodes N`` on a store of its own (a SQLite file in ``tmp``, or
    ``database_url``): the process, its URL, its key."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETSUKE_")}
    env |= {"NETSUKE_RATE_LIMIT_PER_MINUTE": "0", "NETSUKE_LOG_LEVEL": "info"}
    proc = subprocess.Popen(
        [EXE, "serve", "--nodes", str(nodes), "--node", f"bench{nodes}", "--port", "0",
         "--database-url", database_url or f"sqlite:///{tmp}/nodes{nodes}.db",
         "--agents-dir", str(agents)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=tmp,
    )  # fmt: skip
    assert proc.stdout is not None
    url = key = ""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if m := re.search(r"(nsk_\S+)", line):
            key = m.group(1)
        if m := re.search(r"serving (http://\S+)", line):
            url = m.group(1)
            break
    if not url or not key:
        stop(proc)
        raise RuntimeError(f"serve --nodes {nodes} did not start")
    return proc, url, key


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def tree_cpu(pid: int, postgres: int | None = None) -> dict[str, float]:
    """CPU seconds used so far by ``pid`` (``supervisor``) and each of its children: the
    nodes (by ``--node`` name) and the ``nats-server``; with ``postgres`` (the PID the
    PostgreSQL server was started as), also ``postgres``: that process and its descendants
    (the postmaster, its backends)."""
    tick = os.sysconf("SC_CLK_TCK")
    used: dict[str, float] = {}
    if postgres is not None:
        used["postgres"] = _descendants_cpu(postgres) / tick
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            if int(entry) != pid and int(fields[1]) != pid:
                continue
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(entry) == pid:
            name = "supervisor"
        elif m := re.search(r"--node (\S+)", cmd):
            name = m.group(1)
        else:
            name = "nats-server" if "nats" in cmd else "other"
        used[name] = used.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return used


def _descendants_cpu(root: int) -> int:
    """Clock ticks used so far by ``root`` and every process below it."""
    stats: dict[int, tuple[int, int]] = {}  # pid: (parent, ticks)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                f = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry)] = (int(f[1]), int(f[11]) + int(f[12]))
    total, todo, seen = 0, [root], set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in stats:
            continue
        seen.add(pid)
        total += stats[pid][1]
        todo.extend(p for p, (parent, _) in stats.items() if parent == pid)
    return total


def node_metrics(url: str, key: str, nodes: int) -> dict[str, dict[str, float]]:
    """Some counters of each node's ``/metrics`` (fresh connections until every node
    answered): forwarded turns, write-lock waits, commits."""
    import httpx

    wanted = {
        "forwarded_turns": 'netsuke_cluster_forwarded_requests_total{op="run",outcome="ok"}',
        "turns_committed": "netsuke_store_turns_committed_total",
        "commit_batches": "netsuke_store_commit_batches_total",
        "write_lock_waits": "netsuke_store_write_lock_waits_total",
        "write_lock_wait_s": "netsuke_store_write_lock_wait_seconds_total",
        "accepts_forced": 'netsuke_serve_accepts_total{how="forced"}',
    }
    seen: dict[str, dict[str, float]] = {}
    for _ in range(20 * nodes):
        with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=60) as http:
            text = http.get(f"{url}/metrics").text
        m = re.search(r'node="([^"#]+)#', text)
        if m is None or m.group(1) in seen:
            continue
        values = dict.fromkeys(wanted, 0.0)  # a labelled counter never incremented is absent
        for line in text.splitlines():
            name, _, value = line.rpartition(" ")
            for short, full in wanted.items():
                if name == full:
                    values[short] = round(float(value), 3)
        seen[m.group(1)] = values
        if len(seen) >= nodes:
            break
    return seen


def owners(url: str, key: str, sessions: list[str]) -> dict[str, int]:
    """How many of ``sessions`` each node owns (``/api/v1/cluster/sessions``)."""
    import httpx

    held: Counter[str] = Counter()
    wanted = set(sessions)
    cursor = None
    with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=60) as http:
        while True:
            params: dict[str, Any] = {"limit": 200, **({"cursor": cursor} if cursor else {})}
            page = http.get(f"{url}/api/v1/cluster/sessions", params=params).json()
            for s in page["sessions"]:
                if s["session_id"] in wanted:
                    held[s["owner_node"]] += 1
            cursor = page.get("next_cursor")
            if not cursor:
                return dict(held)


def figures(
    quick: bool, clients: int = 16, postgres: bool = False, per_session: int = PER_SESSION
) -> tuple[list[Figure], dict[str, Any]]:
    """The figure and what to record beside it (also used by ``benchmarks/cluster.py``).
    ``postgres``: both servers on databases of a throwaway PostgreSQL server (durable
    commits) instead of SQLite files; its CPU counts in the servers' (it shares the cores)."""
    seconds = 4.0 if quick else 10.0
    rounds = 1 if quick else 3
    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="netsuke-bench-nodes-"))
    agents = tmp / "agents"
    agents.mkdir()
    (agents / "bench.yaml").write_text(
        "name: bench\nmodel: offline\nsystem_prompt: You are a helpful assistant.\n"
    )
    servers: dict[int, tuple[subprocess.Popen[str], str, str]] = {}
    results: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    spread: list[dict[str, int]] = []
    pg: Any = None
    urls: dict[int, str | None] = {1: None, 2: None}
    try:
        if postgres:
            from netsuke.store import upgrade
            from netsuke.store.testing import TemporaryPostgres

            pg = TemporaryPostgres(durable=True).start()
            for n in (1, 2):
                urls[n] = pg.create_database(f"nodes{n}")
                asyncio.run(upgrade(urls[n]))
        pg_pid = pg._process.pid if pg is not None else None
        for n in (1, 2):
            servers[n] = start(n, tmp, agents, urls[n])
        idle: dict[int, dict[str, float]] = {}  # CPU s per s of each idle server's processes
        for n in (1, 2):
            before, t = tree_cpu(servers[n][0].pid, pg_pid), time.perf_counter()
            time.sleep(3.0)
            after, dt = tree_cpu(servers[n][0].pid, pg_pid), time.perf_counter() - t
            idle[n] = {k: (v - before.get(k, 0.0)) / dt for k, v in after.items()}
        for _ in range(rounds):
            for n in (1, 2):
                proc, url, key = servers[n]
                mark: dict[str, Any] = {}

                def ready(pid: int = proc.pid, mark: dict[str, Any] = mark) -> None:
                    mark["cpu"], mark["t"] = tree_cpu(pid, pg_pid), time.perf_counter()

                out = run_load(url, key, clients, seconds, per_session, ready)
                cpu = mark["cpu"]
                after, dt = tree_cpu(proc.pid, pg_pid), time.perf_counter() - mark["t"]
                turns = max(out["total"], 1)
                by = {
                    k: (v - cpu.get(k, 0.0) - idle[n].get(k, 0.0) * dt) * 1000 / turns
                    for k, v in after.items()
                }
                out["cpu_ms_per_turn"] = sum(by.values())
                out["cpu_ms_per_turn_by_process"] = {k: round(v, 2) for k, v in by.items()}
                results[n].append(out)
                if n == 2:
                    spread.append(owners(url, key, out["sessions"]))
        counters = {n: node_metrics(servers[n][1], servers[n][2], n) for n in (1, 2)}
    finally:
        for proc, _, _ in servers.values():
            stop(proc)
        if pg is not None:
            pg.stop()
    best = {n: max(r, key=lambda o: o["rps"]) for n, r in results.items()}
    two, one = best[2]["rps"], best[1]["rps"]
    fig = Figure(
        NAME, two, "turns/s", floor=one, floor_label="serve --nodes 1, same load",
        target=f">= {TARGET}x", met=one > 0 and two / one >= TARGET,
    )  # fmt: skip
    extra = {
        "store": "postgresql" if postgres else "sqlite",
        "clients": clients,
        "turns_per_session": per_session,
        # sessions a client had to start inside the measured window (its spares ran out)
        "sessions_started_while_measured": {
            n: best[n]["sessions_started_while_measured"] for n in (1, 2)
        },
        "seconds_per_round": seconds,
        "rounds": rounds,
        "turns_per_s": {n: [round(o["rps"], 1) for o in r] for n, r in results.items()},
        "p99_ms": {n: round(best[n]["p99_ms"], 1) for n in (1, 2)},
        "load_process_cpu_share": {n: round(best[n]["load_cpu_share"], 3) for n in (1, 2)},
        # server CPU (nodes, supervisor, nats-server) per turn beyond its idle use (heartbeats,
        # lease renewals): equal costs mean the ratio on an otherwise idle machine is bounded
        # by the cores, not by the nodes' sharing of the store
        "server_cpu_ms_per_turn": {n: round(best[n]["cpu_ms_per_turn"], 2) for n in (1, 2)},
        # the same, per process of the best round: a node forwarding turns to another, or
        # spending more per turn than the 1-node server's node, shows here
        "server_cpu_ms_per_turn_by_process": {
            n: best[n]["cpu_ms_per_turn_by_process"] for n in (1, 2)
        },
        "server_idle_cpu_share": {n: round(sum(idle[n].values()), 3) for n in (1, 2)},
        "sessions_per_node_2": spread,
        # each node's counters over all rounds: forwarded turns (0 when every session is on
        # the node its connection reached), SQLite write-lock waits, commits and batches
        "node_counters": counters,
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "usable_cores": len(os.sched_getaffinity(0)),
    }
    return [fig], extra


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument(
        "--postgres", action="store_true", help="both servers on PostgreSQL (durable commits)"
    )
    parser.add_argument(
        "--turns-per-session", type=int, default=PER_SESSION,
        help=f"each client starts a new session after this many turns (0: never; {PER_SESSION})",
    )  # fmt: skip
    parser.add_argument("--load", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--key", default="", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=5.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        loop_name()  # uvloop for the load process when installed: it must cost little CPU
        out = asyncio.run(
            load(args.load, args.key, args.clients, args.seconds, 1.0, args.turns_per_session)
        )
        print(json.dumps(out))
        return 0
    t0 = time.perf_counter()
    figs, extra = figures(args.quick, args.clients, args.postgres, args.turns_per_session)
    extra |= {**meta("asyncio (serve)"), "quick": args.quick}
    extra["seconds"] = round(time.perf_counter() - t0, 1)
    report("Netsuke serve --nodes", figs, as_json=args.json, extra=extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
