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

Informational controls (the figure stays at ``--clients``): ``--clients-sweep 16,32`` runs
the same rounds at more client counts and records each server's best at each, with the cores
each server kept busy (``server_cores_used``: well under 2 for the 2-node server on a quiet
machine means the load left it without work at times); ``--pair`` also runs two independent
``serve --nodes 1`` servers (a SQLite file, a supervisor and a nats-server each, nothing
shared), each loaded by its own load process with half the clients, all turns starting
together: the CPU per turn of two node processes sharing the cores with no cluster and no
shared file between them, against which the 2-node server's excess can be split into what
two processes on two cores cost anyway and what the cluster and the shared file add;
``--pin`` runs the 2-node server with ``nodes_pin`` (each node process, every thread, on a
core of its own: a node's SQLite writer thread then never wakes on the other node's core) and
pins the pair's two processes the same way.

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
    url: str,
    key: str,
    clients: int,
    seconds: float,
    warm: float,
    per_session: int = 0,
    wait_go: bool = False,
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
    if wait_go:  # several load processes start their turns together (--pair)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
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
    return run_loads([(url, key)], clients, seconds, per_session, ready)[0]


def run_loads(
    targets: list[tuple[str, str]],
    clients: int,
    seconds: float,
    per_session: int = 0,
    ready: Any = None,
) -> list[dict[str, Any]]:
    """One load process per ``(url, key)`` of ``targets``, ``clients`` connections each,
    running together: each makes its sessions, then all start their turns at once, after
    ``ready()`` (the servers' CPU is sampled from there)."""

    def command(url: str, key: str) -> list[str]:
        return [sys.executable, HERE, "--load", url, "--key", key, "--clients", str(clients),
                "--seconds", str(seconds), "--turns-per-session", str(per_session),
                *(["--wait-go"] if len(targets) > 1 else [])]  # fmt: skip

    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    procs = [subprocess.Popen(command(url, key), text=True, **pipes) for url, key in targets]
    for proc in procs:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith('{"ready"'):
                break
    if ready is not None:
        ready()
    if len(targets) > 1:
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
    outs: list[dict[str, Any]] = []
    for (url, _), proc in zip(targets, procs, strict=True):
        try:
            rest, err = proc.communicate(timeout=seconds + 180)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
        if proc.returncode != 0:
            raise RuntimeError(f"load on {url} failed:\n{err[-2000:]}")
        out: dict[str, Any] = json.loads(rest.strip().splitlines()[-1])
        if out["errors"]:
            raise RuntimeError(f"{url}: requests failed: {out['errors']}")
        outs.append(out)
    return outs


# ------------------------------------------------------------------------- servers


