"""``netsuke serve --cluster`` and ``netsuke cluster status`` through the real CLI executable:
a node joins (and shows in the status with its lease and process count, then leaves on
SIGTERM); a bad URL, an unreachable server, a duplicate live node name and a bad node name
each give one line and a non-zero exit."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from netsuke.cluster import join_cluster
from netsuke.manager.testing import NatsServer, find_nats_server, free_port
from netsuke.store import upgrade

from .helpers import FAST, prefix

pytestmark = pytest.mark.timeout(180)

EXE = str(Path(sys.executable).parent / "netsuke")


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NETSUKE_")}
    return {**clean, "NETSUKE_BOOTSTRAP_ADMIN": "false", **extra}


def run(args: list[str], e: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EXE, *args], capture_output=True, text=True, timeout=120, env=e, cwd=cwd, check=False
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.startswith("netsuke: error:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def spawn(
    args: list[str], e: dict[str, str], cwd: Path, *, stderr: bool = False
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [EXE, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if stderr else subprocess.DEVNULL,
        text=True,
        env=e,
        cwd=cwd,
    )


async def arun(args: list[str], e: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(run, args, e, cwd)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:4222", "the scheme must be one of"),
        ("nats://", "no host"),
        ("nats://127.0.0.1:99999", "not a NATS URL"),
        ("nats://user:hunter2@127.0.0.1:4222/path", "no path or query"),
    ],
)
def test_a_bad_cluster_url_is_one_line_and_exit_2(tmp_path: Path, url: str, expected: str) -> None:
    db = f"sqlite:///{tmp_path / 'n.db'}"
    line = one_error_line(
        run(
            ["serve", "--cluster", url, "--node", "a", "--database-url", db],
            env(tmp_path),
            tmp_path,
        )
    )
    assert expected in line
    assert "hunter2" not in line


def test_a_cluster_node_name_with_a_dot_is_refused(tmp_path: Path) -> None:
    line = one_error_line(
        run(
            ["serve", "--cluster", "nats://127.0.0.1:4222", "--node", "a.b"],
            env(tmp_path, NETSUKE_DATABASE_URL=f"sqlite:///{tmp_path / 'n.db'}"),
            tmp_path,
        )
    )
    assert "cluster node name" in line


def test_an_unreachable_nats_server_is_one_line_and_exit_2(tmp_path: Path) -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    line = one_error_line(
        run(
            ["serve", "--cluster", url, "--node", "a", "--port", "0"],
            env(tmp_path, NETSUKE_DATABASE_URL=f"sqlite:///{tmp_path / 'n.db'}"),
            tmp_path,
        )
    )
    assert f"cannot connect to NATS at {url}" in line


async def test_serve_joins_shows_in_status_refuses_a_duplicate_and_leaves_on_sigterm(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'cluster.db'}"
    await upgrade(db)
    p = prefix()
    e = env(tmp_path, NETSUKE_DATABASE_URL=db, NETSUKE_CLUSTER_PREFIX=p)
    async with join_cluster(
        nats_server.url, "alpha", db, lease=30.0, transport_options={**FAST, "prefix": p}
    ) as alpha:
        # a live node holds "alpha": a second one is refused, in one line
        line = one_error_line(
            await arun(
                ["serve", "--cluster", nats_server.url, "--node", "alpha", "--port", "0"],
                e,
                tmp_path,
            )
        )
        assert "node name 'alpha' is held by a live node" in line
        # "beta" joins (environment settings: NETSUKE_CLUSTER)
        proc = spawn(
            ["serve", "--node", "beta", "--port", "0"],
            {**e, "NETSUKE_CLUSTER": nats_server.url},
            tmp_path,
        )
        try:
            assert proc.stdout is not None
            first = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 120)
            assert "node 'beta#" in first, first
            beta_id = first.split("node '")[1].split("'")[0]
            while True:  # the process count is stored at the first renewal
                status = await arun(["cluster", "status", "--json"], e, tmp_path)
                assert status.returncode == 0, status.stderr
                nodes: dict[str, Any] = {n["node"]: n for n in json.loads(status.stdout)["nodes"]}
                assert set(nodes) == {alpha.node_id, beta_id}
                assert nodes[beta_id]["live"] is True and nodes[beta_id]["state"] == "live"
                assert 0 < nodes[beta_id]["expires_in_s"] <= nodes[beta_id]["lease_s"]
                if nodes[beta_id]["processes"] > 0:
                    break
                await asyncio.sleep(0.2)
            # the nodes see each other over NATS too
            await _until(lambda: beta_id in alpha.transport.nodes())
            text = await arun(["cluster", "status"], e, tmp_path)
            assert text.returncode == 0
            assert text.stdout.splitlines()[0].split()[:3] == ["NODE", "INCARNATION", "STATE"]
            assert any(row.startswith("beta ") for row in text.stdout.splitlines())
            os.kill(proc.pid, signal.SIGTERM)
            assert await asyncio.to_thread(proc.wait, 60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
            if proc.stdout is not None:
                proc.stdout.close()
        status = await arun(["cluster", "status", "--json", "--all"], e, tmp_path)
        nodes = {n["node"]: n for n in json.loads(status.stdout)["nodes"]}
        assert nodes[beta_id]["state"] == "left" and nodes[beta_id]["live"] is False
        assert nodes[alpha.node_id]["live"] is True


async def _until(check: Any, timeout: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.05)


def test_status_of_a_database_without_schema_is_one_line(tmp_path: Path) -> None:
    line = one_error_line(
        run(
            ["cluster", "status", "--url", f"sqlite:///{tmp_path / 'empty.db'}"],
            env(tmp_path),
            tmp_path,
        )
    )
    assert "netsuke db upgrade" in line


async def test_a_served_member_that_cannot_renew_fences_itself_and_exits_1(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    path = tmp_path / "fence.db"
    db = f"sqlite+aiosqlite:///{path}"
    await upgrade(db)
    e = env(tmp_path, NETSUKE_DATABASE_URL=db, NETSUKE_CLUSTER_PREFIX=prefix())
    args = ["serve", "--cluster", nats_server.url, "--node", "gamma", "--port", "0"]
    proc = spawn([*args, "--cluster-lease", "2"], e, tmp_path, stderr=True)
    locker = sqlite3.connect(path, isolation_level=None, timeout=60)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        first = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 120)
        assert "node 'gamma#" in first
        locker.execute("BEGIN EXCLUSIVE")  # renewals now fail for real
        err = proc.stderr

        def until_fenced() -> str:
            while line := err.readline():
                if "cluster_node_fenced" in line:
                    return line
            return ""

        assert "renewal_overdue" in await asyncio.wait_for(asyncio.to_thread(until_fenced), 120)
        locker.execute("ROLLBACK")
        rest = await asyncio.to_thread(err.read)
        assert await asyncio.to_thread(proc.wait, 120) == 1
        [line] = [x for x in rest.splitlines() if x.startswith("netsuke: error:")]
        assert "is fenced (renewal_overdue)" in line
    finally:
        if locker.in_transaction:
            locker.execute("ROLLBACK")
        locker.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        for f in (proc.stdout, proc.stderr):
            if f is not None:
                f.close()


def test_credentials_reach_nats_and_a_wrong_password_is_one_line(tmp_path: Path) -> None:
    binary = find_nats_server()
    if binary is None:
        pytest.skip("nats-server not found")
    port = free_port()
    log = tmp_path / "auth-nats.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [binary, "-a", "127.0.0.1", "-p", str(port), "--user", "node", "--pass", "s3cret-pw"],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    try:
        deadline = time.monotonic() + 30
        while b"Server is ready" not in log.read_bytes():
            assert server.poll() is None and time.monotonic() < deadline, "nats-server failed"
            time.sleep(0.05)
        url = f"nats://127.0.0.1:{port}"
        base = env(tmp_path, NETSUKE_DATABASE_URL=f"sqlite:///{tmp_path / 'auth.db'}")
        args = ["serve", "--cluster", url, "--node", "authed", "--port", "0"]
        bad = run(
            args,
            {**base, "NETSUKE_CLUSTER_USER": "node", "NETSUKE_CLUSTER_PASSWORD": "no"},
            tmp_path,
        )
        line = one_error_line(bad)
        assert f"cannot connect to NATS at {url}" in line
        assert "s3cret-pw" not in bad.stderr + bad.stdout
        good = run(
            [*args, "--run-for", "1"],
            {**base, "NETSUKE_CLUSTER_USER": "node", "NETSUKE_CLUSTER_PASSWORD": "s3cret-pw"},
            tmp_path,
        )
        assert good.returncode == 0, good.stderr
        assert "node 'authed#" in good.stdout
        assert "s3cret-pw" not in good.stderr + good.stdout
    finally:
        server.terminate()
        server.wait(30)


def test_a_missing_credentials_file_or_half_a_tls_pair_is_one_line(tmp_path: Path) -> None:
    base = env(tmp_path, NETSUKE_DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}")
    args = ["serve", "--cluster", "nats://127.0.0.1:4222", "--node", "a"]
    line = one_error_line(
        run([*args, "--cluster-creds", str(tmp_path / "none.creds")], base, tmp_path)
    )
    assert "credentials file" in line
    cert = tmp_path / "cert.pem"
    cert.write_text("not a certificate")
    line = one_error_line(run([*args, "--cluster-tls-cert", str(cert)], base, tmp_path))
    assert "both a certificate and its key" in line
