"""The first start's admin key: issued only once the node listens, and the local way back.

Real ``netsuke serve`` subprocesses: a port held by someone else first (the start fails and
issues no key), then free (the key is printed); ``keys create --local`` writes a working admin
key straight into the store.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from .conftest import EXE, Server, start_server, stop_server


def _store_keys(db: Path) -> int:
    import sqlite3

    with sqlite3.connect(db) as conn:
        return int(conn.execute("select count(*) from api_keys").fetchone()[0])


@pytest.mark.timeout(120)
def test_a_start_that_cannot_bind_issues_no_key_and_the_next_prints_one(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        busy = subprocess.run(
            [EXE, "serve", "--port", str(port), "--database-url", f"sqlite:///{db}"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=tmp_path,
        )
    finally:
        holder.close()
    assert busy.returncode != 0
    assert "nsk_" not in busy.stdout + busy.stderr
    assert _store_keys(db) == 0  # nothing issued unseen
    proc = subprocess.Popen(
        [EXE, "serve", "--port", str(port), "--database-url", f"sqlite:///{db}", "--run-for", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=tmp_path,
    )
    out, _ = proc.communicate(timeout=60)
    lines = out.splitlines()
    assert f"running at http://127.0.0.1:{port}" in lines[0]
    assert lines[1].startswith("admin API key (shown once, keep it): nsk_")
    assert _store_keys(db) == 1


def test_keys_create_local_gives_the_data_owner_an_admin_key(tmp_path: Path) -> None:
    first = start_server(tmp_path)
    stop_server(first)  # its printed key is "lost"
    created = subprocess.run(
        [EXE, "keys", "create", "--local", "--role", "admin", "--database-url",
         f"sqlite:///{tmp_path / 'cli.db'}", "--json"],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
        env={**os.environ, "NETSUKE_API_KEY": ""},
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    issued = json.loads(created.stdout)
    assert issued["key"]["role"] == "admin" and issued["key"]["name"] == "local-admin"
    second = start_server_with_key(tmp_path, issued["secret"])
    try:
        listed = second.run("keys", "ls", "--json")
        assert listed.returncode == 0, listed.stderr
        assert {k["name"] for k in json.loads(listed.stdout)} == {"bootstrap-admin", "local-admin"}
        audit = second.run_process("agents", "ls")
        assert audit.returncode == 0
    finally:
        stop_server(second)


def test_keys_create_local_finds_the_store_like_serve_and_refuses_bad_roles(
    tmp_path: Path,
) -> None:
    (tmp_path / "netsuke.toml").write_text(f'database_url = "sqlite:///{tmp_path / "t.db"}"\n')
    env = {**os.environ, "NETSUKE_API_KEY": ""}
    env.pop("NETSUKE_DATABASE_URL", None)
    ok = subprocess.run(
        [EXE, "keys", "create", "--local", "--role", "operator", "--name", "ops"],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[0] == f"key {ok.stdout.split()[1]} (operator) for ops"
    assert ok.stdout.splitlines()[1].startswith("nsk_")
    assert _store_keys(tmp_path / "t.db") == 1
    bad = subprocess.run(
        [EXE, "keys", "create", "--local", "--role", "root"],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.startswith("netsuke: error: ") and "role" in bad.stderr
    assert _store_keys(tmp_path / "t.db") == 1


def start_server_with_key(tmp: Path, key: str) -> Server:
    """A server on the same store, which prints no key (it has some): use ``key``."""
    import re
    import time

    proc = subprocess.Popen(
        [EXE, "serve", "--port", "0", "--database-url", f"sqlite:///{tmp / 'cli.db'}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=tmp,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if m := re.search(r"running at (http://\S+)", line):
            assert "nsk_" not in line
            return Server(m.group(1), key, proc)
        if not line:
            break
    proc.kill()
    proc.wait()
    pytest.fail("netsuke serve did not print its URL")