def start(
    nodes: int,
    tmp: Path,
    agents: Path,
    database_url: str | None = None,
    name: str = "",
    pin: bool = False,
) -> tuple[subprocess.Popen[str], str, str]:
    """``netsuke serve --nodes N`` on a store of its own (a SQLite file in ``tmp``, or
    ``database_url``): the process, its URL, its key. ``name``: its node name (``benchN``);
    ``pin``: each node on a core of its own (``nodes_pin``)."""
    name = name or f"bench{nodes}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETSUKE_")}
    env |= {"NETSUKE_RATE_LIMIT_PER_MINUTE": "0", "NETSUKE_LOG_LEVEL": "info"}
    if pin:
        env["NETSUKE_NODES_PIN"] = "true"
    proc = subprocess.Popen(
        [EXE, "serve", "--nodes", str(nodes), "--node", name, "--port", "0",
         "--database-url", database_url or f"sqlite:///{tmp}/{name}.db",
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


def pin_nodes(pids: list[int]) -> dict[str, int]:
    """Pin each node process started by the supervisors ``pids`` (every thread of it) to a
    core of its own (the ``i``-th node by ``--node`` name to the ``i``-th usable core): a
    node's writer thread then wakes on its own node's core, never on the other's (``--pin``).
    The node's name: its core."""
    cores = sorted(os.sched_getaffinity(0))
    nodes: dict[str, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if parent in pids and (m := re.search(r"--node (\S+)", cmd)):
            nodes[m.group(1)] = int(entry)
    pinned: dict[str, int] = {}
    for i, name in enumerate(sorted(nodes)):
        core = cores[i % len(cores)]
        for task in os.listdir(f"/proc/{nodes[name]}/task"):
            try:
                os.sched_setaffinity(int(task), {core})
            except OSError:  # a thread that just ended
                continue
        pinned[name] = core
    return pinned


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


Server = tuple[subprocess.Popen[str], str, str]


def _measure(
    servers: list[Server],
    idle: list[dict[str, float]],
    clients: int,
    seconds: float,
    per_session: int,
    pg_pid: int | None,
) -> dict[str, Any]:
    """One round on ``servers`` (one, or the independent pair of ``--pair``, each loaded by
    its own load process with ``clients`` connections, all at once): the load's figures
    (turns added up) and the servers' CPU per turn beyond their idle use (``idle``: CPU s
    per s of each server's processes), in all and per process, and the cores they used."""
    mark: dict[str, Any] = {}

    def cpu() -> dict[str, float]:
        used: dict[str, float] = {}
        for proc, _, _ in servers:
            used |= tree_cpu(proc.pid, pg_pid)
        return used

    def ready() -> None:
        mark["cpu"], mark["t"] = cpu(), time.perf_counter()

    outs = run_loads([(url, key) for _, url, key in servers], clients, seconds, per_session, ready)
    after, dt = cpu(), time.perf_counter() - mark["t"]
    idle_all = {k: v for i in idle for k, v in i.items()}
    turns = max(sum(o["total"] for o in outs), 1)
    used = {k: v - mark["cpu"].get(k, 0.0) for k, v in after.items()}
    by = {k: (v - idle_all.get(k, 0.0) * dt) * 1000 / turns for k, v in used.items()}
    out = dict(outs[0])
    if len(outs) > 1:
        n = sum(o["count"] for o in outs)
        out |= {
            "count": n,
            "total": sum(o["total"] for o in outs),
            "rps": sum(o["rps"] for o in outs),
            "p99_ms": max(o["p99_ms"] for o in outs),
            "load_cpu_share": sum(o["load_cpu_share"] for o in outs),
            "sessions": [x for o in outs for x in o["sessions"]],
            "sessions_started_while_measured": sum(
                o["sessions_started_while_measured"] for o in outs
            ),
        }
    out["cpu_ms_per_turn"] = sum(by.values())
    out["cpu_ms_per_turn_by_process"] = {k: round(v, 2) for k, v in by.items()}
    # cores the server's processes kept busy (idle use included): well under 2 on a quiet
    # 2-core machine means the load left the server without work part of the time
    out["server_cores_used"] = round(sum(used.values()) / dt, 2)
    return out


def figures(
    quick: bool,
    clients: int = 16,
    postgres: bool = False,
    per_session: int = PER_SESSION,
    sweep: tuple[int, ...] = (),
    pair: bool = False,
    pin: bool = False,
) -> tuple[list[Figure], dict[str, Any]]:
    """The figure and what to record beside it (also used by ``benchmarks/cluster.py``).
    ``postgres``: both servers on databases of a throwaway PostgreSQL server (durable
    commits) instead of SQLite files; its CPU counts in the servers' (it shares the cores).
    ``sweep``: more client counts, run like the headline's and recorded beside it
    (informational: the figure is at ``clients``). ``pair``: also two independent
    ``serve --nodes 1`` servers (a SQLite file each, no cluster between them), each with half
    the clients, loaded at once: the CPU a turn costs when two node processes share the
    cores but nothing else (informational). ``pin``: the 2-node server with ``nodes_pin``, the
    pair pinned likewise (``pin_nodes``); the 1-node server is left alone."""
    seconds = 4.0 if quick else 10.0
    rounds = 1 if quick else 3
    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="netsuke-bench-nodes-"))
    agents = tmp / "agents"
    agents.mkdir()
    (agents / "bench.yaml").write_text(
        "name: bench\nmodel: offline\nsystem_prompt: You are a helpful assistant.\n"
    )
    # kinds of server: 1 and 2 (serve --nodes N), 0 (the independent pair, with --pair)
    kinds = (1, 2, 0) if pair else (1, 2)
    servers: dict[int, list[Server]] = {}
    counts = (clients, *[c for c in sweep if c != clients])
    results: dict[tuple[int, int], list[dict[str, Any]]] = {
        (c, n): [] for c in counts for n in kinds
    }
    spread: list[dict[str, int]] = []
    pg: Any = None
    urls: dict[int, str | None] = {1: None, 2: None}
    try:
        if postgres:
            if pair:
                raise SystemExit("--pair runs on SQLite only")
            from netsuke.store import upgrade
            from netsuke.store.testing import TemporaryPostgres

            pg = TemporaryPostgres(durable=True).start()
            for n in (1, 2):
                urls[n] = pg.create_database(f"nodes{n}")
                asyncio.run(upgrade(urls[n]))
        pg_pid = pg._process.pid if pg is not None else None
        for n in (1, 2):
            servers[n] = [start(n, tmp, agents, urls[n], pin=pin and n == 2)]
        if pair:
            servers[0] = [start(1, tmp, agents, name=name) for name in ("pairA", "pairB")]
        pinned: dict[str, int] = {}
        if pin and pair:  # (the 2-node server pins its nodes itself: nodes_pin)
            pinned |= pin_nodes([proc.pid for proc, _, _ in servers[0]])
        idle: dict[int, list[dict[str, float]]] = {}  # CPU s per s of each idle server
        for n in kinds:
            idle[n] = []
            for proc, _, _ in servers[n]:
                before, t = tree_cpu(proc.pid, pg_pid), time.perf_counter()
                time.sleep(3.0)
                after, dt = tree_cpu(proc.pid, pg_pid), time.perf_counter() - t
                idle[n].append({k: (v - before.get(k, 0.0)) / dt for k, v in after.items()})
        for _ in range(rounds):
            for c in counts:
                for n in kinds:
                    each = c // 2 if n == 0 else c
                    out = _measure(servers[n], idle[n], each, seconds, per_session, pg_pid)
                    results[c, n].append(out)
                    if n == 2 and c == clients:
                        _, url, key = servers[2][0]
                        spread.append(owners(url, key, out["sessions"]))
        counters = {n: node_metrics(servers[n][0][1], servers[n][0][2], n) for n in (1, 2)}
    finally:
        for group in servers.values():
            for proc, _, _ in group:
                stop(proc)
        if pg is not None:
            pg.stop()
    best = {k: max(r, key=lambda o: o["rps"]) for k, r in results.items()}
    two, one = best[clients, 2]["rps"], best[clients, 1]["rps"]
    fig = Figure(
        NAME, two, "turns/s", floor=one, floor_label="serve --nodes 1, same load",
        target=f">= {TARGET}x", met=one > 0 and two / one >= TARGET,
    )  # fmt: skip
    head = {n: best[clients, n] for n in (1, 2)}
    extra = {
        "store": "postgresql" if postgres else "sqlite",
        "clients": clients,
        "turns_per_session": per_session,
        # sessions a client had to start inside the measured window (its spares ran out)
        "sessions_started_while_measured": {
            n: head[n]["sessions_started_while_measured"] for n in (1, 2)
        },
        "seconds_per_round": seconds,
        "rounds": rounds,
        "turns_per_s": {n: [round(o["rps"], 1) for o in results[clients, n]] for n in (1, 2)},
        "p99_ms": {n: round(head[n]["p99_ms"], 1) for n in (1, 2)},
        "load_process_cpu_share": {n: round(head[n]["load_cpu_share"], 3) for n in (1, 2)},
        # server CPU (nodes, supervisor, nats-server) per turn beyond its idle use (heartbeats,
        # lease renewals): equal costs mean the ratio on an otherwise idle machine is bounded
        # by the cores, not by the nodes' sharing of the store
        "server_cpu_ms_per_turn": {n: round(head[n]["cpu_ms_per_turn"], 2) for n in (1, 2)},
        # the same, per process of the best round: a node forwarding turns to another, or
        # spending more per turn than the 1-node server's node, shows here
        "server_cpu_ms_per_turn_by_process": {
            n: head[n]["cpu_ms_per_turn_by_process"] for n in (1, 2)
        },
        # cores the server kept busy in its best round: under about 1.9 for the 2-node
        # server on a quiet 2-core machine means the load left it without work at times
        "server_cores_used": {n: head[n]["server_cores_used"] for n in (1, 2)},
        "server_idle_cpu_share": {
            n: round(sum(sum(i.values()) for i in idle[n]), 3) for n in (1, 2)
        },
        "sessions_per_node_2": spread,
        # each node's counters over all rounds: forwarded turns (0 when every session is on
        # the node its connection reached), SQLite write-lock waits, commits and batches
        "node_counters": counters,
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "usable_cores": len(os.sched_getaffinity(0)),
        "pinned": pinned,  # --pin with --pair: each node of the pair's core
        "nodes_pin": pin,  # --pin: the 2-node server ran with nodes_pin
    }
    if len(counts) > 1 or pair:
        # informational: each kind of server's best round at each client count
        names = {1: "1 node", 2: "2 nodes", 0: "pair of 1-node servers"}
        extra["sweep"] = {
            c: {
                names[n]: {
                    "turns_per_s": round(best[c, n]["rps"], 1),
                    "cpu_ms_per_turn": round(best[c, n]["cpu_ms_per_turn"], 2),
                    "cpu_ms_per_turn_by_process": best[c, n]["cpu_ms_per_turn_by_process"],
                    "server_cores_used": best[c, n]["server_cores_used"],
                    "load_process_cpu_share": round(best[c, n]["load_cpu_share"], 3),
                }
                for n in kinds
            }
            | {"ratio_2_to_1": round(best[c, 2]["rps"] / max(best[c, 1]["rps"], 1e-9), 2)}
            for c in counts
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
    parser.add_argument(
        "--clients-sweep", default="",
        help="more client counts, comma-separated (informational; the figure is at --clients)",
    )  # fmt: skip
    parser.add_argument(
        "--pair", action="store_true",
        help="also two independent serve --nodes 1 servers, half the clients each (informational)",
    )  # fmt: skip
    parser.add_argument(
        "--pin", action="store_true",
        help="each node of the 2-node server (and of --pair) on a core of its own (informational)",
    )  # fmt: skip
    parser.add_argument("--wait-go", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--load", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--key", default="", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=5.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        loop_name()  # uvloop for the load process when installed: it must cost little CPU
        out = asyncio.run(
            load(
                args.load,
                args.key,
                args.clients,
                args.seconds,
                1.0,
                args.turns_per_session,
                args.wait_go,
            )
        )
        print(json.dumps(out))
        return 0
    t0 = time.perf_counter()
    sweep = tuple(int(c) for c in args.clients_sweep.split(",") if c.strip())
    figs, extra = figures(
        args.quick,
        args.clients,
        args.postgres,
        args.turns_per_session,
        sweep,
        args.pair,
        args.pin,
    )
    extra |= {**meta("asyncio (serve)"), "quick": args.quick}
    extra["seconds"] = round(time.perf_counter() - t0, 1)
    report("Netsuke serve --nodes", figs, as_json=args.json, extra=extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
